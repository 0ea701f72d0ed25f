import { spawn } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { runCli } from '../src/cli/main.js';
import { runBackfill, type BackfillCommandResult, type BackfillSettings } from '../src/commands/backfill.js';
import { readStatus } from '../src/commands/status.js';
import { applyEnforcement, type ApplyResult } from '../src/commands/apply.js';
import { advisoryLockClass } from '../src/core/transaction.js';
import type { BackfillProgress } from '../src/core/backfill.js';
import { backfillLockObject } from '../src/core/backfill-progress.js';
import { domainLabel } from '../src/core/enforcement.js';
import { ExitCode, ToolError } from '../src/core/errors.js';
import { columnSets, createCoderSchema, readInsights, seedPopulation, type ColumnSet, type Population } from '../src/fixture/index.js';
import { applyMode, privacySchema, readNewestKey, usageTables } from './support/coder.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { startCoderLoad, type LoadResult } from './support/traffic-load.js';

// Rows stored before enforcement are made here with generate_series, far
// faster than Coder's write paths, and lie days in the past. Raw agent and
// app stats end two hours before the newest rollup bucket, so Coder's rollup
// window (from one hour before that bucket) never reads them. The rollup
// that runs during the load tests therefore recomputes no old bucket, and a
// control database with the same rows has the same insights.

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));
const binaryPath = join(repositoryRoot, 'bin', 'insights-privacy.js');
const bucketMs = 30 * 60_000;

/** Row counts of a seeded database. */
interface SeedSize {
  users: number;
  buckets: number;
  agentStats: number;
  appStats: number;
}

const largeSeed: SeedSize = { users: 120, buckets: 420, agentStats: 110_000, appStats: 30_000 };
const smallSeed: SeedSize = { users: 40, buckets: 400, agentStats: 30_000, appStats: 8_000 };

/** A database with Coder's tables and old rows with real user ids; never connected to while clones are made. */
interface Seed {
  database: TestDatabase;
  columnSet: ColumnSet;
  population: Population;
  /** Start of the first rollup bucket and end of the last one. */
  range: { from: Date; to: Date };
}

const databases: TestDatabase[] = [];
const clients: pg.Client[] = [];
/** Measurements printed once at the end; no test checks a duration. */
const measurements: string[] = [];

afterAll(async () => {
  if (measurements.length > 0) console.log(`Backfill measurements (information only):\n${measurements.join('\n')}`);
  for (const client of clients) await client.end().catch(() => undefined);
  for (const database of databases) await database.drop();
});

async function connect(database: TestDatabase): Promise<pg.Client> {
  const client = await database.connect();
  // A session ended by the server (a test that terminates it, or the drop at
  // the end) must not crash the test run.
  client.on('error', () => undefined);
  await client.query("SET TimeZone = 'UTC'");
  clients.push(client);
  return client;
}

async function close(client: pg.Client): Promise<void> {
  await client.end().catch(() => undefined);
}

async function scalar<T>(client: pg.ClientBase, sql: string, params: unknown[] = []): Promise<T> {
  const { rows } = await client.query<{ value: T }>(sql, params);
  return rows[0].value;
}

async function count(client: pg.ClientBase, sql: string, params: unknown[] = []): Promise<number> {
  return Number(await scalar<string>(client, sql, params));
}

function realIdCondition(column = 'user_id'): string {
  return `substr(${column}::text, 15, 1) <> '8'`;
}

async function realIds(client: pg.ClientBase, table: string): Promise<number> {
  return count(client, `SELECT count(*) AS value FROM ${table} WHERE ${realIdCondition()}`);
}

/** Creates a database with Coder's tables, a population and old usage rows, and closes its connection. */
async function createSeed(prefix: string, columnSet: ColumnSet, size: SeedSize): Promise<Seed> {
  const database = await createTestDatabase(prefix);
  databases.push(database);
  const client = await database.connect();
  try {
    await client.query("SET TimeZone = 'UTC'");
    await createCoderSchema(client, columnSet);
    const population = await seedPopulation(client, { users: size.users, templates: 3, workspacesPerUser: 1 });
    const from = new Date(Math.floor((Date.now() - 12 * 24 * 3600_000) / bucketMs) * bucketMs);
    const to = new Date(from.getTime() + size.buckets * bucketMs);
    await insertOldRows(client, columnSet, from, size);
    await client.query('ANALYZE');
    return { database, columnSet, population, range: { from, to } };
  } finally {
    await client.end();
  }
}

const workspaceRows = `
  SELECT w.id, w.owner_id, w.template_id, a.id AS agent_id, row_number() OVER (ORDER BY w.id) - 1 AS idx
  FROM workspaces AS w JOIN workspace_agents AS a ON a.workspace_id = w.id`;

async function insertOldRows(client: pg.Client, columnSet: ColumnSet, from: Date, size: SeedSize): Promise<void> {
  const minuteColumns2025 = ', ssh_mins, sftp_mins, reconnecting_pty_mins, vscode_mins, jetbrains_mins';
  await client.query(
    `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, median_latency_ms, app_usage_mins
       ${columnSet === '2025' ? minuteColumns2025 : ', session_usage_digest'})
     SELECT $1::timestamptz + b * interval '30 minutes', $1::timestamptz + (b + 1) * interval '30 minutes', w.template_id, w.owner_id,
            1 + (b + w.idx) % 30, CASE WHEN (b + w.idx) % 5 = 0 THEN NULL ELSE 10 + (b * 3 + w.idx) % 70 END,
            CASE WHEN (b + w.idx) % 4 = 0 THEN NULL ELSE jsonb_build_object('code-server', 1 + (b + w.idx) % 20, 'jupyter', 1 + b % 9) END
            ${columnSet === '2025' ? ', (b + w.idx) % 11, 0, b % 4, (b * 7 + w.idx) % 30, w.idx % 3' : ', b'}
     FROM generate_series(0, $2::integer - 1) AS b
     CROSS JOIN (${workspaceRows}) AS w
     WHERE (b + w.idx) % 3 <> 0`,
    [from, size.buckets],
  );
  if (columnSet === '2026') {
    await client.query(
      `INSERT INTO template_usage_stats_session_apps (start_time, template_id, user_id, app_name, usage_mins)
       SELECT s.start_time, s.template_id, s.user_id, a.app, 1 + (s.usage_mins + a.shift) % 30
       FROM template_usage_stats AS s
       CROSS JOIN (VALUES ('vscode', 0), ('ssh', 7)) AS a(app, shift)
       WHERE a.app = 'vscode' OR s.usage_mins % 2 = 0`,
    );
  }

  // Raw rows end two hours before the newest bucket, out of Coder's rollup window.
  const rawSpanSeconds = (size.buckets * 30 - 120) * 60;
  const users = `(SELECT count(*) FROM workspaces)`;
  await client.query(
    `INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, template_id, connection_count, connection_median_latency_ms)
     SELECT gen_random_uuid(), $1::timestamptz + (i::double precision * $3 / $2) * interval '1 second', w.owner_id, w.agent_id, w.id, w.template_id, 1 + i % 3, 10 + i % 40
     FROM generate_series(0, $2::integer - 1) AS i
     JOIN (${workspaceRows}) AS w ON w.idx = i % ${users}`,
    [from, size.agentStats, rawSpanSeconds],
  );
  await client.query(
    `INSERT INTO workspace_app_stats (user_id, workspace_id, agent_id, access_method, slug_or_port, session_id, session_started_at, session_ended_at, requests)
     SELECT w.owner_id, w.id, w.agent_id, 'path', 'code-server', gen_random_uuid(),
            $1::timestamptz + (i::double precision * $3 / $2) * interval '1 second',
            $1::timestamptz + (i::double precision * $3 / $2) * interval '1 second' + (1 + i % 20) * interval '1 minute', 1 + i % 50
     FROM generate_series(0, $2::integer - 1) AS i
     JOIN (${workspaceRows}) AS w ON w.idx = i % ${users}`,
    [from, size.appStats, rawSpanSeconds - 1800],
  );
}

/** Copies a database file by file; the source must have no open connection. */
async function cloneDatabase(source: TestDatabase, prefix: string): Promise<TestDatabase> {
  const database = await createTestDatabase(prefix, source.name);
  databases.push(database);
  return database;
}

function formatUuid(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Computes pseudonyms in Node from the key, independently of the functions in the database. */
function pseudonymizer(key: Buffer): (id: string) => string {
  const cache = new Map<string, string>();
  return (id) => {
    let pseudonym = cache.get(id);
    if (pseudonym === undefined) {
      const message = Buffer.concat([Buffer.from(domainLabel, 'utf8'), Buffer.from(id.replace(/-/g, ''), 'hex')]);
      const bytes = Buffer.from(createHmac('sha256', key).update(message).digest().subarray(0, 16));
      bytes[6] = (bytes[6] & 0x0f) | 0x80;
      bytes[8] = (bytes[8] & 0x3f) | 0x80;
      pseudonym = formatUuid(bytes);
      cache.set(id, pseudonym);
    }
    return pseudonym;
  };
}

function backfillSettings(existing: BackfillSettings['existing'], fields: Partial<BackfillSettings> = {}): BackfillSettings {
  return { existing, schema: privacySchema, profile: 'coder', batchSize: 5000, lock: { lockTimeoutMs: 2000, retries: 5 }, ...fields };
}

/** Rows of a table as sorted JSON texts; `where` limits them. */
async function tableRows(client: pg.ClientBase, table: string, where = 'TRUE'): Promise<string[]> {
  const { rows } = await client.query<{ row: string }>(`SELECT to_jsonb(t)::text AS row FROM ${table} AS t WHERE ${where}`);
  return rows.map(({ row }) => row).sort();
}

/**
 * Returns the row count and the md5 of the sorted JSON texts of a table's
 * rows. `userMap`, a join condition on the temporary table user_pseudonyms
 * (alias m), replaces each user_id with m.pseudonym.
 */
async function tableDigest(client: pg.ClientBase, table: string, where: string, userMap?: string): Promise<{ rows: number; md5: string }> {
  const row = userMap ? "to_jsonb(t) || jsonb_build_object('user_id', m.pseudonym)" : 'to_jsonb(t)';
  const join = userMap ? `JOIN user_pseudonyms AS m ON ${userMap}` : '';
  const { rows } = await client.query<{ rows: string; md5: string }>(
    `SELECT count(*) AS rows, md5(coalesce(string_agg(r.text, ',' ORDER BY r.text), '')) AS md5
     FROM (SELECT (${row})::text AS text FROM ${table} AS t ${join} WHERE ${where}) AS r`,
  );
  return { rows: Number(rows[0].rows), md5: rows[0].md5 };
}

/** The column whose time selects a row's key, as the tool's Coder profile uses it. */
function timeColumn(table: string): string {
  if (table.startsWith('template_usage_stats')) return 'start_time';
  return table === 'workspace_agent_stats' ? 'created_at' : 'session_started_at';
}

/**
 * Checks every old row of the enforced database against the control
 * database: the same rows, with each user id replaced by the pseudonym that
 * Node computes from the key of the row's time (the one key of policy none,
 * or each UTC day's key of policy daily). A value hashed twice, hashed with
 * another period's key, or skipped, differs.
 */
async function expectDirectPseudonyms(
  enforced: pg.Client,
  control: pg.Client,
  columnSet: ColumnSet,
  population: Population,
  range: { to: Date },
  policy: 'none' | 'daily' = 'none',
): Promise<void> {
  const users = population.users.map((user) => user.id);
  const entries: { user: string; day: string | null; pseudonym: string }[] = [];
  if (policy === 'none') {
    const pseudonym = pseudonymizer(await readNewestKey(enforced));
    for (const user of users) entries.push({ user, day: null, pseudonym: pseudonym(user) });
  } else {
    const { rows } = await enforced.query<{ day: string; key: Buffer }>(
      `SELECT to_char(valid_from AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, key FROM ${privacySchema}.keys WHERE policy = 'daily'`,
    );
    for (const { day, key } of rows) {
      const pseudonym = pseudonymizer(key);
      for (const user of users) entries.push({ user, day, pseudonym: pseudonym(user) });
    }
  }
  await control.query('CREATE TEMPORARY TABLE IF NOT EXISTS user_pseudonyms (real_id uuid NOT NULL, day date, pseudonym uuid NOT NULL)');
  await control.query('TRUNCATE user_pseudonyms');
  await control.query('INSERT INTO user_pseudonyms SELECT * FROM unnest($1::uuid[], $2::date[], $3::uuid[])', [
    entries.map((entry) => entry.user),
    entries.map((entry) => entry.day),
    entries.map((entry) => entry.pseudonym),
  ]);

  const before = `'${range.to.toISOString()}'`;
  for (const table of usageTables(columnSet)) {
    const time = timeColumn(table);
    const userMap = `m.real_id = t.user_id AND (m.day IS NULL OR m.day = (t.${time} AT TIME ZONE 'UTC')::date)`;
    const expected = await tableDigest(control, table, `t.${time} < ${before}`, userMap);
    const actual = await tableDigest(enforced, table, `t.${time} < ${before}`);
    expect({ table, ...actual }).toEqual({ table, ...expected });
  }
}

async function expectNoRealIds(client: pg.Client, columnSet: ColumnSet): Promise<void> {
  for (const table of usageTables(columnSet)) {
    expect({ table, realIds: await realIds(client, table) }).toEqual({ table, realIds: 0 });
  }
}

async function expectAggregatesEqual(enforced: pg.Client, control: pg.Client, columnSet: ColumnSet, range: { from: Date; to: Date }): Promise<void> {
  const protectedInsights = await readInsights(enforced, columnSet, range);
  const controlInsights = await readInsights(control, columnSet, range);
  expect(controlInsights.templates.length).toBeGreaterThan(0);
  expect(protectedInsights.templates).toEqual(controlInsights.templates);
  expect(protectedInsights.apps).toEqual(controlInsights.apps);
  expect(protectedInsights.sessions).toEqual(controlInsights.sessions);
}

/** Output and exit code of one run of the command line. */
interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the command line in-process; `typed` is text typed on a terminal, else stdin is no terminal. */
async function runTool(argv: string[], typed?: string): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const stdin = Object.assign(new PassThrough(), { isTTY: typed !== undefined });
  if (typed !== undefined) stdin.end(typed);
  const code = await runCli(argv, {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin,
    env: {},
    cwd: repositoryRoot,
    colour: false,
  });
  return { code, stdout, stderr };
}

/** Starts the built binary with pipes for stdin, stdout and stderr, so none of them is a terminal. */
function startBinary(args: string[]) {
  if (!existsSync(join(repositoryRoot, 'dist', 'cli', 'main.js'))) throw new Error('dist/cli/main.js is missing: run "npm run build" before the tests');
  const child = spawn(process.execPath, [binaryPath, ...args], { cwd: repositoryRoot, env: { PATH: process.env.PATH }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<CliRun & { signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code: code ?? -1, signal, stdout, stderr }));
  });
  return { child, exited };
}

/** Waits until `condition` holds, polling every 20 ms, for at most `timeoutMs`. */
async function waitFor(description: string, condition: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await condition()) return;
    await sleep(20);
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting until ${description}`);
}

async function rowsWalked(client: pg.Client, table: string): Promise<number> {
  return count(client, `SELECT coalesce(sum(rows_walked), 0) AS value FROM ${privacySchema}.backfill_progress WHERE table_name = $1`, [table]);
}

async function backfillLockHeld(client: pg.Client): Promise<boolean> {
  return scalar<boolean>(
    client,
    `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS value`,
    [advisoryLockClass, backfillLockObject],
  );
}

/** The columns and type casts of each walked table's key, to compare rows with a recorded position. */
const keyCasts: Record<string, { columns: string; casts: string[] }> = {
  template_usage_stats: { columns: '(start_time, template_id, user_id)', casts: ['timestamptz', 'uuid', 'uuid'] },
  workspace_agent_stats: { columns: '(created_at, id)', casts: ['timestamptz', 'uuid'] },
  workspace_app_stats: { columns: '(id)', casts: ['bigint'] },
};

function positionCondition(table: string, operator: '<=' | '>'): string {
  const key = keyCasts[table];
  const values = key.casts.map((cast, index) => `(p.position[${index + 1}])::${cast}`);
  return `${key.columns} ${operator} (SELECT ${values.join(', ')} FROM ${privacySchema}.backfill_progress AS p WHERE p.table_name = '${table}')`;
}

/** Checks that a walked table has rows with real ids only after its recorded position. */
async function expectPositionConsistent(client: pg.Client, table: string): Promise<void> {
  expect(await count(client, `SELECT count(*) AS value FROM ${table} WHERE ${positionCondition(table, '<=')} AND ${realIdCondition()}`)).toBe(0);
  expect(await count(client, `SELECT count(*) AS value FROM ${table} WHERE ${positionCondition(table, '>')} AND ${realIdCondition()}`)).toBeGreaterThan(0);
}

/** Counts the rows with real ids of each walked table. */
async function realIdsByTable(client: pg.Client): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const table of Object.keys(keyCasts)) counts[table] = await realIds(client, table);
  return counts;
}

/**
 * Checks the counters summed over every run: each row that had a real id
 * was changed or merged once, and each row of the raw tables, which are
 * updated in place, was walked once. Rollup rows are copied under their
 * pseudonym, and a copy that sorts after the batch is walked again, so
 * their walk counts more rows than the table holds.
 */
async function expectEveryRowOnce(client: pg.Client, realBefore: Record<string, number>): Promise<void> {
  const { rows } = await client.query<{ table_name: string; done: string }>(`SELECT table_name, rows_changed + rows_merged AS done FROM ${privacySchema}.backfill_progress`);
  const done = Object.fromEntries(rows.filter((row) => row.table_name in realBefore).map((row) => [row.table_name, Number(row.done)]));
  expect(done).toEqual(realBefore);
  for (const table of ['workspace_agent_stats', 'workspace_app_stats']) {
    expect({ table, walked: await rowsWalked(client, table) }).toEqual({ table, walked: await count(client, `SELECT count(*) AS value FROM ${table}`) });
  }
}

const seeds = new Map<string, Promise<Seed>>();

/** Returns the seed of a column set and size, created once per file. */
function seedFor(columnSet: ColumnSet, size: SeedSize): Promise<Seed> {
  const name = `${columnSet}-${size === largeSeed ? 'large' : 'small'}`;
  let seed = seeds.get(name);
  if (!seed) {
    seed = createSeed(`backfill_seed_${columnSet}`, columnSet, size);
    seeds.set(name, seed);
  }
  return seed;
}

describe.each(columnSets)('pseudonymize under load, %s column set', (columnSet) => {
  let seed: Seed;
  let enforced: pg.Client;
  let control: pg.Client;
  let result: BackfillCommandResult;
  let load: LoadResult;
  const batches: BackfillProgress[] = [];

  beforeAll(async () => {
    seed = await seedFor(columnSet, largeSeed);
    const database = await cloneDatabase(seed.database, `backfill_load_${columnSet}`);
    enforced = await connect(database);
    await applyMode(enforced, 'anonymize');

    const writers = { agentStats: await connect(database), appStats: [await connect(database), await connect(database)] as const, rollup: await connect(database) };
    const running = startCoderLoad({
      columnSet,
      workspaces: seed.population.workspaces.slice(0, 12),
      clients: writers,
      agentIntervalMs: 50,
      appIntervalMs: 100,
      rollupIntervalMs: 400,
      maxIterations: 10_000,
      maxDurationMs: 90_000,
    });
    await sleep(300);
    const startedAt = performance.now();
    result = await runBackfill(enforced, backfillSettings('pseudonymize', { onProgress: (progress) => batches.push(progress) }));
    const seconds = (performance.now() - startedAt) / 1000;
    load = await running.stop();

    const walked = result.tables.reduce((sum, table) => sum + table.rowsWalkedThisRun, 0);
    const during = load.records.filter((record) => record.startedAt >= startedAt && record.startedAt <= startedAt + seconds * 1000);
    const slowest = (['agent-stats', 'app-stats', 'rollup'] as const).map((kind) => {
      const durations = during.filter((record) => record.kind === kind).map((record) => record.endedAt - record.startedAt);
      return `${kind} ${durations.length} writes, slowest ${Math.max(...durations).toFixed(0)} ms`;
    });
    measurements.push(`${columnSet}: ${walked} rows walked in ${seconds.toFixed(1)} s (${Math.round(walked / seconds)} rows/s) under load; during it: ${slowest.join('; ')}`);
    control = await connect(seed.database);
  });

  afterAll(async () => {
    await close(control);
  });

  test('leaves no real user id', async () => {
    expect(result.outcome).toBe('finished');
    await expectNoRealIds(enforced, columnSet);
  });

  test('no write failed', () => {
    expect(load.records.length).toBeGreaterThan(0);
    expect(load.records.filter((record) => record.error !== undefined)).toEqual([]);
  });

  test('aggregates equal the control', async () => {
    await expectAggregatesEqual(enforced, control, columnSet, seed.range);
  });

  test('per-user insights disappear', async () => {
    const insights = await readInsights(enforced, columnSet, seed.range);
    expect((await readInsights(control, columnSet, seed.range)).userActivity.length).toBeGreaterThan(0);
    expect(insights.userActivity).toEqual([]);
  });

  test('rows equal direct pseudonyms', async () => {
    await expectDirectPseudonyms(enforced, control, columnSet, seed.population, seed.range);
  });

  test('batches are bounded', () => {
    const walkedPerBatch = batches.slice(1).map((progress, index) => (progress.table === batches[index].table ? progress.rowsWalked - batches[index].rowsWalked : 0));
    expect(Math.max(...walkedPerBatch)).toBeLessThanOrEqual(5000);
    expect(batches.filter((progress) => progress.finished).map((progress) => progress.table)).toEqual(['template_usage_stats', 'workspace_agent_stats', 'workspace_app_stats']);
  });

  test('status shows finished', async () => {
    const report = await readStatus(enforced, { schema: privacySchema, profile: 'coder', counts: false });
    for (const table of report.tables) {
      expect({ table: table.table, state: table.backfill?.state, action: table.backfill?.action, running: table.backfill?.running }).toEqual({
        table: table.table,
        state: 'finished',
        action: 'pseudonymize',
        running: false,
      });
    }
  });

  test('second run says finished', async () => {
    const before = await tableDigest(enforced, 'template_usage_stats', 'TRUE');
    const again = await runBackfill(enforced, backfillSettings('pseudonymize'));

    expect(again.outcome).toBe('already finished');
    expect(again.tables.map((table) => table.outcome)).toEqual(usageTables(columnSet).map(() => 'already finished'));
    expect(again.tables.find((table) => table.table === 'workspace_agent_stats')?.rowsChanged).toBe(
      result.tables.find((table) => table.table === 'workspace_agent_stats')?.rowsChanged,
    );
    expect(await tableDigest(enforced, 'template_usage_stats', 'TRUE')).toEqual(before);
  });
});

describe('interrupted runs', () => {
  test('kill -9 then resume', async () => {
    const seed = await seedFor('2026', smallSeed);
    const database = await cloneDatabase(seed.database, 'backfill_kill');
    const client = await connect(database);
    await applyMode(client, 'anonymize');
    const realBefore = await realIdsByTable(client);

    const run = startBinary(['backfill', '--existing', 'pseudonymize', '--yes', '--batch-size', '200', '--database-url', database.url]);
    await waitFor('three batches are recorded', async () => (await rowsWalked(client, 'template_usage_stats')) >= 600);
    run.child.kill('SIGKILL');
    const killed = await run.exited;
    await waitFor('the killed run releases its lock', async () => !(await backfillLockHeld(client)));

    expect(killed.signal).toBe('SIGKILL');
    expect(await count(client, `SELECT count(*) AS value FROM ${privacySchema}.backfill_progress WHERE finished_at IS NULL`)).toBeGreaterThan(0);
    expect(await realIds(client, 'workspace_agent_stats')).toBeGreaterThan(0);

    const resumed = startBinary(['backfill', '--existing', 'pseudonymize', '--yes', '--json', '--database-url', database.url]);
    const output = await resumed.exited;
    const result = JSON.parse(output.stdout) as BackfillCommandResult;
    expect(output.code).toBe(ExitCode.ok);
    expect(result.outcome).toBe('finished');
    expect(result.summary).toContain(`template_usage_stats: continues the interrupted pseudonymize after ${result.tables[0].rowsWalked - result.tables[0].rowsWalkedThisRun} row(s) walked.`);

    const control = await connect(seed.database);
    try {
      await expectNoRealIds(client, '2026');
      await expectEveryRowOnce(client, realBefore);
      await expectDirectPseudonyms(client, control, '2026', seed.population, seed.range);
      await expectAggregatesEqual(client, control, '2026', seed.range);
    } finally {
      await close(control);
    }
  });

  test('Ctrl-C stops after a batch', async () => {
    const seed = await seedFor('2025', smallSeed);
    const database = await cloneDatabase(seed.database, 'backfill_sigint');
    const client = await connect(database);
    await applyMode(client, 'anonymize');
    const realBefore = await realIdsByTable(client);

    const run = startBinary(['backfill', '--existing', 'pseudonymize', '--yes', '--batch-size', '100', '--database-url', database.url]);
    await waitFor('three batches are recorded', async () => (await rowsWalked(client, 'template_usage_stats')) >= 300);
    run.child.kill('SIGINT');
    const stopped = await run.exited;

    expect(stopped.code).toBe(ExitCode.aborted);
    expect(stopped.stderr).toContain('interrupted; stopping after the current batch');
    expect(stopped.stdout).toContain('interrupted after its last committed batch; run "insights-privacy backfill --existing pseudonymize" to continue.');
    expect(stopped.stdout).toContain('workspace_app_stats: not reached before the run stopped.');

    const walked = await rowsWalked(client, 'template_usage_stats');
    expect(walked % 100).toBe(0);
    expect(await scalar<Date | null>(client, `SELECT finished_at AS value FROM ${privacySchema}.backfill_progress WHERE table_name = 'template_usage_stats'`)).toBeNull();
    await expectPositionConsistent(client, 'template_usage_stats');

    const report = await readStatus(client, { schema: privacySchema, profile: 'coder', counts: false });
    expect(report.tables.find((table) => table.table === 'template_usage_stats')?.backfill).toMatchObject({ state: 'in progress', running: false, rowsWalked: walked });

    const resumed = await runBackfill(client, backfillSettings('pseudonymize'));
    expect(resumed.outcome).toBe('finished');
    expect(resumed.tables[0].rowsWalkedThisRun).toBe(resumed.tables[0].rowsWalked - walked);
    await expectNoRealIds(client, '2025');
    await expectEveryRowOnce(client, realBefore);
  });

  test('lost connection then resume', async () => {
    const seed = await seedFor('2025', smallSeed);
    const database = await cloneDatabase(seed.database, 'backfill_lost');
    const client = await connect(database);
    await applyMode(client, 'anonymize');
    const realBefore = await realIdsByTable(client);
    const pid = await scalar<number>(client, 'SELECT pg_backend_pid() AS value');
    const observer = await connect(database);

    let terminated: Promise<unknown> | undefined;
    const failed = await runBackfill(
      client,
      backfillSettings('pseudonymize', {
        batchSize: 500,
        onProgress: (progress) => {
          if (!terminated && progress.table === 'workspace_agent_stats' && progress.rowsWalked >= 1500) {
            terminated = observer.query('SELECT pg_terminate_backend($1)', [pid]);
          }
        },
      }),
    ).catch((error: unknown) => error);
    await terminated;

    expect(failed).toBeInstanceOf(ToolError);
    expect((failed as ToolError).code).toBe('CONNECTION_FAILED');
    expect((failed as ToolError).message).toContain('The backfill stopped in table workspace_agent_stats');
    expect((failed as ToolError).fix).toContain('continues after the last committed batch');
    await expectPositionConsistent(observer, 'workspace_agent_stats');

    await waitFor('the terminated session releases its lock', async () => !(await backfillLockHeld(observer)));
    const resumed = await runBackfill(observer, backfillSettings('pseudonymize', { batchSize: 500 }));
    expect(resumed.outcome).toBe('finished');
    expect(resumed.tables.map((table) => table.outcome)).toEqual(['already finished', 'finished', 'finished']);
    await expectNoRealIds(observer, '2025');
    await expectEveryRowOnce(observer, realBefore);
  });
});

describe('key periods', () => {
  test('rows get their day key', async () => {
    const seed = await seedFor('2026', smallSeed);
    const database = await cloneDatabase(seed.database, 'backfill_daily');
    const client = await connect(database);
    await applyEnforcement(client, { mode: 'anonymize', scope: 'source', rotate: 'daily', schema: privacySchema, profile: 'coder', dryRun: false, lock: { lockTimeoutMs: 2000, retries: 5 } });

    const result = await runBackfill(client, backfillSettings('pseudonymize'));

    expect(result.outcome).toBe('finished');
    const days = Math.ceil((seed.range.to.getTime() - seed.range.from.getTime()) / (24 * 3600_000));
    expect(await count(client, `SELECT count(*) AS value FROM ${privacySchema}.keys WHERE policy = 'daily'`)).toBeGreaterThanOrEqual(days);
    await expectNoRealIds(client, '2026');
    const control = await connect(seed.database);
    try {
      await expectDirectPseudonyms(client, control, '2026', seed.population, seed.range, 'daily');

      // A person counts once per key period, so active users match within one
      // UTC day; minutes match over the whole range.
      const day = new Date(Math.ceil(seed.range.from.getTime() / (24 * 3600_000)) * 24 * 3600_000);
      await expectAggregatesEqual(client, control, '2026', { from: day, to: new Date(day.getTime() + 24 * 3600_000) });
      const minutes = async (source: pg.Client) => (await readInsights(source, '2026', seed.range)).templates.map((template) => template.usageMinutes);
      expect(await minutes(client)).toEqual(await minutes(control));
    } finally {
      await close(control);
    }
  });
});

describe('locks', () => {
  test('locked table times out', async () => {
    const seed = await seedFor('2025', smallSeed);
    const database = await cloneDatabase(seed.database, 'backfill_locked');
    const client = await connect(database);
    await applyMode(client, 'anonymize');
    const before = await realIdsByTable(client);
    const holder = await connect(database);
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE workspace_agent_stats IN ACCESS EXCLUSIVE MODE');

    const startedAt = performance.now();
    const failed = await runBackfill(client, backfillSettings('purge', { lock: { lockTimeoutMs: 200, retries: 0 } })).catch((error: unknown) => error);
    const elapsed = performance.now() - startedAt;
    await holder.query('ROLLBACK');

    expect(failed).toBeInstanceOf(ToolError);
    expect((failed as ToolError).code).toBe('LOCK_TIMEOUT');
    expect((failed as ToolError).message).toContain('a lock was not granted within 200 ms');
    expect(elapsed).toBeLessThan(10_000);
    expect(await realIdsByTable(client)).toEqual(before);
  });

  test('batch retries after a lock wait', async () => {
    const seed = await seedFor('2025', smallSeed);
    const database = await cloneDatabase(seed.database, 'backfill_retry');
    const client = await connect(database);
    await applyMode(client, 'anonymize');
    const holder = await connect(database);
    const retries: string[] = [];
    let locked: Promise<unknown> | undefined;

    const result = await runBackfill(
      client,
      backfillSettings('pseudonymize', {
        batchSize: 500,
        lock: { lockTimeoutMs: 100, retries: 5, onRetry: (attempt, reason) => retries.push(`${attempt}: ${reason}`) },
        onProgress: (progress) => {
          // Another session takes the table for 600 ms while batches remain.
          if (locked || progress.table !== 'workspace_agent_stats' || progress.rowsWalked < 1000) return;
          locked = (async () => {
            await holder.query('BEGIN');
            await holder.query('LOCK TABLE workspace_agent_stats IN ACCESS EXCLUSIVE MODE');
            await sleep(600);
            await holder.query('ROLLBACK');
          })();
        },
      }),
    );
    await locked;

    expect(result.outcome).toBe('finished');
    expect(retries.length).toBeGreaterThan(0);
    expect(retries[0]).toBe('1: a lock was not granted within 100 ms');
    await expectNoRealIds(client, '2025');
  });
});

describe.each(columnSets)('purge, %s column set', (columnSet) => {
  test('keeps every pseudonymized row', async () => {
    const seed = await seedFor(columnSet, smallSeed);
    const database = await cloneDatabase(seed.database, `backfill_purge_${columnSet}`);
    const client = await connect(database);
    await applyMode(client, 'anonymize');

    const pseudonymized = new Map<string, string[]>();
    for (const table of usageTables(columnSet)) {
      pseudonymized.set(table, await tableRows(client, table, `NOT (${realIdCondition()})`));
      expect({ table, realIds: (await realIds(client, table)) > 0 }).toEqual({ table, realIds: true });
    }
    expect(pseudonymized.get('template_usage_stats')?.length).toBeGreaterThan(0);

    const result = await runBackfill(client, backfillSettings('purge', { batchSize: 2000 }));

    expect(result.outcome).toBe('finished');
    for (const table of usageTables(columnSet)) {
      expect({ table, rows: await tableRows(client, table) }).toEqual({ table, rows: pseudonymized.get(table) });
    }
    const children = result.tables.find((table) => table.table === 'template_usage_stats_session_apps');
    expect(children === undefined).toBe(columnSet === '2025');
    if (children) expect(children.rowsChanged).toBeGreaterThan(0);
  });

  test('works under disable', async () => {
    const seed = await seedFor(columnSet, smallSeed);
    const database = await cloneDatabase(seed.database, `backfill_purge_disable_${columnSet}`);
    const client = await connect(database);
    await applyMode(client, 'disable');
    const agentRows = await count(client, 'SELECT count(*) AS value FROM workspace_agent_stats');

    const result = await runBackfill(client, backfillSettings('purge'));

    expect(result.tables.find((table) => table.table === 'workspace_agent_stats')?.rowsChanged).toBe(agentRows);
    for (const table of usageTables(columnSet)) {
      expect({ table, rows: await count(client, `SELECT count(*) AS value FROM ${table}`) }).toEqual({ table, rows: 0 });
    }
  });
});

/** Inserts rows past the tool's triggers, as a superuser can, to build collisions the tool must merge. */
async function insertPastTriggers(client: pg.Client, columnSet: ColumnSet, write: () => Promise<void>): Promise<void> {
  const tables = usageTables(columnSet);
  for (const table of tables) await client.query(`ALTER TABLE ${table} DISABLE TRIGGER zz_insights_privacy`);
  try {
    await write();
  } finally {
    for (const table of tables) await client.query(`ALTER TABLE ${table} ENABLE ALWAYS TRIGGER zz_insights_privacy`);
  }
}

interface UsageRow {
  userId: string;
  start: Date;
  usageMins: number;
  latency: number | null;
  apps: Record<string, number> | null;
  /** 2025: ssh, sftp, reconnecting_pty, vscode, jetbrains minutes; 2026: session_usage_digest. */
  extra: number[];
}

describe.each(columnSets)('collisions, %s column set', (columnSet) => {
  const start = new Date(Math.floor((Date.now() - 5 * 24 * 3600_000) / bucketMs) * bucketMs);
  const bucket = (index: number) => new Date(start.getTime() + index * bucketMs);
  let client: pg.Client;
  let population: Population;
  let templateId: string;
  let userId: string;
  let pseudonym: string;
  let result: BackfillCommandResult;
  let twinSessionRowId: string;
  let plainSessionRowId: string;
  const twinSession = randomUUID();
  const plainSession = randomUUID();

  async function insertUsage(row: UsageRow): Promise<void> {
    const end = new Date(row.start.getTime() + bucketMs);
    const common = [row.start, end, templateId, row.userId, row.usageMins, row.latency, row.apps === null ? null : JSON.stringify(row.apps)];
    if (columnSet === '2025') {
      await client.query(
        `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, median_latency_ms, app_usage_mins, ssh_mins, sftp_mins, reconnecting_pty_mins, vscode_mins, jetbrains_mins)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
        [...common, ...row.extra],
      );
    } else {
      await client.query(
        `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, median_latency_ms, app_usage_mins, session_usage_digest)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [...common, ...row.extra],
      );
    }
  }

  async function insertSessionApp(start: Date, user: string, app: string, minutes: number): Promise<void> {
    await client.query('INSERT INTO template_usage_stats_session_apps (start_time, template_id, user_id, app_name, usage_mins) VALUES ($1, $2, $3, $4, $5)', [
      start,
      templateId,
      user,
      app,
      minutes,
    ]);
  }

  const extra = (values2025: number[], digest: number) => (columnSet === '2025' ? values2025 : [digest]);

  beforeAll(async () => {
    const database = await createTestDatabase(`backfill_twins_${columnSet}`);
    databases.push(database);
    client = await connect(database);
    await createCoderSchema(client, columnSet);
    population = await seedPopulation(client, { users: 2, templates: 1, workspacesPerUser: 1 });
    templateId = population.templates[0].id;
    userId = population.users[0].id;
    const [workspace] = population.workspaces;
    await applyMode(client, 'anonymize');
    pseudonym = pseudonymizer(await readNewestKey(client))(userId);

    await insertPastTriggers(client, columnSet, async () => {
      // Bucket 0: both rows with minutes that add up past 30; latency of the raw row, which has more minutes.
      await insertUsage({ userId, start: bucket(0), usageMins: 20, latency: 50, apps: { 'code-server': 10, jupyter: 25 }, extra: extra([5, 0, 3, 12, 0], 99) });
      await insertUsage({ userId: pseudonym, start: bucket(0), usageMins: 15, latency: 30, apps: { 'code-server': 25, '8080': 4 }, extra: extra([28, 1, 0, 10, 0], 7) });
      // Bucket 1: the raw row has more minutes but no latency, so the twin's stays; the raw row has no apps.
      await insertUsage({ userId, start: bucket(1), usageMins: 10, latency: null, apps: null, extra: extra([0, 0, 0, 10, 0], 1) });
      await insertUsage({ userId: pseudonym, start: bucket(1), usageMins: 5, latency: 40, apps: { jupyter: 5 }, extra: extra([0, 0, 0, 5, 0], 2) });
      // Bucket 2: a tie in minutes keeps the twin's latency.
      await insertUsage({ userId, start: bucket(2), usageMins: 7, latency: 80, apps: null, extra: extra([7, 0, 0, 0, 0], 3) });
      await insertUsage({ userId: pseudonym, start: bucket(2), usageMins: 7, latency: 60, apps: null, extra: extra([7, 0, 0, 0, 0], 4) });
      // Bucket 3: a raw row without a twin is copied as it is.
      await insertUsage({ userId, start: bucket(3), usageMins: 9, latency: 11, apps: { jupyter: 9 }, extra: extra([1, 2, 3, 4, 5], 5) });

      if (columnSet === '2026') {
        await insertSessionApp(bucket(0), userId, 'vscode', 12);
        await insertSessionApp(bucket(0), userId, 'ssh', 20);
        await insertSessionApp(bucket(0), pseudonym, 'ssh', 15);
        await insertSessionApp(bucket(0), pseudonym, 'zed', 3);
        await insertSessionApp(bucket(3), userId, 'vscode', 9);
      }

      const session = (user: string, sessionId: string, startMinute: number, endMinute: number, requests: number) =>
        client.query(
          `INSERT INTO workspace_app_stats (user_id, workspace_id, agent_id, access_method, slug_or_port, session_id, session_started_at, session_ended_at, requests)
           VALUES ($1, $2, $3, 'path', 'code-server', $4, $5, $6, $7) RETURNING id`,
          [user, workspace.id, workspace.agentId, sessionId, new Date(start.getTime() + startMinute * 60_000), new Date(start.getTime() + endMinute * 60_000), requests],
        );
      await session(userId, twinSession, 10, 30, 12);
      twinSessionRowId = (await session(pseudonym, twinSession, 8, 25, 9)).rows[0].id as string;
      plainSessionRowId = (await session(userId, plainSession, 40, 50, 6)).rows[0].id as string;
    });

    result = await runBackfill(client, backfillSettings('pseudonymize'));
  });

  async function usageRow(index: number) {
    const { rows } = await client.query(
      `SELECT user_id, usage_mins, median_latency_ms, app_usage_mins, end_time ${columnSet === '2025' ? ', ssh_mins, sftp_mins, reconnecting_pty_mins, vscode_mins, jetbrains_mins' : ', session_usage_digest'}
       FROM template_usage_stats WHERE start_time = $1`,
      [bucket(index)],
    );
    return rows;
  }

  test('minutes add up to 30', async () => {
    const rows = await usageRow(0);
    expect(rows).toHaveLength(1);
    expect(rows[0].user_id).toBe(pseudonym);
    expect(rows[0].usage_mins).toBe(30);
    expect(rows[0].end_time).toEqual(bucket(1));
    if (columnSet === '2025') {
      expect([rows[0].ssh_mins, rows[0].sftp_mins, rows[0].reconnecting_pty_mins, rows[0].vscode_mins, rows[0].jetbrains_mins]).toEqual([30, 1, 3, 22, 0]);
    } else {
      expect(rows[0].session_usage_digest).toBe('7');
    }
  });

  test('app minutes add up per app', async () => {
    expect((await usageRow(0))[0].app_usage_mins).toEqual({ '8080': 4, 'code-server': 30, jupyter: 25 });
    expect((await usageRow(1))[0].app_usage_mins).toEqual({ jupyter: 5 });
  });

  test('latency of the row with more minutes', async () => {
    expect((await usageRow(0))[0].median_latency_ms).toBe(50);
  });

  test('latency falls back when null', async () => {
    const rows = await usageRow(1);
    expect(rows[0].median_latency_ms).toBe(40);
    expect(rows[0].usage_mins).toBe(15);
  });

  test('latency tie keeps the twin', async () => {
    const rows = await usageRow(2);
    expect(rows[0].median_latency_ms).toBe(60);
    expect(rows[0].usage_mins).toBe(14);
  });

  test('row without twin is copied', async () => {
    const rows = await usageRow(3);
    expect(rows).toHaveLength(1);
    expect(rows[0].user_id).toBe(pseudonym);
    expect(rows[0].usage_mins).toBe(9);
    expect(rows[0].median_latency_ms).toBe(11);
    expect(rows[0].app_usage_mins).toEqual({ jupyter: 9 });
    if (columnSet === '2025') expect([rows[0].ssh_mins, rows[0].sftp_mins, rows[0].reconnecting_pty_mins, rows[0].vscode_mins, rows[0].jetbrains_mins]).toEqual([1, 2, 3, 4, 5]);
    else expect(rows[0].session_usage_digest).toBe('5');
  });

  test('child rows merge by key', async () => {
    if (columnSet === '2025') return;
    const { rows } = await client.query('SELECT start_time, user_id, app_name, usage_mins FROM template_usage_stats_session_apps ORDER BY start_time, app_name');
    expect(rows).toEqual([
      { start_time: bucket(0), user_id: pseudonym, app_name: 'ssh', usage_mins: 30 },
      { start_time: bucket(0), user_id: pseudonym, app_name: 'vscode', usage_mins: 12 },
      { start_time: bucket(0), user_id: pseudonym, app_name: 'zed', usage_mins: 3 },
      { start_time: bucket(3), user_id: pseudonym, app_name: 'vscode', usage_mins: 9 },
    ]);
  });

  test('session twins merge', async () => {
    const { rows } = await client.query('SELECT id, user_id, session_started_at, session_ended_at, requests FROM workspace_app_stats WHERE session_id = $1', [twinSession]);
    expect(rows).toEqual([
      {
        id: twinSessionRowId,
        user_id: pseudonym,
        session_started_at: new Date(start.getTime() + 8 * 60_000),
        session_ended_at: new Date(start.getTime() + 30 * 60_000),
        requests: 12,
      },
    ]);
  });

  test('session without twin converts in place', async () => {
    const { rows } = await client.query('SELECT id, user_id, requests FROM workspace_app_stats WHERE session_id = $1', [plainSession]);
    expect(rows).toEqual([{ id: plainSessionRowId, user_id: pseudonym, requests: 6 }]);
  });

  test('counts merges and copies', () => {
    const counters = Object.fromEntries(result.tables.map((table) => [table.table, [table.rowsChanged, table.rowsMerged]]));
    expect(counters.template_usage_stats).toEqual([1, 3]);
    expect(counters.workspace_app_stats).toEqual([1, 1]);
    if (columnSet === '2026') expect(counters.template_usage_stats_session_apps).toEqual([2, 1]);
  });

  test('no real id remains', async () => {
    await expectNoRealIds(client, columnSet);
  });
});

describe('command line', () => {
  let seed: Seed;
  let database: TestDatabase;
  let client: pg.Client;

  // Everything a failed command must leave alone: the tool's schema and
  // every usage row.
  async function snapshot(): Promise<string> {
    const parts = [await scalar<string>(client, "SELECT coalesce(to_regnamespace('insights_privacy')::text, 'none') AS value")];
    for (const table of usageTables('2025')) parts.push(await scalar<string>(client, `SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) AS value FROM ${table} AS t`));
    parts.push(await scalar<string>(client, "SELECT coalesce((SELECT mode FROM insights_privacy.state), 'off') AS value").catch(() => 'no state'));
    return parts.join('\n---\n');
  }

  beforeAll(async () => {
    seed = await seedFor('2025', smallSeed);
    database = await cloneDatabase(seed.database, 'backfill_cli');
    client = await connect(database);
  });

  const url = () => ['--database-url', database.url];

  test('backfill --help', async () => {
    const run = await runTool(['backfill', '--help']);
    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).toContain('--existing <choice>');
    expect(run.stdout).toContain('--batch-size <rows>');
    expect(run.stdout).toContain('insights-privacy backfill --existing purge --yes --batch-size 2000');
  });

  test('apply --help shows --existing', async () => {
    const run = await runTool(['apply', '--help']);
    expect(run.stdout).toContain('--existing <choice>');
    expect(run.stdout).toContain('insights-privacy apply --mode anonymize --existing pseudonymize');
  });

  test.each([
    [['backfill', '--existing', 'foo', '--yes'], '--existing must be one of keep, pseudonymize, purge, got "foo"'],
    [['apply', '--mode', 'anonymize', '--existing', 'foo', '--yes'], '--existing must be one of keep, pseudonymize, purge, got "foo"'],
    [['backfill', '--yes'], 'No --existing given'],
    [['backfill', '--existing', 'keep', '--yes'], 'backfill --existing keep has nothing to do'],
    [['backfill', '--existing', 'purge', '--batch-size', '0', '--yes'], '--batch-size must be an integer from 1 to 100000, got "0"'],
    [['backfill', '--existing', 'pseudonymize', '--yes'], 'No enforcement is installed in schema insights_privacy'],
    [['apply', '--mode', 'disable', '--existing', 'pseudonymize', '--yes'], '--existing pseudonymize needs --mode anonymize, not --mode disable'],
    [['apply', '--mode', 'off', '--existing', 'purge', '--yes'], '--existing purge does not work with --mode off'],
  ])('rejects %j', async (argv, message) => {
    const before = await snapshot();
    const run = await runTool([...argv, ...url()]);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain(message);
    expect(run.stderr).toContain('fix: ');
    expect(await snapshot()).toBe(before);
  });

  test('pseudonymize needs anonymize installed', async () => {
    expect((await runTool(['apply', '--mode', 'disable', '--yes', ...url()])).code).toBe(ExitCode.ok);
    const before = await snapshot();

    const run = await runTool(['backfill', '--existing', 'pseudonymize', '--yes', ...url()]);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('--existing pseudonymize needs --mode anonymize, not --mode disable');
    expect(await snapshot()).toBe(before);
  });

  test('prompt states keep and counts', async () => {
    const agentRows = await realIds(client, 'workspace_agent_stats');
    const run = await runTool(['apply', '--mode', 'anonymize', ...url()], 'n\n');

    expect(run.code).toBe(ExitCode.aborted);
    expect(run.stderr).toContain('Existing rows (stored before enforcement): keep.');
    expect(run.stderr).toContain(`workspace_agent_stats: ${agentRows} row(s) with real user ids.`);
    expect(run.stderr).toContain('count each person twice');
  });

  test('prompt states purge', async () => {
    const run = await runTool(['apply', '--mode', 'anonymize', '--existing', 'purge', ...url()], 'n\n');

    expect(run.code).toBe(ExitCode.aborted);
    expect(run.stderr).toContain('Existing rows (stored before enforcement): purge.');
    expect(run.stderr).toContain('deleted for good');
    expect(run.stderr).toContain(`workspace_app_stats: ${await realIds(client, 'workspace_app_stats')} row(s) with real user ids.`);
  });

  test('apply --existing pseudonymize runs it', async () => {
    const run = await runTool(['apply', '--mode', 'anonymize', '--existing', 'pseudonymize', '--yes', '--json', '--batch-size', '3000', ...url()]);
    const result = JSON.parse(run.stdout) as ApplyResult;

    expect(run.code).toBe(ExitCode.ok);
    expect(result.outcome).toBe('applied');
    expect(result.existing).toBe('pseudonymize');
    expect(result.backfill?.outcome).toBe('finished');
    expect(result.backfill?.batchSize).toBe(3000);
    await expectNoRealIds(client, '2025');
  });

  test('finished run says so', async () => {
    const run = await runTool(['backfill', '--existing', 'pseudonymize', ...url()]);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).toContain('had already finished; nothing changed.');
    expect(run.stdout).toContain('workspace_agent_stats: already finished;');
  });

  test('--json keeps stdout clean', async () => {
    const run = startBinary(['backfill', '--existing', 'purge', '--yes', '--json', ...url()]);
    const output = await run.exited;
    const result = JSON.parse(output.stdout) as BackfillCommandResult;

    expect(output.code).toBe(ExitCode.ok);
    expect(result.action).toBe('purge');
    expect(result.outcome).toBe('finished');
    expect(output.stderr).not.toContain('\u001b[');
    expect(output.stderr).not.toContain('░');
  });

  test('status lists each backfill', async () => {
    const run = await runTool(['status', '--no-counts', ...url()]);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).toMatch(/Backfill of workspace_agent_stats: purge finished \S+; \d+ rows walked, 0 deleted\./);
    expect(run.stdout).toMatch(/Backfill of workspace_app_stats: purge finished /);
  });

  test('status --json has backfill', async () => {
    const run = await runTool(['status', '--json', '--no-counts', ...url()]);
    const report = JSON.parse(run.stdout) as { tables: { table: string; backfill: { action: string; state: string } | null }[] };

    expect(report.tables.map((table) => [table.table, table.backfill?.action, table.backfill?.state])).toEqual(
      usageTables('2025').map((table) => [table, 'purge', 'finished']),
    );
  });
});
