import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { applyEnforcement, type ApplySettings } from '../src/commands/apply.js';
import {
  buildPopulation,
  columnSets,
  createCoderSchema,
  generateTraffic,
  insertAgentStats,
  insertPopulation,
  readInsights,
  rollupTemplateUsage,
  upsertAppStats,
  writeTraffic,
  type AgentStatRow,
  type AppStatSession,
  type ColumnSet,
  type FixtureWorkspace,
  type Population,
} from '../src/fixture/index.js';
import type { Scope } from '../src/profiles/types.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { startCoderLoad, type LoadResult } from './support/traffic-load.js';

// These tests run Coder's write paths at the real current time, because the
// cut-over converts rows relative to the server clock (the rollup window and
// the last hour of app sessions).

const minuteMs = 60_000;
const bucketMs = 30 * minuteMs;
const privateSchema = 'insights_privacy';

/** SQL that is true when a uuid column contains a real id rather than a version 8 pseudonym. */
function realId(column: string): string {
  return `substr(${column}::text, 15, 1) <> '8'`;
}

function isPseudonym(id: string): boolean {
  return id.charAt(14) === '8';
}

function anonymize(scope: Scope): ApplySettings {
  return { mode: 'anonymize', scope, schema: privateSchema, profile: 'coder', dryRun: false, lock: { lockTimeoutMs: 2000, retries: 5 } };
}

function bucketStart(time: number): number {
  return Math.floor(time / bucketMs) * bucketMs;
}

const databases: TestDatabase[] = [];
const openClients: pg.Client[] = [];
/** Timings of the runs under load, printed once when the file ends. */
const loadTimings: string[] = [];

afterAll(async () => {
  if (loadTimings.length > 0) console.log(`Writers around apply (information only, no limit is checked):\n${loadTimings.join('\n')}`);
  for (const client of openClients) await client.end().catch(() => undefined);
  for (const database of databases) await database.drop();
});

interface CoderDatabase {
  database: TestDatabase;
  client: pg.Client;
}

/** Creates a database with Coder's tables and the population, and opens one client on it. */
async function coderDatabase(prefix: string, columnSet: ColumnSet, population: Population): Promise<CoderDatabase> {
  const database = await createTestDatabase(prefix);
  databases.push(database);
  const client = await connect(database);
  await createCoderSchema(client, columnSet);
  await insertPopulation(client, population);
  return { database, client };
}

async function connect(database: TestDatabase): Promise<pg.Client> {
  const client = await database.connect();
  openClients.push(client);
  return client;
}

async function count(client: pg.Client, sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await client.query<{ count: string }>(sql, params);
  return Number(rows[0].count);
}

async function pseudonymOf(client: pg.Client, id: string): Promise<string> {
  const { rows } = await client.query<{ id: string }>(`SELECT ${privateSchema}.pseudonym($1) AS id`, [id]);
  return rows[0].id;
}

function agentStat(workspace: FixtureWorkspace, createdAt: Date, fields: Partial<AgentStatRow> = {}): AgentStatRow {
  return {
    id: randomUUID(),
    createdAt,
    userId: workspace.ownerId,
    agentId: workspace.agentId,
    workspaceId: workspace.id,
    templateId: workspace.templateId,
    connectionCount: 1,
    sessionCounts: { vscode: 1 },
    connectionMedianLatencyMs: 20,
    ...fields,
  };
}

/** Returns one agent report per minute offset from `start`, each with an open vscode session. */
function agentMinutes(workspace: FixtureWorkspace, start: number, minutes: readonly number[]): AgentStatRow[] {
  return minutes.map((minute) => agentStat(workspace, new Date(start + minute * minuteMs + 10_000)));
}

function appSession(workspace: FixtureWorkspace, fields: Partial<AppStatSession> & Pick<AppStatSession, 'sessionStartedAt' | 'sessionEndedAt' | 'requests'>): AppStatSession {
  return {
    userId: workspace.ownerId,
    workspaceId: workspace.id,
    agentId: workspace.agentId,
    accessMethod: 'path',
    slugOrPort: 'code-server',
    sessionId: randomUUID(),
    ...fields,
  };
}

function sessionIds(reports: readonly (readonly AppStatSession[])[]): string[] {
  return reports.flatMap((report) => report.map((session) => session.sessionId));
}

/** Writes raw rows into a rollup table and its child past the tool's triggers, as a superuser can. */
async function insertPastTriggers(client: pg.Client, tables: readonly string[], write: () => Promise<void>): Promise<void> {
  for (const table of tables) await client.query(`ALTER TABLE ${table} DISABLE TRIGGER zz_insights_privacy`);
  try {
    await write();
  } finally {
    for (const table of tables) await client.query(`ALTER TABLE ${table} ENABLE ALWAYS TRIGGER zz_insights_privacy`);
  }
}

async function insertUsageRow(client: pg.Client, columnSet: ColumnSet, start: number, templateId: string, userId: string, usageMins: number): Promise<void> {
  const startTime = new Date(start);
  const endTime = new Date(start + bucketMs);
  if (columnSet === '2025') {
    await client.query(
      `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, ssh_mins, sftp_mins, reconnecting_pty_mins, vscode_mins, jetbrains_mins)
       VALUES ($1, $2, $3, $4, $5, 0, 0, 0, $5, 0)`,
      [startTime, endTime, templateId, userId, usageMins],
    );
    return;
  }
  await client.query(
    `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, session_usage_digest)
     VALUES ($1, $2, $3, $4, $5, 0)`,
    [startTime, endTime, templateId, userId, usageMins],
  );
}

const scopes: readonly Scope[] = ['source', 'rollup'];
const scopeCases = scopes.flatMap((scope) => columnSets.map((columnSet) => [scope, columnSet] as const));

describe.each(scopeCases)('apply between writes, scope %s, %s column set', (scope, columnSet) => {
  const population = buildPopulation({ users: 8, templates: 2, workspacesPerUser: 1 });
  let enforced: pg.Client;
  let control: pg.Client;

  // Traffic ends one minute before the test. Apply comes in the middle of a
  // half-hour bucket, 5 to 35 minutes before that end, and traffic starts 25
  // minutes before apply, so all of it is less than an hour old. The rollup
  // window starts at least one hour before the newest bucket, so it always
  // covers the traffic.
  const end = Date.now() - minuteMs;
  const switchAt = bucketStart(end - 20 * minuteMs) + 15 * minuteMs;
  const start = switchAt - 25 * minuteMs;
  const range = { from: new Date(bucketStart(start)), to: new Date(bucketStart(end) + bucketMs) };
  const trafficOptions = { agentReportSeconds: 60, appReportSeconds: 120 };
  const before = generateTraffic(population, { from: new Date(start), to: new Date(switchAt), seed: 11, ...trafficOptions });
  const after = generateTraffic(population, { from: new Date(switchAt), to: new Date(end), seed: 12, ...trafficOptions });

  // One agent reports just before and just after apply, so one bucket
  // contains rows of one user from both sides of apply.
  const [firstWorkspace] = population.workspaces;
  const boundaryBefore = agentMinutes(firstWorkspace, switchAt, [-3, -2, -1]);
  const boundaryAfter = agentMinutes(firstWorkspace, switchAt, [0, 1, 2]);

  // Sessions that stay open across apply: reported before it, and reported
  // again after it with the same ids, a later end and more requests.
  const openWorkspaces = population.workspaces.slice(0, 3);
  const openBefore = openWorkspaces.map((workspace) =>
    appSession(workspace, { sessionStartedAt: new Date(start + 5 * minuteMs), sessionEndedAt: new Date(switchAt - minuteMs), requests: 10 }),
  );
  const openAfter = openBefore.map((session) => ({ ...session, sessionEndedAt: new Date(end), requests: 40 }));
  const allSessionIds = new Set([...sessionIds(before.appStatReports), ...sessionIds(after.appStatReports), ...openBefore.map((session) => session.sessionId)]);
  const afterAgentIds = [...after.agentStats, ...boundaryAfter].map((row) => row.id);
  const agentRowCount = before.agentStats.length + boundaryBefore.length + afterAgentIds.length;

  beforeAll(async () => {
    enforced = (await coderDatabase('cutover_enforced', columnSet, population)).client;
    control = (await coderDatabase('cutover_control', columnSet, population)).client;

    for (const client of [enforced, control]) {
      await writeTraffic(client, columnSet, before);
      await insertAgentStats(client, columnSet, boundaryBefore);
      await upsertAppStats(client, openBefore);
      await rollupTemplateUsage(client, columnSet);
    }

    await applyEnforcement(enforced, anonymize(scope));

    for (const client of [enforced, control]) {
      await writeTraffic(client, columnSet, after);
      await insertAgentStats(client, columnSet, boundaryAfter);
      await upsertAppStats(client, openAfter);
    }
    await rollupTemplateUsage(control, columnSet);
  });

  // The tests below read what this rollup stored.
  test('rollup after apply succeeds', async () => {
    await expect(rollupTemplateUsage(enforced, columnSet)).resolves.toHaveProperty('statsRows');
  });

  test('rollup rows are pseudonymized', async () => {
    expect(await count(enforced, `SELECT count(*) FROM template_usage_stats WHERE ${realId('user_id')}`)).toBe(0);
    expect(await count(enforced, 'SELECT count(*) FROM template_usage_stats')).toBeGreaterThan(0);
    if (columnSet === '2026') {
      expect(await count(enforced, `SELECT count(*) FROM template_usage_stats_session_apps WHERE ${realId('user_id')}`)).toBe(0);
    }
  });

  test('open sessions stay one row each', async () => {
    for (const session of openAfter) {
      const { rows } = await enforced.query<{ user_id: string; session_ended_at: Date; requests: number }>(
        'SELECT user_id, session_ended_at, requests FROM workspace_app_stats WHERE session_id = $1',
        [session.sessionId],
      );
      expect(rows).toHaveLength(1);
      expect(rows[0].session_ended_at).toEqual(session.sessionEndedAt);
      expect(rows[0].requests).toBe(session.requests);
      expect(isPseudonym(rows[0].user_id)).toBe(scope === 'source');
    }
  });

  test('every session is stored once', async () => {
    expect(await count(enforced, 'SELECT count(*) FROM workspace_app_stats')).toBe(allSessionIds.size);
    expect(await count(enforced, 'SELECT count(DISTINCT (agent_id, session_id)) FROM workspace_app_stats')).toBe(allSessionIds.size);
  });

  test('raw rows match the scope', async () => {
    const agentRealIds = await count(enforced, `SELECT count(*) FROM workspace_agent_stats WHERE id = ANY($1::uuid[]) AND ${realId('user_id')}`, [afterAgentIds]);
    const appRealIds = await count(enforced, `SELECT count(*) FROM workspace_app_stats WHERE ${realId('user_id')}`);
    const agentRows = await count(enforced, 'SELECT count(*) FROM workspace_agent_stats');

    expect(agentRows).toBe(agentRowCount);
    if (scope === 'source') {
      expect(agentRealIds).toBe(0);
      expect(appRealIds).toBe(0);
      expect(await count(enforced, `SELECT count(*) FROM workspace_agent_stats WHERE ${realId('user_id')}`)).toBe(0);
    } else {
      expect(agentRealIds).toBe(afterAgentIds.length);
      expect(appRealIds).toBe(allSessionIds.size);
    }
  });

  test('aggregates equal the control', async () => {
    const protectedInsights = await readInsights(enforced, columnSet, range);
    const controlInsights = await readInsights(control, columnSet, range);

    expect(controlInsights.templates.some((template) => template.activeUsers > 0)).toBe(true);
    expect(protectedInsights.templates).toEqual(controlInsights.templates);
    expect(protectedInsights.apps).toEqual(controlInsights.apps);
    expect(protectedInsights.sessions).toEqual(controlInsights.sessions);
  });

  test('per-user insights disappear', async () => {
    const protectedInsights = await readInsights(enforced, columnSet, range);
    const controlInsights = await readInsights(control, columnSet, range);

    expect(controlInsights.userActivity.length).toBeGreaterThan(0);
    expect(protectedInsights.userActivity).toEqual([]);
  });
});

describe.each(columnSets)('pseudonymized twins, %s column set', (columnSet) => {
  const population = buildPopulation({ users: 1, templates: 1, workspacesPerUser: 1 });
  const [workspace] = population.workspaces;
  const userId = population.users[0].id;
  // A complete half hour in the past, inside the rollup window.
  const bucket = bucketStart(Date.now()) - bucketMs;
  const rollupTables = columnSet === '2026' ? ['template_usage_stats', 'template_usage_stats_session_apps'] : ['template_usage_stats'];

  let client: pg.Client;
  let pseudonym: string;
  let twinRowId: string;
  const raw = appSession(workspace, { sessionStartedAt: new Date(bucket - 20 * minuteMs), sessionEndedAt: new Date(bucket - 10 * minuteMs), requests: 12 });
  const twin = { ...raw, sessionStartedAt: new Date(bucket - 28 * minuteMs), sessionEndedAt: new Date(bucket - 15 * minuteMs), requests: 9 };

  // Scope rollup leaves the raw tables alone, so switching to scope source
  // meets whatever they hold. Two twins are built here past the tool: an app
  // session stored under both the real id and its pseudonym, and a rollup
  // bucket with a raw row next to its pseudonymized row.
  beforeAll(async () => {
    client = (await coderDatabase('cutover_twins', columnSet, population)).client;
    await insertAgentStats(client, columnSet, agentMinutes(workspace, bucket, [1, 2, 3, 4, 5]));
    await applyEnforcement(client, anonymize('rollup'));
    await rollupTemplateUsage(client, columnSet);
    pseudonym = await pseudonymOf(client, userId);

    await insertPastTriggers(client, rollupTables, async () => {
      await insertUsageRow(client, columnSet, bucket, workspace.templateId, userId, 99);
      if (columnSet === '2026') {
        await client.query(
          `INSERT INTO template_usage_stats_session_apps (start_time, template_id, user_id, app_name, usage_mins) VALUES ($1, $2, $3, 'ssh', 7)`,
          [new Date(bucket), workspace.templateId, userId],
        );
      }
    });

    await upsertAppStats(client, [raw]);
    // The foreign key to users rejects a pseudonym while scope rollup keeps
    // it; replica mode skips foreign key checks for a superuser.
    await client.query('BEGIN');
    await client.query("SET LOCAL session_replication_role = 'replica'");
    await upsertAppStats(client, [{ ...twin, userId: pseudonym }]);
    await client.query('COMMIT');
    const { rows } = await client.query<{ id: string }>('SELECT id FROM workspace_app_stats WHERE user_id = $1', [pseudonym]);
    twinRowId = rows[0].id;

    await applyEnforcement(client, anonymize('source'));
  });

  test('app session twins merge into one row', async () => {
    const { rows } = await client.query<{ id: string; user_id: string; session_started_at: Date; session_ended_at: Date; requests: number }>(
      'SELECT id, user_id, session_started_at, session_ended_at, requests FROM workspace_app_stats WHERE session_id = $1',
      [raw.sessionId],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0].id).toBe(twinRowId);
    expect(rows[0].user_id).toBe(pseudonym);
    expect(rows[0].session_started_at).toEqual(twin.sessionStartedAt);
    expect(rows[0].session_ended_at).toEqual(raw.sessionEndedAt);
    expect(rows[0].requests).toBe(raw.requests);
  });

  test('raw bucket yields to its twin', async () => {
    const { rows } = await client.query<{ user_id: string; usage_mins: number }>('SELECT user_id, usage_mins FROM template_usage_stats WHERE start_time = $1', [new Date(bucket)]);
    expect(rows).toHaveLength(1);
    expect(rows[0].user_id).toBe(pseudonym);
    expect(rows[0].usage_mins).toBe(5);
    for (const table of rollupTables) {
      expect(await count(client, `SELECT count(*) FROM ${table} WHERE ${realId('user_id')}`)).toBe(0);
    }
  });

  test('next rollup recomputes the twin bucket', async () => {
    await insertAgentStats(client, columnSet, agentMinutes(workspace, bucket, [6, 7, 8]));
    await rollupTemplateUsage(client, columnSet);

    const { rows } = await client.query<{ user_id: string; usage_mins: number }>('SELECT user_id, usage_mins FROM template_usage_stats WHERE start_time = $1', [new Date(bucket)]);
    expect(rows).toHaveLength(1);
    expect(rows[0].user_id).toBe(pseudonym);
    expect(rows[0].usage_mins).toBe(8);

    const apps = await client.query<{ app_name: string; usage_mins: number }>(
      columnSet === '2026'
        ? 'SELECT app_name, usage_mins FROM template_usage_stats_session_apps WHERE start_time = $1 ORDER BY app_name'
        : "SELECT 'vscode' AS app_name, vscode_mins AS usage_mins FROM template_usage_stats WHERE start_time = $1",
      [new Date(bucket)],
    );
    expect(apps.rows).toEqual([{ app_name: 'vscode', usage_mins: 8 }]);
  });
});

describe.each(columnSets)('rollup without cut-over, %s column set', (columnSet) => {
  // Proves that the cases above can fail: a real id and its pseudonym in the
  // raw rows of one bucket become two source rows for one key once the
  // trigger on template_usage_stats maps both to the pseudonym.
  test('mixed ids fail the upsert', async () => {
    const population = buildPopulation({ users: 1, templates: 1, workspacesPerUser: 1 });
    const [workspace] = population.workspaces;
    const bucket = bucketStart(Date.now()) - bucketMs;
    const { client } = await coderDatabase('cutover_mixed', columnSet, population);

    // The rollup table stays empty until the end, so the second source row
    // always meets the row that the first one inserted. Against a stored
    // row, an update whose WHERE finds nothing changed does not count as
    // affecting it, so the outcome would depend on the order of the rows.
    await insertAgentStats(client, columnSet, agentMinutes(workspace, bucket, [1, 2, 3]));
    await applyEnforcement(client, anonymize('rollup'));

    // Rows written after apply carry the pseudonym, as scope source would
    // store them, but the rows written before it were not converted.
    const pseudonym = await pseudonymOf(client, workspace.ownerId);
    await insertAgentStats(
      client,
      columnSet,
      agentMinutes(workspace, bucket, [4, 5]).map((row) => ({ ...row, userId: pseudonym })),
    );

    await expect(rollupTemplateUsage(client, columnSet)).rejects.toHaveProperty('code', '21000');
  });
});

/** Waits until the backend `pid` waits for a lock, for at most `timeoutMs`. */
async function waitForLockWait(observer: pg.Client, pid: number, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const waiting = await count(observer, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'", [pid]);
    if (waiting > 0) return;
    await sleep(10);
  }
  throw new Error(`Backend ${pid} did not wait for a lock within ${timeoutMs} ms`);
}

async function backendPid(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  return rows[0].pid;
}

interface QueueCase {
  /** Scope applied before the interleaving starts; null means no enforcement yet. */
  initial: Scope | null;
  target: Scope;
  /** Whether the app stats transaction stays open past deadlock_timeout after the rollup queues. */
  outwaitDeadlockCheck: boolean;
}

const queueCases: [string, QueueCase][] = [
  ['first apply, scope source', { initial: null, target: 'source', outwaitDeadlockCheck: false }],
  ['first apply, scope rollup', { initial: null, target: 'rollup', outwaitDeadlockCheck: false }],
  ['switch from scope rollup to source', { initial: 'rollup', target: 'source', outwaitDeadlockCheck: false }],
  ['first apply, scope source, long writer', { initial: null, target: 'source', outwaitDeadlockCheck: true }],
];

// A fixed interleaving: an app stats transaction is open when apply starts,
// so apply holds its first table locks and waits for the last one, and the
// rollup starts in that moment. Coder's rollup reads the raw tables before it
// writes template_usage_stats, so it then waits for apply. Whatever apply
// locks after that must not make either of them fail.
describe.each(queueCases)('rollup queued behind apply, %s', (_label, queueCase) => {
  test('apply and rollup both succeed', async () => {
    const columnSet: ColumnSet = '2026';
    const population = buildPopulation({ users: 2, templates: 1, workspacesPerUser: 1 });
    const [workspace] = population.workspaces;
    const { database, client: observer } = await coderDatabase('cutover_queue', columnSet, population);
    const writer = await connect(database);
    const applier = await connect(database);
    const roller = await connect(database);
    const deadlockTimeoutMs = await count(observer, "SELECT setting::integer AS count FROM pg_settings WHERE name = 'deadlock_timeout'");

    const now = Date.now();
    await insertAgentStats(observer, columnSet, [agentStat(workspace, new Date(now - 5 * minuteMs))]);
    await rollupTemplateUsage(observer, columnSet);
    if (queueCase.initial) await applyEnforcement(applier, anonymize(queueCase.initial));

    // A client runs one query at a time, so the ids are read before the
    // clients get busy.
    const applierPid = await backendPid(applier);
    const rollerPid = await backendPid(roller);

    await writer.query('BEGIN');
    await upsertAppStats(writer, [appSession(workspace, { sessionStartedAt: new Date(now - 2 * minuteMs), sessionEndedAt: new Date(now), requests: 3 })]);
    const applying = applyEnforcement(applier, anonymize(queueCase.target));
    await waitForLockWait(observer, applierPid);
    const rolling = rollupTemplateUsage(roller, columnSet, new Date());
    await waitForLockWait(observer, rollerPid);

    // PostgreSQL checks a waiting backend for a deadlock once, after
    // deadlock_timeout. Past that check the rollup stays queued, and only
    // apply can still detect a deadlock.
    if (queueCase.outwaitDeadlockCheck) await sleep(deadlockTimeoutMs + 500);
    await writer.query('UPDATE workspaces SET last_used_at = now() WHERE id = $1', [workspace.id]);
    await writer.query('COMMIT');
    const [applied, rolled] = await Promise.allSettled([applying, rolling]);

    expect(rolled).toEqual(expect.objectContaining({ status: 'fulfilled' }));
    expect(applied).toEqual(expect.objectContaining({ status: 'fulfilled' }));
  });
});

interface LoadRun {
  load: LoadResult;
  applyStartedAt: number;
  applyReturnedAt: number;
  client: pg.Client;
}

describe.each(scopeCases)('apply under load, scope %s, %s column set', (scope, columnSet) => {
  const population = buildPopulation({ users: 16, templates: 2, workspacesPerUser: 1 });
  let run: LoadRun;

  // Four connections write for about 1.5 s, apply runs on a fifth, and the
  // writers go on for about 1.5 s after it returns.
  beforeAll(async () => {
    const { database, client } = await coderDatabase('cutover_load', columnSet, population);
    const applier = await connect(database);
    const clients = {
      agentStats: await connect(database),
      appStats: [await connect(database), await connect(database)] as const,
      rollup: await connect(database),
    };

    const running = startCoderLoad({
      columnSet,
      workspaces: population.workspaces,
      clients,
      agentIntervalMs: 50,
      appIntervalMs: 60,
      rollupIntervalMs: 200,
      maxIterations: 400,
      maxDurationMs: 20_000,
    });
    await sleep(1500);
    const applyStartedAt = performance.now();
    await applyEnforcement(applier, anonymize(scope));
    const applyReturnedAt = performance.now();
    await sleep(1500);
    const load = await running.stop();
    run = { load, applyStartedAt, applyReturnedAt, client };

    const aroundApply = load.records.filter((record) => record.endedAt >= applyStartedAt && record.startedAt <= applyReturnedAt);
    const longest = Math.max(0, ...aroundApply.map((record) => record.endedAt - record.startedAt));
    const rollupsDuring = aroundApply.filter((record) => record.kind === 'rollup').length;
    loadTimings.push(
      `scope ${scope}, ${columnSet} column set: apply took ${Math.round(applyReturnedAt - applyStartedAt)} ms, ` +
        `the longest writer statement overlapping it ${Math.round(longest)} ms, rollups overlapping it ${rollupsDuring}`,
    );
  });

  test('no write fails', () => {
    const errors = run.load.records.filter((record) => record.error !== undefined).map((record) => `${record.kind}: ${record.error}`);
    expect(errors).toEqual([]);
  });

  test('rollup runs before and after apply', () => {
    const rollups = run.load.records.filter((record) => record.kind === 'rollup' && record.error === undefined);
    expect(rollups.filter((record) => record.endedAt < run.applyStartedAt).length).toBeGreaterThan(0);
    expect(rollups.filter((record) => record.startedAt > run.applyReturnedAt).length).toBeGreaterThan(0);
  });

  test('every agent row is stored', async () => {
    const ids = run.load.agentRows.map((row) => row.id);
    expect(await count(run.client, 'SELECT count(*) FROM workspace_agent_stats')).toBe(ids.length);
    expect(await count(run.client, 'SELECT count(*) FROM workspace_agent_stats WHERE id = ANY($1::uuid[])', [ids])).toBe(ids.length);
  });

  test('every session is one row with its last report', async () => {
    const { rows } = await run.client.query<{ session_id: string; session_ended_at: Date; requests: number }>(
      'SELECT session_id, session_ended_at, requests FROM workspace_app_stats',
    );
    expect(rows).toHaveLength(run.load.sessions.size);
    for (const row of rows) {
      const written = run.load.sessions.get(row.session_id);
      expect(written?.report.sessionEndedAt).toEqual(row.session_ended_at);
      expect(written?.report.requests).toBe(row.requests);
    }
  });

  test('no session has two rows', async () => {
    expect(await count(run.client, 'SELECT count(*) FROM (SELECT 1 FROM workspace_app_stats GROUP BY agent_id, session_id HAVING count(*) > 1) AS twins')).toBe(0);
  });

  test('rows after apply match the scope', async () => {
    const afterApply = run.load.agentRows.filter((row) => row.startedAt > run.applyReturnedAt).map((row) => row.id);
    const sessionsAfterApply = [...run.load.sessions.values()].filter((session) => session.startedAt > run.applyReturnedAt).map((session) => session.report.sessionId);
    expect(afterApply.length).toBeGreaterThan(0);
    expect(sessionsAfterApply.length).toBeGreaterThan(0);

    const agentPseudonyms = await count(run.client, `SELECT count(*) FROM workspace_agent_stats WHERE id = ANY($1::uuid[]) AND NOT ${realId('user_id')}`, [afterApply]);
    const sessionPseudonyms = await count(run.client, `SELECT count(*) FROM workspace_app_stats WHERE session_id = ANY($1::uuid[]) AND NOT ${realId('user_id')}`, [sessionsAfterApply]);
    expect(agentPseudonyms).toBe(scope === 'source' ? afterApply.length : 0);
    expect(sessionPseudonyms).toBe(scope === 'source' ? sessionsAfterApply.length : 0);
  });

  test('rollup window holds only pseudonyms', async () => {
    await expect(rollupTemplateUsage(run.client, columnSet, new Date())).resolves.toHaveProperty('statsRows');
    const windowStart = "(SELECT date_trunc('hour', max(start_time) - interval '1 hour') FROM template_usage_stats)";

    expect(await count(run.client, 'SELECT count(*) FROM template_usage_stats')).toBeGreaterThan(0);
    expect(await count(run.client, `SELECT count(*) FROM template_usage_stats WHERE start_time >= ${windowStart} AND ${realId('user_id')}`)).toBe(0);
    if (scope === 'source') {
      expect(await count(run.client, `SELECT count(*) FROM workspace_agent_stats WHERE created_at >= ${windowStart} AND ${realId('user_id')}`)).toBe(0);
      expect(await count(run.client, `SELECT count(*) FROM workspace_app_stats WHERE session_ended_at >= ${windowStart} AND ${realId('user_id')}`)).toBe(0);
    }
  });
});
