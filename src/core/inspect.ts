import type pg from 'pg';
import { queryRows } from './execute.js';
import { ident, qualified } from './sql.js';
import type { Detection, EnforcedMode, Scope, UsageTable } from '../profiles/types.js';
import { triggerName } from './enforcement.js';
import type { CryptoLocation, HmacImplementation } from './enforcement.js';

/** The enforcement recorded in the state table by the last apply. */
export interface RecordedState {
  readonly mode: EnforcedMode;
  readonly profile: string;
  readonly scope: Scope | null;
  readonly options: Record<string, unknown>;
  readonly toolVersion: string;
  readonly appliedAt: Date;
  readonly appliedBy: string;
  /**
   * Each usage table as it was when the state was recorded, by
   * "schema.table"; empty for a state that an earlier version recorded.
   */
  readonly tables: Record<string, RecordedTable>;
  /** Whether the row still matches its digest; null when it has none (an earlier version recorded it). */
  readonly digestMatches: boolean | null;
}

/** A usage table's identity when the state was recorded. */
export interface RecordedTable {
  readonly oid: number;
  /** Stored columns in table order, each as "name type". */
  readonly columns: string[];
}

/** A key as status shows it: never the key itself. */
export interface KeyInfo {
  readonly id: number;
  readonly fingerprint: string;
  readonly createdAt: Date;
  /** The rotation policy that made the key: `none` or a period length. */
  readonly policy: string;
  /** Start of the key's period (inclusive); null means open. */
  readonly validFrom: Date | null;
  /** End of the key's period (exclusive); null means open. */
  readonly validUntil: Date | null;
}

/** A key period whose key forget-keys deleted. */
export interface ForgottenKey {
  readonly fingerprint: string;
  readonly policy: string;
  readonly validFrom: Date | null;
  readonly validUntil: Date;
  readonly createdAt: Date;
  readonly forgottenAt: Date;
  readonly forgottenBy: string;
}

/** The tool's trigger on one table as the catalog has it. */
export interface InstalledTrigger {
  /** pg_trigger.tgenabled: A = always, O = origin, R = replica only, D = disabled. */
  readonly enabled: string;
  readonly type: number;
  readonly updateColumns: string[];
  readonly functionSchema: string;
  readonly functionName: string;
  readonly definition: string;
}

/** Another user-defined trigger on a usage table, which fires before or after the tool's trigger. */
export interface OtherTrigger {
  readonly name: string;
  /** pg_trigger.tgenabled, as for InstalledTrigger. */
  readonly enabled: string;
  readonly type: number;
  readonly functionSchema: string;
  readonly functionName: string;
  /** MD5 of the trigger definition and its function's source; changes when either is replaced. */
  readonly digest: string;
}

/** A rewrite rule on a usage table. */
export interface TableRule {
  readonly name: string;
  /** pg_rewrite.ev_type: 1 SELECT, 2 UPDATE, 3 INSERT, 4 DELETE. */
  readonly event: string;
  readonly enabled: string;
}

/** Catalog facts about a usage table besides the tool's trigger. */
export interface TableCatalog {
  /** Stored columns in table order, each as "name type". */
  readonly columns: string[];
  readonly otherTriggers: OtherTrigger[];
  readonly rules: TableRule[];
}

/** One of the tool's functions as the catalog has it. */
export interface InstalledFunction {
  readonly name: string;
  readonly body: string;
  readonly securityDefiner: boolean;
  readonly config: string;
  readonly owner: string;
  readonly publicExecute: boolean;
}

/** Row counts of one table's user id column. */
export interface RowCounts {
  readonly total: number;
  readonly identifiable: number;
  readonly pseudonymized: number;
}

/** A role that can bypass or probe enforcement on a table, and why. */
export interface RoleExposure {
  readonly role: string;
  readonly reason: string;
  readonly canBypass: boolean;
}

/** Catalog facts about the tool's objects in one database. */
export interface Installation {
  readonly schemaPresent: boolean;
  readonly state: RecordedState | null;
  readonly keys: KeyInfo[];
  readonly forgottenKeys: ForgottenKey[];
  readonly crypto: CryptoLocation | null;
  readonly pgcryptoAvailable: boolean;
  /** The HMAC implementation recorded with anonymize; null unless the recorded mode is anonymize. */
  readonly hmac: HmacImplementation | null;
  /** The generated padded-key columns present in the keys table, which the core implementation reads. */
  readonly keyPadColumns: string[];
  readonly functions: Map<string, InstalledFunction>;
  readonly triggers: Map<UsageTable, InstalledTrigger | null>;
  readonly tableCatalogs: Map<UsageTable, TableCatalog>;
}

async function relationExists(client: pg.ClientBase, schema: string, name: string): Promise<boolean> {
  const [row] = await queryRows<{ present: boolean }>(client, 'queries/relation-exists.sql', [schema, name]);
  return row.present;
}

/** Finds pgcrypto: its schema when installed, else whether it can be created (in the tool's schema). */
export async function locateCrypto(client: pg.ClientBase, schema: string): Promise<{ crypto: CryptoLocation | null; available: boolean }> {
  const [row] = await queryRows<{ installed_schema: string | null; available: boolean }>(client, 'queries/extension.sql', ['pgcrypto']);
  if (row.installed_schema) return { crypto: { schema: row.installed_schema, create: false }, available: true };
  return { crypto: row.available ? { schema, create: true } : null, available: row.available };
}

/**
 * Returns the HMAC implementation recorded with anonymize. State recorded
 * before the `hmac` option existed used pgcrypto, the only implementation then.
 */
export function recordedHmac(state: RecordedState | null): HmacImplementation | null {
  if (state?.mode !== 'anonymize') return null;
  return state.options.hmac === 'core' ? 'core' : 'pgcrypto';
}

/** Reads the recorded enforcement; null when the schema or its state table is missing or empty. */
export async function readState(client: pg.ClientBase, schema: string): Promise<RecordedState | null> {
  if (!(await relationExists(client, schema, 'state'))) return null;
  // A state table that an earlier version made gets its tables and digest
  // columns at the next apply. A missing state_digest() is drift, which
  // status reports with the other functions.
  const [digestColumn] = await queryRows<{ present: boolean }>(client, 'queries/column-exists.sql', [schema, 'state', 'digest']);
  const [digestFunction] = await queryRows<{ present: boolean }>(client, 'queries/function-exists.sql', [schema, 'state_digest']);
  const query = digestColumn.present && digestFunction.present ? 'queries/state.sql' : 'queries/state-before-digest.sql';
  const [row] = await queryRows<{
    mode: EnforcedMode;
    profile: string;
    scope: Scope | null;
    options: Record<string, unknown>;
    tool_version: string;
    applied_at: Date;
    applied_by: string;
    tables: Record<string, RecordedTable>;
    digest_matches: boolean | null;
  }>(client, query, [], { schema: ident(schema) });
  if (!row) return null;
  return {
    mode: row.mode,
    profile: row.profile,
    scope: row.scope,
    options: row.options,
    toolVersion: row.tool_version,
    appliedAt: row.applied_at,
    appliedBy: row.applied_by,
    tables: row.tables,
    digestMatches: row.digest_matches,
  };
}

async function readKeys(client: pg.ClientBase, schema: string): Promise<KeyInfo[]> {
  if (!(await relationExists(client, schema, 'keys'))) return [];
  // A key table that an earlier version made gets its period columns at the next apply.
  const [periods] = await queryRows<{ present: boolean }>(client, 'queries/column-exists.sql', [schema, 'keys', 'valid_from']);
  const query = periods.present ? 'queries/keys.sql' : 'queries/keys-before-rotation.sql';
  const rows = await queryRows<{ id: number; fingerprint: string; created_at: Date; policy: string; valid_from: Date | null; valid_until: Date | null }>(client, query, [], {
    schema: ident(schema),
  });
  return rows.map((row) => ({
    id: row.id,
    fingerprint: row.fingerprint,
    createdAt: row.created_at,
    policy: row.policy,
    validFrom: row.valid_from,
    validUntil: row.valid_until,
  }));
}

async function readForgottenKeys(client: pg.ClientBase, schema: string): Promise<ForgottenKey[]> {
  if (!(await relationExists(client, schema, 'forgotten_keys'))) return [];
  const rows = await queryRows<{
    fingerprint: string;
    policy: string;
    valid_from: Date | null;
    valid_until: Date;
    created_at: Date;
    forgotten_at: Date;
    forgotten_by: string;
  }>(client, 'queries/forgotten-keys.sql', [], { schema: ident(schema) });
  return rows.map((row) => ({
    fingerprint: row.fingerprint,
    policy: row.policy,
    validFrom: row.valid_from,
    validUntil: row.valid_until,
    createdAt: row.created_at,
    forgottenAt: row.forgotten_at,
    forgottenBy: row.forgotten_by,
  }));
}

async function readKeyPadColumns(client: pg.ClientBase, schema: string): Promise<string[]> {
  const rows = await queryRows<{ name: string }>(client, 'queries/key-pad-columns.sql', [schema]);
  return rows.map((row) => row.name);
}

async function readFunctions(client: pg.ClientBase, schema: string): Promise<Map<string, InstalledFunction>> {
  const rows = await queryRows<{
    name: string;
    body: string;
    security_definer: boolean;
    config: string;
    owner: string;
    public_execute: boolean;
  }>(client, 'queries/functions.sql', [schema]);
  return new Map(
    rows.map((row) => [
      row.name,
      { name: row.name, body: row.body, securityDefiner: row.security_definer, config: row.config, owner: row.owner, publicExecute: row.public_execute },
    ]),
  );
}

async function readTrigger(client: pg.ClientBase, table: UsageTable): Promise<InstalledTrigger | null> {
  const [row] = await queryRows<{
    enabled: string;
    type: number;
    update_columns: string[];
    function_schema: string;
    function_name: string;
    definition: string;
  }>(client, 'queries/triggers.sql', [table.oid, triggerName]);
  if (!row) return null;
  return {
    enabled: row.enabled,
    type: row.type,
    updateColumns: row.update_columns,
    functionSchema: row.function_schema,
    functionName: row.function_name,
    definition: row.definition,
  };
}

async function readTableCatalog(client: pg.ClientBase, table: UsageTable): Promise<TableCatalog> {
  const columns = await queryRows<{ name: string; type: string }>(client, 'queries/table-columns.sql', [table.oid]);
  const triggers = await queryRows<{ name: string; enabled: string; type: number; function_schema: string; function_name: string; digest: string }>(
    client,
    'queries/other-triggers.sql',
    [table.oid, triggerName],
  );
  const rules = await queryRows<TableRule>(client, 'queries/rules.sql', [table.oid]);
  return {
    columns: columns.map((column) => `${column.name} ${column.type}`),
    otherTriggers: triggers.map((row) => ({
      name: row.name,
      enabled: row.enabled,
      type: row.type,
      functionSchema: row.function_schema,
      functionName: row.function_name,
      digest: row.digest,
    })),
    rules,
  };
}

/** Reads the tool's schema, state, keys, functions and triggers from the catalog. */
export async function inspectInstallation(client: pg.ClientBase, detection: Detection, schema: string): Promise<Installation> {
  const [{ present }] = await queryRows<{ present: boolean }>(client, 'queries/schema-exists.sql', [schema]);
  const { crypto, available } = await locateCrypto(client, schema);
  const triggers = new Map<UsageTable, InstalledTrigger | null>();
  const tableCatalogs = new Map<UsageTable, TableCatalog>();
  for (const table of detection.tables) {
    triggers.set(table, await readTrigger(client, table));
    tableCatalogs.set(table, await readTableCatalog(client, table));
  }

  const state = present ? await readState(client, schema) : null;

  return {
    schemaPresent: present,
    state,
    keys: present ? await readKeys(client, schema) : [],
    forgottenKeys: present ? await readForgottenKeys(client, schema) : [],
    crypto,
    pgcryptoAvailable: available,
    hmac: recordedHmac(state),
    keyPadColumns: present ? await readKeyPadColumns(client, schema) : [],
    functions: present ? await readFunctions(client, schema) : new Map(),
    triggers,
    tableCatalogs,
  };
}

/** Returns the name of the connected database. */
export async function currentDatabase(client: pg.ClientBase): Promise<string> {
  const [row] = await queryRows<{ database: string }>(client, 'queries/current-database.sql');
  return row.database;
}

/** Counts total, identifiable and pseudonymized rows of a table; a full scan of the table. */
export async function countRows(client: pg.ClientBase, detection: Detection, table: UsageTable): Promise<RowCounts> {
  const [row] = await queryRows<{ total: string; identifiable: string; pseudonymized: string }>(client, 'queries/count-rows.sql', [], {
    table: qualified(table.schema, table.name),
    users: qualified(detection.users.schema, detection.users.name),
    column: ident(table.userColumns[0]),
  });
  return { total: Number(row.total), identifiable: Number(row.identifiable), pseudonymized: Number(row.pseudonymized) };
}

/** Lists the roles that can bypass or probe enforcement on a table. */
export async function roleExposure(client: pg.ClientBase, table: UsageTable): Promise<RoleExposure[]> {
  const rows = await queryRows<{ role: string; reason: string; can_bypass: boolean }>(client, 'queries/bypass-roles.sql', [table.oid]);
  return rows.map((row) => ({ role: row.role, reason: row.reason, canBypass: row.can_bypass }));
}
