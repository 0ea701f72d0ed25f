import { readStatus } from '../src/commands/status.js';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import {
  columnSets,
  insertAgentStats,
  maxBatchRows,
  rollupTemplateUsage,
  upsertAppStats,
  type AgentStatRow,
  type AppStatSession,
  type ColumnSet,
  type FixtureWorkspace,
} from '../src/fixture/index.js';
import {
  applyMode,
  createCoderDatabase,
  createLoginRole,
  grantOnUsageTables,
  pseudonymPattern,
  pseudonymsOf,
  usageTables,
  type CoderDatabase,
  type TestRole,
} from './support/coder.js';
import { serverVersion } from './support/database.js';

// Every test gets a fresh database with enforcement applied, so one test's
// rows can neither hide nor cause another test's failure. Under anonymize
// the tables start empty. Under disable they start with rows written before
// apply (see seedBeforeApply), so the rollup has input and an UPDATE has a
// row to change.

const minuteMs = 60_000;
const halfHourMs = 30 * minuteMs;

// Hand-built agent reports and app sessions live in these hours. Rows that a
// test writes directly get their own half-hour buckets from 2024 on, away
// from both.
const hourOne = new Date('2025-03-03T10:00:00Z');
const hourTwo = new Date('2025-03-03T12:00:00Z');
const directWriteStart = Date.parse('2024-01-01T00:00:00Z');
let directBuckets = 0;

type EnforcedMode = 'anonymize' | 'disable';
const modes: readonly EnforcedMode[] = ['anonymize', 'disable'];

function after(start: Date, minutes: number): Date {
  return new Date(start.getTime() + minutes * minuteMs);
}

function nextDirectBucket(): Date {
  return new Date(directWriteStart + directBuckets++ * halfHourMs);
}

/** One row to write, its values in the column order of its `TableRows`. */
interface WrittenRow {
  readonly values: unknown[];
  /** Identifies the stored row: the value of the table's key expression. */
  readonly key: string;
  /** The user id the row is written with. */
  readonly userId: string;
}

/** Rows for one table, written by any of the statement forms below. */
interface TableRows {
  readonly table: string;
  readonly columns: readonly string[];
  readonly rows: readonly WrittenRow[];
}

/** A parent row of template_usage_stats_session_apps: the key of a template_usage_stats row. */
interface UsageKey {
  readonly startTime: Date;
  readonly templateId: string;
  readonly userId: string;
}

const isoExpression = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** SQL that computes each table's row key as text, matching `WrittenRow.key`. */
const keyExpressions: Record<string, string> = {
  workspace_agent_stats: 'id::text',
  workspace_app_stats: 'session_id::text',
  template_usage_stats: isoExpression('start_time'),
  template_usage_stats_session_apps: `${isoExpression('start_time')} || ' ' || app_name`,
};

function agentStatRows(columnSet: ColumnSet, workspaces: readonly FixtureWorkspace[], count: number): TableRows {
  const shared = ['id', 'created_at', 'user_id', 'agent_id', 'workspace_id', 'template_id', 'connection_count'];
  const columns = columnSet === '2025' ? [...shared, 'session_count_ssh'] : [...shared, 'session_counts'];
  const rows = Array.from({ length: count }, (_, index): WrittenRow => {
    const workspace = workspaces[index % workspaces.length];
    const id = randomUUID();
    const sessions = columnSet === '2025' ? 1 : JSON.stringify({ ssh: 1 });
    const values = [id, after(new Date(directWriteStart), index), workspace.ownerId, workspace.agentId, workspace.id, workspace.templateId, 1, sessions];
    return { values, key: id, userId: workspace.ownerId };
  });
  return { table: 'workspace_agent_stats', columns, rows };
}

function appStatRows(workspaces: readonly FixtureWorkspace[], count: number): TableRows {
  const columns = ['user_id', 'workspace_id', 'agent_id', 'access_method', 'slug_or_port', 'session_id', 'session_started_at', 'session_ended_at', 'requests'];
  const rows = Array.from({ length: count }, (_, index): WrittenRow => {
    const workspace = workspaces[index % workspaces.length];
    const sessionId = randomUUID();
    const started = after(new Date(directWriteStart), index);
    const values = [workspace.ownerId, workspace.id, workspace.agentId, 'path', 'code-server', sessionId, started, after(started, 3), 3];
    return { values, key: sessionId, userId: workspace.ownerId };
  });
  return { table: 'workspace_app_stats', columns, rows };
}

function usageStatRows(columnSet: ColumnSet, workspaces: readonly FixtureWorkspace[], count: number): TableRows {
  const shared = ['start_time', 'end_time', 'template_id', 'user_id', 'usage_mins'];
  const columns = columnSet === '2025' ? [...shared, 'ssh_mins', 'sftp_mins', 'reconnecting_pty_mins', 'vscode_mins', 'jetbrains_mins'] : shared;
  const rows = Array.from({ length: count }, (_, index): WrittenRow => {
    const workspace = workspaces[index % workspaces.length];
    const start = nextDirectBucket();
    const minutes = columnSet === '2025' ? [10, 10, 0, 0, 0, 0] : [10];
    return { values: [start, after(start, 30), workspace.templateId, workspace.ownerId, ...minutes], key: start.toISOString(), userId: workspace.ownerId };
  });
  return { table: 'template_usage_stats', columns, rows };
}

function sessionAppRows(parents: readonly UsageKey[]): TableRows {
  const columns = ['start_time', 'template_id', 'user_id', 'app_name', 'usage_mins'];
  const rows = parents.map((parent, index): WrittenRow => {
    const appName = `written-app-${index}`;
    return { values: [parent.startTime, parent.templateId, parent.userId, appName, 5], key: `${parent.startTime.toISOString()} ${appName}`, userId: parent.userId };
  });
  return { table: 'template_usage_stats_session_apps', columns, rows };
}

function usageKeys(rows: TableRows): UsageKey[] {
  return rows.rows.map((row) => ({ startTime: row.values[0] as Date, templateId: row.values[2] as string, userId: row.userId }));
}

/** Writes each row with its own single-row INSERT and returns the row counts PostgreSQL reported. */
async function insertEachRow(client: pg.ClientBase, rows: TableRows): Promise<number> {
  const placeholders = rows.columns.map((_, index) => `$${index + 1}`).join(', ');
  let reported = 0;
  for (const row of rows.rows) {
    const result = await client.query(`INSERT INTO ${rows.table} (${rows.columns.join(', ')}) VALUES (${placeholders})`, row.values);
    reported += result.rowCount ?? 0;
  }
  return reported;
}

/** Writes all rows with one INSERT … VALUES list and returns the row count PostgreSQL reported. */
async function insertValuesList(client: pg.ClientBase, rows: TableRows): Promise<number> {
  const width = rows.columns.length;
  const tuples = rows.rows.map((_, row) => `(${rows.columns.map((__, column) => `$${row * width + column + 1}`).join(', ')})`);
  const result = await client.query(
    `INSERT INTO ${rows.table} (${rows.columns.join(', ')}) VALUES ${tuples.join(', ')}`,
    rows.rows.flatMap((row) => row.values),
  );
  return result.rowCount ?? 0;
}

/** Formats one value for COPY's text format. It escapes nothing, because no test value contains a tab, newline or backslash. */
function copyField(value: unknown): string {
  if (value === null) return '\\N';
  if (value instanceof Date) return value.toISOString();
  return String(value);
}

/** Loads all rows with COPY … FROM STDIN and returns the row count PostgreSQL reported. */
async function copyRows(client: pg.Client, rows: TableRows): Promise<number> {
  const stream = client.query(copyFrom(`COPY ${rows.table} (${rows.columns.join(', ')}) FROM STDIN`));
  const text = rows.rows.map((row) => `${row.values.map(copyField).join('\t')}\n`).join('');
  await pipeline(Readable.from([text]), stream);
  return stream.rowCount;
}

/**
 * Inserts all rows with one MERGE whose source never matches, and returns the
 * row count PostgreSQL reported. The rows travel as one JSON array that
 * json_populate_recordset turns into rows of the table's type.
 */
async function mergeRows(client: pg.ClientBase, rows: TableRows): Promise<number> {
  const records = rows.rows.map((row) =>
    Object.fromEntries(rows.columns.map((column, index) => [column, column === 'session_counts' ? JSON.parse(row.values[index] as string) : row.values[index]])),
  );
  const result = await client.query(
    `MERGE INTO ${rows.table} AS target
     USING json_populate_recordset(NULL::${rows.table}, $1::json) AS source
     ON false
     WHEN NOT MATCHED THEN INSERT (${rows.columns.join(', ')}) VALUES (${rows.columns.map((column) => `source.${column}`).join(', ')})`,
    [JSON.stringify(records)],
  );
  return result.rowCount ?? 0;
}

type StatementForm = 'single-row INSERT' | 'multi-row INSERT' | 'COPY FROM STDIN' | 'MERGE';

async function writeRows(client: pg.Client, rows: TableRows, form: StatementForm): Promise<number> {
  if (form === 'single-row INSERT') return insertEachRow(client, rows);
  if (form === 'multi-row INSERT') return insertValuesList(client, rows);
  if (form === 'MERGE') return mergeRows(client, rows);
  return copyRows(client, rows);
}

/** Hand-built reports of one workspace in one hour: sessions in both half-hour buckets and an app session. */
function hourOfUse(workspace: FixtureWorkspace, hourStart: Date): { agentRows: AgentStatRow[]; sessions: AppStatSession[] } {
  const report = (minute: number, sessionCounts: Record<string, number>): AgentStatRow => ({
    id: randomUUID(),
    createdAt: after(hourStart, minute),
    userId: workspace.ownerId,
    agentId: workspace.agentId,
    workspaceId: workspace.id,
    templateId: workspace.templateId,
    connectionCount: 1,
    sessionCounts,
    connectionMedianLatencyMs: 20,
  });
  const agentRows = [report(1, { ssh: 1 }), report(2, { ssh: 1 }), report(35, { vscode: 1 })];
  const sessions: AppStatSession[] = [
    {
      userId: workspace.ownerId,
      workspaceId: workspace.id,
      agentId: workspace.agentId,
      accessMethod: 'path',
      slugOrPort: 'code-server',
      sessionId: randomUUID(),
      sessionStartedAt: after(hourStart, 4),
      sessionEndedAt: after(hourStart, 7),
      requests: 4,
    },
  ];
  return { agentRows, sessions };
}

/** Writes an hour of use for every workspace through the fixture's Coder write paths. */
async function writeHourOfUse(coder: CoderDatabase, hourStart: Date): Promise<void> {
  const written = coder.population.workspaces.map((workspace) => hourOfUse(workspace, hourStart));
  await insertAgentStats(coder.client, coder.columnSet, written.flatMap((entry) => entry.agentRows));
  await upsertAppStats(coder.client, written.flatMap((entry) => entry.sessions));
}

/**
 * Writes rows with real user ids before enforcement starts: hour one rolled
 * up, hour two only in the raw tables, so a later rollup has new buckets to
 * store.
 */
async function seedBeforeApply(coder: CoderDatabase): Promise<void> {
  await writeHourOfUse(coder, hourOne);
  await rollupTemplateUsage(coder.client, coder.columnSet, after(hourOne, 60));
  await writeHourOfUse(coder, hourTwo);
}

async function countRows(client: pg.ClientBase, columnSet: ColumnSet): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const table of usageTables(columnSet)) {
    const { rows } = await client.query<{ count: number }>(`SELECT count(*)::integer AS count FROM ${table}`);
    counts[table] = rows[0].count;
  }
  return counts;
}

/** Reads the stored user id of each written row, by the table's key expression. */
async function storedUserIds(client: pg.ClientBase, rows: TableRows): Promise<Map<string, string>> {
  const key = keyExpressions[rows.table];
  const { rows: stored } = await client.query<{ key: string; user_id: string }>(
    `SELECT ${key} AS key, user_id::text AS user_id FROM ${rows.table} WHERE ${key} = ANY($1::text[])`,
    [rows.rows.map((row) => row.key)],
  );
  return new Map(stored.map((row) => [row.key, row.user_id]));
}

/** Checks that each written row is stored once, with the pseudonym of the id it was written with. */
async function expectPseudonymized(client: pg.ClientBase, rows: TableRows): Promise<void> {
  const stored = await storedUserIds(client, rows);
  const pseudonyms = await pseudonymsOf(client, rows.rows.map((row) => row.userId));

  expect(stored.size).toBe(rows.rows.length);
  rows.rows.forEach((row, index) => {
    expect({ table: rows.table, key: row.key, userId: stored.get(row.key) }).toEqual({ table: rows.table, key: row.key, userId: pseudonyms[index] });
  });
  for (const userId of stored.values()) expect(userId).toMatch(pseudonymPattern);
}

/** Checks every protected table: no stored user id is a user's id, and every one is a version-8 UUID. */
async function expectNoRawIds(client: pg.ClientBase, columnSet: ColumnSet): Promise<void> {
  for (const table of usageTables(columnSet)) {
    const { rows } = await client.query<{ raw: number; not_pseudonym: number }>(
      `SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM users WHERE users.id = t.user_id))::integer AS raw,
              count(*) FILTER (WHERE t.user_id::text !~ $1)::integer AS not_pseudonym
       FROM ${table} AS t`,
      [pseudonymPattern.source],
    );
    expect({ table, rawIds: rows[0].raw }).toEqual({ table, rawIds: 0 });
    expect({ table, notVersion8: rows[0].not_pseudonym }).toEqual({ table, notVersion8: 0 });
  }
}

describe.each(columnSets)('write paths with the %s column set', (columnSet) => {
  describe.each(modes)('under %s', (mode) => {
    let coder: CoderDatabase;
    let before: Record<string, number>;

    beforeEach(async () => {
      coder = await createCoderDatabase('writes', columnSet);
      if (mode === 'disable') await seedBeforeApply(coder);
      await applyMode(coder.client, mode);
      before = await countRows(coder.client, columnSet);
    });

    afterEach(async () => {
      await coder.close();
    });

    /** Parents of session-app rows: new ones under anonymize, rows stored before apply under disable. */
    async function sessionAppParents(count: number): Promise<{ parents: TableRows | null; keys: UsageKey[] }> {
      if (mode === 'anonymize') {
        const parents = usageStatRows(columnSet, coder.population.workspaces, count);
        return { parents, keys: usageKeys(parents) };
      }
      const { rows } = await coder.client.query<{ start_time: Date; template_id: string; user_id: string }>(
        'SELECT start_time, template_id::text, user_id::text FROM template_usage_stats ORDER BY start_time, template_id, user_id LIMIT $1',
        [count],
      );
      expect(rows).toHaveLength(count);
      return { parents: null, keys: rows.map((row) => ({ startTime: row.start_time, templateId: row.template_id, userId: row.user_id })) };
    }

    /** Builds rows for a table, and the rows its foreign key needs written first, if any. */
    async function rowsFor(table: string, count: number): Promise<{ parents: TableRows | null; rows: TableRows }> {
      const workspaces = coder.population.workspaces;
      if (table === 'workspace_agent_stats') return { parents: null, rows: agentStatRows(columnSet, workspaces, count) };
      if (table === 'workspace_app_stats') return { parents: null, rows: appStatRows(workspaces, count) };
      if (table === 'template_usage_stats') return { parents: null, rows: usageStatRows(columnSet, workspaces, count) };
      const { parents, keys } = await sessionAppParents(count);
      return { parents, rows: sessionAppRows(keys) };
    }

    /** Checks the outcome of a write of `rows` that PostgreSQL reported as `reported` rows. */
    async function expectEnforced(written: { parents: TableRows | null; rows: TableRows }, reported: number): Promise<void> {
      if (mode === 'disable') {
        expect(reported).toBe(0);
        expect(await countRows(coder.client, columnSet)).toEqual(before);
        return;
      }
      expect(reported).toBe(written.rows.rows.length);
      if (written.parents) await expectPseudonymized(coder.client, written.parents);
      await expectPseudonymized(coder.client, written.rows);
      await expectNoRawIds(coder.client, columnSet);
    }

    const tables = usageTables(columnSet);
    // MERGE exists from PostgreSQL 15 on.
    const forms: StatementForm[] = ['single-row INSERT', 'multi-row INSERT', 'COPY FROM STDIN', ...(serverVersion() >= 150000 ? (['MERGE'] as const) : [])];
    const formCases = forms.flatMap((form) => tables.map((table) => [form, table] as const));

    test.each(formCases)('%s into %s', async (form, table) => {
      const written = await rowsFor(table, form === 'single-row INSERT' ? 1 : 3);
      if (written.parents) await insertValuesList(coder.client, written.parents);

      const reported = await writeRows(coder.client, written.rows, form);

      await expectEnforced(written, reported);
    });

    test('unnest batches of agent stats', async () => {
      const count = maxBatchRows + 100;
      const rows = Array.from({ length: count }, (_, index): AgentStatRow => {
        const workspace = coder.population.workspaces[index % coder.population.workspaces.length];
        return {
          id: randomUUID(),
          createdAt: after(new Date(directWriteStart), index),
          userId: workspace.ownerId,
          agentId: workspace.agentId,
          workspaceId: workspace.id,
          templateId: workspace.templateId,
          connectionCount: 1,
          sessionCounts: { ssh: 1 },
        };
      });

      const result = await insertAgentStats(coder.client, columnSet, rows);

      expect(result.statements).toBe(2);
      const written: TableRows = {
        table: 'workspace_agent_stats',
        columns: [],
        rows: rows.map((row) => ({ values: [], key: row.id, userId: row.userId })),
      };
      await expectEnforced({ parents: null, rows: written }, result.rows);
    });

    test('rollup INSERT … SELECT … GROUP BY', async () => {
      const hour = mode === 'anonymize' ? hourOne : hourTwo;
      if (mode === 'anonymize') await writeHourOfUse(coder, hour);
      const { rows: input } = await coder.client.query<{ count: number }>(
        'SELECT count(*)::integer AS count FROM workspace_agent_stats WHERE created_at >= $1 AND created_at < $2',
        [hour, after(hour, 60)],
      );
      expect(input[0].count).toBe(3 * coder.population.workspaces.length);

      const result = await rollupTemplateUsage(coder.client, columnSet, after(hour, 60));

      if (mode === 'disable') {
        expect(result.statsRows).toBe(0);
        expect(result.sessionAppRows).toBe(0);
        expect(await countRows(coder.client, columnSet)).toEqual(before);
        return;
      }
      const owners = coder.population.workspaces.map((workspace) => workspace.ownerId);
      const pseudonyms = await pseudonymsOf(coder.client, owners);
      const expectedStats = coder.population.workspaces.flatMap((workspace, index) =>
        [hour, after(hour, 30)].map((start) => `${start.toISOString()} ${workspace.templateId} ${pseudonyms[index]}`),
      );
      const { rows: stats } = await coder.client.query<{ row_key: string }>(
        `SELECT ${isoExpression('start_time')} || ' ' || template_id || ' ' || user_id AS row_key FROM template_usage_stats`,
      );
      expect(stats.map((row) => row.row_key).sort()).toEqual(expectedStats.sort());
      if (columnSet === '2026') {
        const expectedApps = coder.population.workspaces.flatMap((workspace, index) => [
          `${hour.toISOString()} ${workspace.templateId} ${pseudonyms[index]} ssh`,
          `${after(hour, 30).toISOString()} ${workspace.templateId} ${pseudonyms[index]} vscode`,
        ]);
        const { rows: apps } = await coder.client.query<{ row_key: string }>(
          `SELECT ${isoExpression('start_time')} || ' ' || template_id || ' ' || user_id || ' ' || app_name AS row_key FROM template_usage_stats_session_apps`,
        );
        expect(apps.map((row) => row.row_key).sort()).toEqual(expectedApps.sort());
      }
      await expectNoRawIds(coder.client, columnSet);
    });

    test('INSERT … SELECT … GROUP BY of real ids', async () => {
      const start = nextDirectBucket();
      const protocolMinutes = columnSet === '2025' ? ', ssh_mins, sftp_mins, reconnecting_pty_mins, vscode_mins, jetbrains_mins' : '';
      const protocolValues = columnSet === '2025' ? ', 0, 0, 0, 0, 0' : '';

      const result = await coder.client.query(
        `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins${protocolMinutes})
         SELECT $1::timestamptz, $1::timestamptz + interval '30 minutes', template_id, owner_id, count(*)::smallint${protocolValues}
         FROM workspaces
         GROUP BY template_id, owner_id`,
        [start],
      );

      if (mode === 'disable') {
        expect(result.rowCount).toBe(0);
        expect(await countRows(coder.client, columnSet)).toEqual(before);
        return;
      }
      const workspaces = coder.population.workspaces;
      expect(result.rowCount).toBe(workspaces.length);
      const pseudonyms = await pseudonymsOf(coder.client, workspaces.map((workspace) => workspace.ownerId));
      const { rows } = await coder.client.query<{ row_key: string }>(
        "SELECT template_id || ' ' || user_id AS row_key FROM template_usage_stats WHERE start_time = $1",
        [start],
      );
      expect(rows.map((row) => row.row_key).sort()).toEqual(workspaces.map((workspace, index) => `${workspace.templateId} ${pseudonyms[index]}`).sort());
      await expectNoRawIds(coder.client, columnSet);
    });

    test('app stats upsert of one session twice', async () => {
      const workspace = coder.population.workspaces[0];
      const [session] = hourOfUse(workspace, new Date(directWriteStart)).sessions;
      const later = { ...session, sessionEndedAt: after(session.sessionEndedAt, 10), requests: session.requests + 6 };

      const first = await upsertAppStats(coder.client, [session]);
      const second = await upsertAppStats(coder.client, [later]);

      if (mode === 'disable') {
        expect(first.rows + second.rows).toBe(0);
        expect(await countRows(coder.client, columnSet)).toEqual(before);
        return;
      }
      expect(second.rows).toBe(1);
      const [pseudonym] = await pseudonymsOf(coder.client, [workspace.ownerId]);
      const { rows } = await coder.client.query<{ user_id: string; session_ended_at: Date; requests: number }>(
        'SELECT user_id::text, session_ended_at, requests FROM workspace_app_stats WHERE session_id = $1',
        [session.sessionId],
      );
      expect(rows).toHaveLength(1);
      expect(rows[0].user_id).toBe(pseudonym);
      expect(rows[0].session_ended_at).toEqual(later.sessionEndedAt);
      expect(rows[0].requests).toBe(later.requests);
    });

    test('rollup upsert of one bucket twice', async () => {
      const hour = mode === 'anonymize' ? hourOne : hourTwo;
      if (mode === 'anonymize') await writeHourOfUse(coder, hour);
      const workspace = coder.population.workspaces[0];

      // A late report adds minute 3, with an ssh session, to the first bucket.
      const late: AgentStatRow = { ...hourOfUse(workspace, hour).agentRows[0], id: randomUUID(), createdAt: after(hour, 3) };

      const first = await rollupTemplateUsage(coder.client, columnSet, after(hour, 60));
      const afterFirst = await countRows(coder.client, columnSet);
      const minutesBefore = mode === 'anonymize' ? await bucketMinutes(workspace, hour) : null;
      await insertAgentStats(coder.client, columnSet, [late]);
      const second = await rollupTemplateUsage(coder.client, columnSet, after(hour, 60));

      if (mode === 'disable') {
        expect(first.statsRows + second.statsRows).toBe(0);
        expect(await countRows(coder.client, columnSet)).toEqual(before);
        return;
      }
      expect(second.statsRows).toBe(1);
      expect(await countRows(coder.client, columnSet)).toEqual({ ...afterFirst, workspace_agent_stats: afterFirst.workspace_agent_stats + 1 });
      const minutesAfter = await bucketMinutes(workspace, hour);
      expect(minutesAfter.usage).toBe(minutesBefore!.usage + 1);
      expect(minutesAfter.ssh).toBe(minutesBefore!.ssh + 1);
      await expectNoRawIds(coder.client, columnSet);
    });

    /** Reads the stored usage and ssh minutes of one workspace owner's bucket, by the owner's pseudonym. */
    async function bucketMinutes(workspace: FixtureWorkspace, start: Date): Promise<{ usage: number; ssh: number }> {
      const [pseudonym] = await pseudonymsOf(coder.client, [workspace.ownerId]);
      const sshMinutes =
        columnSet === '2025'
          ? 'stats.ssh_mins'
          : `(SELECT apps.usage_mins FROM template_usage_stats_session_apps AS apps
              WHERE apps.start_time = stats.start_time AND apps.template_id = stats.template_id
                AND apps.user_id = stats.user_id AND apps.app_name = 'ssh')`;
      const { rows } = await coder.client.query<{ usage: number; ssh: number }>(
        `SELECT stats.usage_mins AS usage, ${sshMinutes} AS ssh
         FROM template_usage_stats AS stats
         WHERE stats.start_time = $1 AND stats.template_id = $2 AND stats.user_id = $3`,
        [start, workspace.templateId, pseudonym],
      );
      expect(rows).toHaveLength(1);
      return rows[0];
    }

    test.each(tables)('UPDATE of user_id to a real id in %s', async (table) => {
      if (mode === 'disable') {
        // Rows written before apply are the only ones there are. The trigger
        // of disable fires on INSERT only, so the update goes through and
        // adds no row.
        const result = await coder.client.query(`UPDATE ${table} SET user_id = user_id WHERE ctid = (SELECT min(ctid) FROM ${table})`);
        expect(result.rowCount).toBe(1);
        expect(await countRows(coder.client, columnSet)).toEqual(before);
        return;
      }
      const written = await rowsFor(table, 1);
      if (written.parents) await insertValuesList(coder.client, written.parents);
      await insertValuesList(coder.client, written.rows);
      const [row] = written.rows.rows;

      const result = await coder.client.query(`UPDATE ${table} SET user_id = $1 WHERE ${keyExpressions[table]} = $2`, [row.userId, row.key]);

      expect(result.rowCount).toBe(1);
      await expectPseudonymized(coder.client, written.rows);
      await expectNoRawIds(coder.client, columnSet);
    });

    test('UPDATE of user_id to another user', async () => {
      const written = agentStatRows(columnSet, coder.population.workspaces, 1);
      if (mode === 'anonymize') await insertValuesList(coder.client, written);
      const other = coder.population.users[1].id;
      // Under disable the row to change is one stored before apply.
      const { rows: targets } = await coder.client.query<{ id: string }>('SELECT id::text FROM workspace_agent_stats ORDER BY created_at, id LIMIT 1');

      const result = await coder.client.query('UPDATE workspace_agent_stats SET user_id = $1 WHERE id = $2', [other, targets[0].id]);

      expect(result.rowCount).toBe(1);
      if (mode === 'disable') {
        expect(await countRows(coder.client, columnSet)).toEqual(before);
        return;
      }
      await expectPseudonymized(coder.client, { ...written, rows: [{ ...written.rows[0], userId: other }] });
      await expectNoRawIds(coder.client, columnSet);
    });

    test.each(tables)('superuser session as replica writes %s', async (table) => {
      const replica = await coder.database.connect();
      try {
        await replica.query("SET session_replication_role = 'replica'");
        const written = await rowsFor(table, 2);
        if (written.parents) await insertValuesList(replica, written.parents);

        const reported = await insertValuesList(replica, written.rows);

        await expectEnforced(written, reported);
      } finally {
        await replica.end();
      }
    });

    describe('role with INSERT and SELECT only', () => {
      let role: TestRole;
      let roleClient: pg.Client;

      beforeAll(async () => {
        role = await createLoginRole('writer');
      });

      // The role's privileges live in each test's database, which the outer
      // afterEach drops, so nothing is left that would keep DROP ROLE from
      // succeeding.
      afterAll(async () => {
        await role.drop();
      });

      beforeEach(async () => {
        await grantOnUsageTables(coder.client, columnSet, role.name, ['INSERT', 'SELECT']);
        roleClient = await role.connect(coder.database);
      });

      afterEach(async () => {
        await roleClient.end();
      });

      test.each(tables)('writes %s', async (table) => {
        const { rows: privileges } = await coder.client.query<{ owner: boolean; superuser: boolean }>(
          `SELECT pg_has_role($1, c.relowner, 'USAGE') AS owner, r.rolsuper AS superuser
           FROM pg_class AS c, pg_roles AS r
           WHERE c.oid = $2::regclass AND r.rolname = $1`,
          [role.name, table],
        );
        expect(privileges[0]).toEqual({ owner: false, superuser: false });
        const written = await rowsFor(table, 2);
        if (written.parents) await insertValuesList(roleClient, written.parents);

        const reported = await insertValuesList(roleClient, written.rows);

        await expectEnforced(written, reported);
      });

      test('writes agent stats in unnest batches', async () => {
        const written = agentStatRows(columnSet, coder.population.workspaces, 3);
        const rows = written.rows.map((row, index): AgentStatRow => {
          const workspace = coder.population.workspaces[index % coder.population.workspaces.length];
          return {
            id: row.key,
            createdAt: row.values[1] as Date,
            userId: row.userId,
            agentId: workspace.agentId,
            workspaceId: workspace.id,
            templateId: workspace.templateId,
            connectionCount: 1,
            sessionCounts: { ssh: 1 },
          };
        });

        const result = await insertAgentStats(roleClient, columnSet, rows);

        await expectEnforced({ parents: null, rows: written }, result.rows);
      });
    });

    if (mode === 'anonymize') {
      test('app stats upsert with foreign key replaced', async () => {
        const { rows: constraints } = await coder.client.query<{ type: string }>(
          "SELECT contype::text AS type FROM pg_constraint WHERE conrelid = 'workspace_app_stats'::regclass AND conname = 'workspace_app_stats_user_id_fkey'",
        );
        expect(constraints).toEqual([{ type: 'c' }]);
        const workspace = coder.population.workspaces[0];
        const [session] = hourOfUse(workspace, hourOne).sessions;

        const result = await upsertAppStats(coder.client, [session]);

        expect(result.rows).toBe(1);
        const [pseudonym] = await pseudonymsOf(coder.client, [workspace.ownerId]);
        const { rows } = await coder.client.query<{ user_id: string }>('SELECT user_id::text FROM workspace_app_stats WHERE session_id = $1', [session.sessionId]);
        expect(rows).toEqual([{ user_id: pseudonym }]);
      });
    }
  });
});

describe.each(['source', 'rollup'] as const)('rollup under anonymize scope %s, 2026 column set', (scope) => {
  let coder: CoderDatabase;

  beforeEach(async () => {
    coder = await createCoderDatabase('writes_scope', '2026', { users: 1, templates: 1, workspacesPerUser: 1 });
    await applyMode(coder.client, 'anonymize', scope);
  });

  afterEach(async () => {
    await coder.close();
  });

  // The fixture's 2026 rollup, modelled on Coder's, reads its own stored
  // rows back by key: it compares the session digest with the stored bucket
  // and deletes the session apps a bucket no longer has. Under scope rollup
  // the raw tables keep real ids, so the rollup computes with real ids while
  // the stored rows carry pseudonyms: the stale row stays, a limit that
  // status reports as a note.
  test('stale session apps after a bucket shrinks', async () => {
    const [workspace] = coder.population.workspaces;
    const report: AgentStatRow = {
      ...hourOfUse(workspace, hourOne).agentRows[0],
      sessionCounts: { ssh: 1 },
    };
    await insertAgentStats(coder.client, '2026', [report]);
    await rollupTemplateUsage(coder.client, '2026', after(hourOne, 60));

    // The same minute reported again as a vscode session: ssh disappears.
    await coder.client.query('DELETE FROM workspace_agent_stats');
    await insertAgentStats(coder.client, '2026', [{ ...report, id: randomUUID(), sessionCounts: { vscode: 1 } }]);
    const result = await rollupTemplateUsage(coder.client, '2026', after(hourOne, 60));

    const [pseudonym] = await pseudonymsOf(coder.client, [workspace.ownerId]);
    const { rows } = await coder.client.query<{ app_name: string; user_id: string }>(
      'SELECT app_name, user_id::text FROM template_usage_stats_session_apps ORDER BY app_name',
    );
    const status = await readStatus(coder.client, { schema: 'insights_privacy', profile: 'coder', counts: false });
    const limitNoted = status.notes.some((note) => note.includes('template_usage_stats_session_apps') && note.includes('stay counted'));

    if (scope === 'source') {
      expect(rows).toEqual([{ app_name: 'vscode', user_id: pseudonym }]);
      expect(result.removedSessionAppRows).toBe(1);
      expect(limitNoted).toBe(false);
    } else {
      expect(rows).toEqual([
        { app_name: 'ssh', user_id: pseudonym },
        { app_name: 'vscode', user_id: pseudonym },
      ]);
      expect(limitNoted).toBe(true);
    }
  });
});
