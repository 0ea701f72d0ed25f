import type pg from 'pg';
import { ToolError } from '../core/errors.js';
import { queryRows } from '../core/execute.js';
import { ident, qualified, type SqlFragment } from '../core/sql.js';
import { readPrimaryKey, type BackfillWalk } from '../core/backfill.js';
import { agentStatsWalk, appStatsWalk, rollupWalk } from './coder-backfill.js';
import { convertAhead, cutoverStatements, rollupFrom, type CutoverTables } from './coder-cutover.js';
import { readForeignKeyState } from './foreign-keys.js';
import type { BackfillContext, Detection, EnforcedMode, Profile, Scope, TableRef, UsageTable } from './types.js';

const rollupTable = 'template_usage_stats';
const agentStatsTable = 'workspace_agent_stats';
const appStatsTable = 'workspace_app_stats';
const usersTable = 'users';

/**
 * The column whose timestamp selects each table's key. A rollup row and its
 * child rows take the bucket's start, which the raw rows of the bucket share
 * when key periods start at half-hour boundaries. An app session takes its
 * start because Coder upserts the session again with a later end, and the
 * upsert only finds the stored row under the same pseudonym.
 */
const timeColumns: Record<string, string> = {
  [rollupTable]: 'start_time',
  [agentStatsTable]: 'created_at',
  [appStatsTable]: 'session_started_at',
};
/** Child tables of the rollup are keyed by the parent's start_time, which their foreign key includes. */
const childTimeColumn = 'start_time';
const appStatsUserForeignKey = 'workspace_app_stats_user_id_fkey';

interface FoundTable {
  schema: string;
  name: string;
  oid: string;
  owner: string;
}

interface ColumnRow {
  name: string;
  type: string;
}

function toRef(found: FoundTable): TableRef {
  return { schema: found.schema, name: found.name, oid: Number(found.oid), owner: found.owner };
}

async function readColumns(client: pg.ClientBase, table: TableRef): Promise<ColumnRow[]> {
  return queryRows<ColumnRow>(client, 'queries/table-columns.sql', [table.oid]);
}

/**
 * Builds a usage table after checking that its user_id column is a uuid and
 * its time column a timestamptz, as in every Coder version.
 */
async function usageTable(client: pg.ClientBase, table: TableRef, role: UsageTable['role'], timeColumn: string): Promise<UsageTable> {
  const columns = await readColumns(client, table);
  const userId = columns.find((column) => column.name === 'user_id');
  if (!userId || userId.type !== 'uuid') {
    throw new ToolError('NOT_A_CODER_DATABASE', `Table ${table.schema}.${table.name} has no uuid column user_id, so it is not Coder's ${table.name}.`, {
      fix: 'Point --database-url at the database that coder server uses (its CODER_PG_CONNECTION_URL).',
    });
  }
  const time = columns.find((column) => column.name === timeColumn);
  if (!time || time.type !== 'timestamp with time zone') {
    throw new ToolError('NOT_A_CODER_DATABASE', `Table ${table.schema}.${table.name} has no timestamptz column ${timeColumn}, so it is not Coder's ${table.name}.`, {
      fix: 'Point --database-url at the database that coder server uses (its CODER_PG_CONNECTION_URL).',
    });
  }
  return { ...table, role, userColumns: ['user_id'], timeColumn, columns: columns.map((column) => column.name) };
}

function describeColumnSet(rollup: UsageTable | undefined, children: readonly UsageTable[]): string {
  if (!rollup) return 'Coder (without template_usage_stats)';
  if (rollup.columns.includes('vscode_mins')) return 'Coder (2025 column set)';
  if (children.length > 0 || rollup.columns.includes('session_usage_digest')) return 'Coder (2026 column set)';
  return 'Coder';
}

async function detect(client: pg.ClientBase): Promise<Detection> {
  const found = await queryRows<FoundTable>(client, 'queries/find-tables.sql', [[usersTable, rollupTable, agentStatsTable, appStatsTable]]);
  const byName = new Map(found.map((row) => [row.name, toRef(row)]));

  const missing = [usersTable, agentStatsTable, appStatsTable].filter((name) => !byName.has(name));
  if (missing.length > 0) {
    const [{ database, path }] = await queryRows<{ database: string; path: string }>(client, 'queries/search-path.sql');
    throw new ToolError(
      'NOT_A_CODER_DATABASE',
      `Database ${database} is not a Coder database: table(s) ${missing.join(', ')} not found in the search path (${path || 'empty'}).`,
      { fix: "Point --database-url at the database that coder server uses (its CODER_PG_CONNECTION_URL), and let coder server create its tables first." },
    );
  }

  const users = byName.get(usersTable) as TableRef;
  const agentStats = await usageTable(client, byName.get(agentStatsTable) as TableRef, 'raw', timeColumns[agentStatsTable]);
  const appStats = await usageTable(client, byName.get(appStatsTable) as TableRef, 'raw', timeColumns[appStatsTable]);

  const rollupRef = byName.get(rollupTable);
  const rollup = rollupRef ? await usageTable(client, rollupRef, 'rollup', timeColumns[rollupTable]) : undefined;
  const children = rollup ? await detectChildren(client, rollup) : [];

  const tables = [...(rollup ? [rollup] : []), ...children, agentStats, appStats];
  const foreignKey = await readForeignKeyState(client, appStats, 'user_id', users, appStatsUserForeignKey);

  return {
    profile: 'coder',
    description: describeColumnSet(rollup, children),
    tables,
    users,
    userForeignKeys: [foreignKey],
  };
}

/**
 * Finds the child tables of the rollup (Coder 2026 adds one for per-app
 * minutes). A child's foreign key includes user_id, so a child row must carry
 * the same pseudonym as its parent and gets the same trigger.
 */
async function detectChildren(client: pg.ClientBase, rollup: UsageTable): Promise<UsageTable[]> {
  const rows = await queryRows<FoundTable & { columns: string[] }>(client, 'queries/referencing-tables.sql', [rollup.oid]);
  const children: UsageTable[] = [];
  for (const row of rows) {
    if (!row.columns.includes('user_id')) continue;
    const columns = await readColumns(client, toRef(row));
    if (!columns.some((column) => column.name === childTimeColumn)) {
      throw new ToolError('NOT_A_CODER_DATABASE', `Table ${row.schema}.${row.name} references ${rollup.name} by user_id but has no start_time column; this tool does not know that Coder schema.`, {
        fix: 'Report the Coder version you run to the insights-privacy maintainers.',
      });
    }
    children.push(await usageTable(client, toRef(row), 'rollup', childTimeColumn));
  }
  return children;
}

function tableSql(table: TableRef): SqlFragment {
  return qualified(table.schema, table.name);
}

function findTable(detection: Detection, name: string): UsageTable | undefined {
  return detection.tables.find((table) => table.name === name);
}

/** Coder's tables that a cut-over converts, as detected. */
function cutoverTables(detection: Detection): CutoverTables {
  const rollup = findTable(detection, rollupTable);
  return {
    agentStats: findTable(detection, agentStatsTable) as UsageTable,
    appStats: findTable(detection, appStatsTable) as UsageTable,
    rollup,
    children: detection.tables.filter((table) => table.role === 'rollup' && table !== rollup),
  };
}

async function rollupScopeBlockers(client: pg.ClientBase, detection: Detection, schema: SqlFragment): Promise<number> {
  const [row] = await queryRows<{ rows: string }>(client, 'coder/raw-pseudonyms-in-window.sql', [], {
    agentStats: tableSql(findTable(detection, agentStatsTable) as UsageTable),
    appStats: tableSql(findTable(detection, appStatsTable) as UsageTable),
    rollupFrom: rollupFrom(cutoverTables(detection)),
    schema,
  });
  return Number(row.rows);
}

function notes(detection: Detection, mode: EnforcedMode | 'off', scope: Scope): string[] {
  const result: string[] = [];
  if (mode === 'anonymize' && scope === 'rollup') {
    result.push(
      'Scope rollup: workspace_agent_stats and workspace_app_stats keep real user ids. Coder deletes raw agent stats about a day after they are rolled up, but it never deletes app stats, so they identify users until someone deletes them.',
      "Scope rollup keeps Coder's per-agent Prometheus series, which join users.",
    );
  }
  if (mode === 'anonymize' && scope === 'source') {
    result.push("Scope source: Coder's per-agent Prometheus series and per-user insights (which join users) show no rows for new data.");
  }
  if (mode === 'anonymize' && scope === 'source') {
    result.push('Raw rows keep workspace_id and agent_id, which lead to the workspace owner: the raw tables are pseudonymous, not anonymous.');
  }
  // NOTE: Coder's 2026 rollup deletes stale child rows by the user ids it
  // computes from the raw tables; under scope rollup those are real ids and
  // never match the stored pseudonyms, so a stale row stays.
  const children = detection.tables.filter((table) => table.role === 'rollup' && table.name !== rollupTable);
  if (mode === 'anonymize' && scope === 'rollup' && children.length > 0) {
    result.push(
      `Scope rollup with ${children.map((table) => table.name).join(', ')}: when a recomputed bucket loses an app (for example after Coder's app registry changes), Coder cannot find the pseudonymized child row to delete it, so its minutes stay counted. Scope source has no such gap.`,
    );
  }
  if (mode === 'disable') {
    result.push('Rows stored before disable stay in the tables; Coder keeps showing them until it deletes them.');
  }
  if (!findTable(detection, rollupTable)) {
    result.push('This Coder version has no template_usage_stats table; only the raw tables are protected.');
  }
  return result;
}

/**
 * Builds the backfill walks of the protected tables: the rollup with its
 * protected child tables as followers, then the raw agent and app stats.
 */
async function prepareBackfill(client: pg.ClientBase, detection: Detection, context: BackfillContext): Promise<BackfillWalk[]> {
  const schema = ident(context.schema);
  const protectedSet = new Set(context.tables);
  const walks: BackfillWalk[] = [];

  const rollup = findTable(detection, rollupTable);
  if (rollup && protectedSet.has(rollup)) {
    const children = detection.tables.filter((table) => table.role === 'rollup' && table !== rollup && protectedSet.has(table));
    walks.push(await rollupWalk(client, rollup, await readPrimaryKey(client, rollup), children, schema));
  }
  const agentStats = findTable(detection, agentStatsTable) as UsageTable;
  if (protectedSet.has(agentStats)) {
    // Agent stats have random UUIDs as ids, so a walk along the primary key
    // would visit the heap and the created_at index in random order. Rows
    // written at about the same time sit in the same pages, and created_at
    // never changes, so the walk goes along (created_at, id) instead.
    const key = [{ name: agentStats.timeColumn, type: 'timestamp with time zone' }, ...(await readPrimaryKey(client, agentStats))];
    walks.push(agentStatsWalk(agentStats, key, schema));
  }
  const appStats = findTable(detection, appStatsTable) as UsageTable;
  if (protectedSet.has(appStats)) walks.push(appStatsWalk(appStats, await readPrimaryKey(client, appStats), schema));
  return walks;
}

/** The built-in profile for Coder's template insights tables. */
export const coderProfile: Profile = {
  name: 'coder',
  detect,
  cutover: (detection, context) => cutoverStatements(cutoverTables(detection), context),
  convertAhead: (client, detection, context) => convertAhead(client, cutoverTables(detection), context),
  rollupScopeBlockers,
  notes,
  prepareBackfill,
};
