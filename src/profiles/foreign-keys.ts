import type pg from 'pg';
import { queryRows } from '../core/execute.js';
import { ident, joinSql, literal, qualified, SqlFragment, type Statement } from '../core/sql.js';
import { templateStatements } from '../core/templates.js';
import type { ForeignKeyState, TableRef, UsageTable, UserForeignKey } from './types.js';

/** Starts the comment of the check constraint that holds a replaced foreign key's name. */
export const placeholderPrefix = 'insights-privacy placeholder for foreign key ';

const actionKeywords: Record<string, string> = {
  a: 'NO ACTION',
  r: 'RESTRICT',
  c: 'CASCADE',
  n: 'SET NULL',
  d: 'SET DEFAULT',
};

interface ForeignKeyRow {
  name: string;
  validated: boolean;
  on_update: string;
  on_delete: string;
  match_type: string;
  deferrable: boolean;
  deferred: boolean;
  columns: string[];
  referenced_columns: string[];
}

/** The part of a foreign key that the placeholder's comment records. */
interface RecordedDefinition {
  columns: string[];
  referencedColumns: string[];
  onUpdate: string;
  onDelete: string;
  matchType: string;
  deferrable: boolean;
  deferred: boolean;
}

/**
 * Reads the state of the foreign key from `table.column` to `users`: the key
 * itself when present, and the tool's placeholder under `defaultName`.
 */
export async function readForeignKeyState(
  client: pg.ClientBase,
  table: UsageTable,
  column: string,
  users: TableRef,
  defaultName: string,
): Promise<ForeignKeyState> {
  const rows = await queryRows<ForeignKeyRow>(client, 'queries/foreign-keys-to.sql', [table.oid, users.oid, column]);
  const foreignKey = rows.length > 0 ? fromRow(table, users, rows[0]) : null;

  const name = foreignKey?.name ?? defaultName;
  const [constraint] = await queryRows<{ type: string; comment: string | null }>(client, 'queries/constraint.sql', [table.oid, name]);
  const placeholder =
    constraint && constraint.type === 'c' && constraint.comment?.startsWith(placeholderPrefix)
      ? parsePlaceholder(table, users, name, constraint.comment.slice(placeholderPrefix.length))
      : null;

  return { table, name, foreignKey, placeholder };
}

function fromRow(table: UsageTable, users: TableRef, row: ForeignKeyRow): UserForeignKey {
  return {
    table,
    name: row.name,
    columns: row.columns,
    referencedTable: users,
    referencedColumns: row.referenced_columns,
    onUpdate: row.on_update,
    onDelete: row.on_delete,
    matchType: row.match_type,
    deferrable: row.deferrable,
    deferred: row.deferred,
    validated: row.validated,
  };
}

function parsePlaceholder(table: UsageTable, users: TableRef, name: string, json: string): UserForeignKey | null {
  let recorded: RecordedDefinition;
  try {
    recorded = JSON.parse(json) as RecordedDefinition;
  } catch {
    return null;
  }
  const valid =
    Array.isArray(recorded.columns) &&
    Array.isArray(recorded.referencedColumns) &&
    recorded.columns.every((column) => typeof column === 'string') &&
    recorded.referencedColumns.every((column) => typeof column === 'string') &&
    recorded.onUpdate in actionKeywords &&
    recorded.onDelete in actionKeywords &&
    ['s', 'f', 'p'].includes(recorded.matchType);
  if (!valid) return null;

  return {
    table,
    name,
    columns: recorded.columns,
    referencedTable: users,
    referencedColumns: recorded.referencedColumns,
    onUpdate: recorded.onUpdate,
    onDelete: recorded.onDelete,
    matchType: recorded.matchType,
    deferrable: Boolean(recorded.deferrable),
    deferred: Boolean(recorded.deferred),
    validated: false,
  };
}

/** Statements that swap the foreign key for a placeholder check constraint under the same name. */
export function replaceForeignKey(foreignKey: UserForeignKey): Statement[] {
  const recorded: RecordedDefinition = {
    columns: [...foreignKey.columns],
    referencedColumns: [...foreignKey.referencedColumns],
    onUpdate: foreignKey.onUpdate,
    onDelete: foreignKey.onDelete,
    matchType: foreignKey.matchType,
    deferrable: foreignKey.deferrable,
    deferred: foreignKey.deferred,
  };
  // The comment is the prefix and one JSON object; the referenced table is
  // recorded for people, while restoring uses the users table found by detection.
  const comment = `${placeholderPrefix}${JSON.stringify({
    ...recorded,
    referencedTable: `${foreignKey.referencedTable.schema}.${foreignKey.referencedTable.name}`,
    restoredBy: 'insights-privacy apply --mode off',
  })}`;

  return templateStatements('replace-foreign-key.sql', {
    table: qualified(foreignKey.table.schema, foreignKey.table.name),
    constraint: ident(foreignKey.name),
    column: ident(foreignKey.columns[0]),
    comment: literal(comment),
  });
}

/** Statements that put a recorded foreign key back, NOT VALID, in place of the placeholder. */
export function restoreForeignKey(definition: UserForeignKey): Statement[] {
  const match = definition.matchType === 'f' ? 'MATCH FULL ' : '';
  const deferral = definition.deferrable ? ` DEFERRABLE INITIALLY ${definition.deferred ? 'DEFERRED' : 'IMMEDIATE'}` : '';
  const actions = `${match}ON UPDATE ${actionKeywords[definition.onUpdate]} ON DELETE ${actionKeywords[definition.onDelete]}${deferral}`;

  return templateStatements('restore-foreign-key.sql', {
    table: qualified(definition.table.schema, definition.table.name),
    constraint: ident(definition.name),
    columns: joinSql(definition.columns.map(ident)),
    referencedTable: qualified(definition.referencedTable.schema, definition.referencedTable.name),
    referencedColumns: joinSql(definition.referencedColumns.map(ident)),
    actions: SqlFragment.trusted(actions),
  });
}

/** Builds the statement that validates a restored foreign key without blocking writers. */
export function validateForeignKey(definition: UserForeignKey): Statement[] {
  return templateStatements('validate-foreign-key.sql', {
    table: qualified(definition.table.schema, definition.table.name),
    constraint: ident(definition.name),
  });
}
