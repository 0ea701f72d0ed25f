import type pg from 'pg';
import type { BackfillWalk } from '../core/backfill.js';
import type { SqlFragment, Statement } from '../core/sql.js';
import type { LockPolicy } from '../core/transaction.js';

/** A table as the tool addresses it. */
export interface TableRef {
  readonly schema: string;
  readonly name: string;
  readonly oid: number;
  readonly owner: string;
}

/** Whether a table holds rolled-up insights or the raw rows they are computed from. */
export type TableRole = 'rollup' | 'raw';

/** A table of the application that holds user identifiers. */
export interface UsageTable extends TableRef {
  readonly role: TableRole;
  /** Columns that hold user ids; each is replaced by its pseudonym under anonymize. */
  readonly userColumns: readonly string[];
  /**
   * The timestamptz column whose value selects the key of a row's pseudonym.
   * Rows that the application's rollup combines must fall in the same key
   * period, so it is the time the rollup buckets a row by (or, for a row
   * that is upserted again later, a time that never changes).
   */
  readonly timeColumn: string;
  /** All stored columns, in table order. */
  readonly columns: readonly string[];
}

/** Anonymize scope: `source` protects every usage table, `rollup` only the rolled-up ones. */
export type Scope = 'source' | 'rollup';

/** Enforcement mode as the state table records it; `off` is recorded by removing the state. */
export type EnforcedMode = 'anonymize' | 'disable';

/** A foreign key from a protected column to the users table, as the catalog describes it. */
export interface UserForeignKey {
  readonly table: UsageTable;
  readonly name: string;
  readonly columns: readonly string[];
  readonly referencedTable: TableRef;
  readonly referencedColumns: readonly string[];
  /** pg_constraint codes: a = NO ACTION, r = RESTRICT, c = CASCADE, n = SET NULL, d = SET DEFAULT. */
  readonly onUpdate: string;
  readonly onDelete: string;
  readonly matchType: string;
  readonly deferrable: boolean;
  readonly deferred: boolean;
  readonly validated: boolean;
}

/** Result of a profile's detection in one database. */
export interface Detection {
  readonly profile: string;
  /** For people, for example "Coder (2026 column set)". */
  readonly description: string;
  readonly tables: readonly UsageTable[];
  /** The table whose ids are real user ids, to count identifiable rows. */
  readonly users: TableRef;
  /** The foreign key that pseudonyms would violate, by table, with its current catalog state. */
  readonly userForeignKeys: readonly ForeignKeyState[];
}

/** The state of one foreign key that anonymize must replace. */
export interface ForeignKeyState {
  readonly table: UsageTable;
  /** The name the application gave the constraint. */
  readonly name: string;
  /** The foreign key when it exists in the catalog. */
  readonly foreignKey: UserForeignKey | null;
  /** The original definition when the tool's placeholder holds the name. */
  readonly placeholder: UserForeignKey | null;
}

/** Variables every cut-over template receives. */
export interface CutoverContext {
  readonly schema: SqlFragment;
  readonly scope: Scope;
  readonly tables: readonly UsageTable[];
  /**
   * Set when `convertAhead` converted the raw tables' rows before the
   * transaction and their triggers have kept them converted since, so that
   * the cut-over converts only rollup rows.
   */
  readonly rawConverted?: boolean;
}

/** Settings of a profile's conversion ahead of the cut-over transaction. */
export interface AheadContext {
  /** The tool's private schema, where pseudonym() and is_pseudonym() live. */
  readonly schema: string;
  readonly scope: Scope;
  /** Rows per batch, each batch in its own transaction. */
  readonly batchSize: number;
  readonly lock: LockPolicy;
}

/** Rows that `convertAhead` converted. */
export interface AheadConversion {
  /** Raw agent stats and app sessions pseudonymized or merged into their pseudonymized twin. */
  readonly rawRows: number;
  /** Rollup rows replaced by their pseudonymized copy. */
  readonly rollupRows: number;
}

/**
 * The conversion statements of a cut-over. Those that store pseudonyms where a
 * foreign key to users exists must run after the key is replaced; the plan
 * runs them last, so that the lock on the users table that replacing the key
 * takes is held for as short a time as possible.
 */
export interface Cutover {
  readonly beforeForeignKeys: Statement[];
  readonly afterForeignKeys: Statement[];
}

/** The rules for one application's usage tables. */
export interface Profile {
  readonly name: string;
  /** Finds the application's usage tables; rejects a database that is not the application's. */
  detect(client: pg.ClientBase): Promise<Detection>;
  /**
   * Statements that convert the rows the application will still recompute or
   * upsert, run in the transaction that installs anonymize.
   */
  cutover(detection: Detection, context: CutoverContext): Cutover;
  /**
   * Converts, in batches that each commit on their own, the rows that the
   * cut-over would otherwise convert under its table locks. Runs after the
   * statements of `planConversionStart` have committed, so that every row
   * written meanwhile gets its pseudonym from a trigger, and before the
   * transaction that completes anonymize.
   */
  convertAhead(client: pg.ClientBase, detection: Detection, context: AheadContext): Promise<AheadConversion>;
  /**
   * Counts rows that would break the rollup under scope `rollup`: pseudonyms
   * in raw tables that the application still reads. Zero means the scope can start.
   */
  rollupScopeBlockers(client: pg.ClientBase, detection: Detection, schema: SqlFragment): Promise<number>;
  /** Facts a person deciding on a mode and scope must know, for status and docs. */
  notes(detection: Detection, mode: EnforcedMode | 'off', scope: Scope): string[];
  /**
   * Builds the walks that pseudonymize or purge the rows stored before
   * enforcement in `context.tables`, reading keys and columns from the
   * catalog. Child tables are followers of the walk of their parent.
   */
  prepareBackfill(client: pg.ClientBase, detection: Detection, context: BackfillContext): Promise<BackfillWalk[]>;
}

/** What a profile needs to build the walks of a backfill. */
export interface BackfillContext {
  /** The tool's private schema, where pseudonym() and is_pseudonym() live. */
  readonly schema: string;
  /** The tables the recorded mode and scope protect; no other table is changed. */
  readonly tables: readonly UsageTable[];
}
