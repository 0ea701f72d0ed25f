import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { applyEnforcement } from '../src/commands/apply.js';
import { ToolError } from '../src/core/errors.js';
import { insertAgentStats, rollupTemplateUsage, upsertAppStats, type AgentStatRow, type FixtureWorkspace } from '../src/fixture/index.js';
import { applyMode, createCoderDatabase, privacySchema, pseudonymPattern, type CoderDatabase } from './support/coder.js';

// How apply takes its locks and converts the cut-over's rows while Coder
// writes: writers must not queue behind a lock request of apply that waits,
// and the rows of the rollup window are converted in batches between two
// short transactions.

const minuteMs = 60_000;

function agentRow(workspace: FixtureWorkspace, createdAt: Date): AgentStatRow {
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
  };
}

async function connect(coder: CoderDatabase): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: coder.database.url });
  await client.connect();
  return client;
}

async function backendPid(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  return rows[0].pid;
}

async function count(client: pg.ClientBase, sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await client.query<{ count: string }>(sql, params);
  return Number(rows[0].count);
}

/** Waits until backend `pid` sleeps between two NOWAIT lock attempts, for at most `timeoutMs`. */
async function waitForLockRetry(observer: pg.Client, pid: number, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const sleeping = await count(observer, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep' AND query LIKE 'DO %'", [pid]);
    if (sleeping > 0) return;
    await sleep(10);
  }
  throw new Error(`Backend ${pid} did not retry a lock within ${timeoutMs} ms`);
}

describe('apply waiting for a table lock', () => {
  let coder: CoderDatabase;
  const clients: pg.Client[] = [];

  beforeAll(async () => {
    coder = await createCoderDatabase('apply_locks_wait', '2026');
  });

  afterAll(async () => {
    for (const client of clients) await client.end().catch(() => undefined);
    await coder?.close();
  });

  test('writers pass while apply waits', async () => {
    const [workspace] = coder.population.workspaces;
    const holder = await connect(coder);
    const applier = await connect(coder);
    const writer = await connect(coder);
    clients.push(holder, applier, writer);
    const applierPid = await backendPid(applier);

    // A long read of the raw tables, as Coder's rollup makes, keeps apply
    // from locking them.
    await holder.query('BEGIN');
    await holder.query('SELECT count(*) FROM workspace_agent_stats');
    let settled = false;
    const applying = applyMode(applier, 'anonymize').finally(() => {
      settled = true;
    });
    await waitForLockRetry(coder.client, applierPid);

    // Queued behind a waiting lock request of apply, these would wait until
    // the holder commits, which only happens after them.
    await writer.query("SET statement_timeout = '1s'");
    await insertAgentStats(writer, '2026', [agentRow(workspace, new Date())]);
    const { rows } = await writer.query<{ id: string }>('SELECT id FROM users WHERE id = $1', [workspace.ownerId]);
    const settledDuringWait = settled;
    await holder.query('COMMIT');
    const applied = await applying;

    expect(rows).toHaveLength(1);
    expect(settledDuringWait).toBe(false);
    expect(applied.outcome).toBe('applied');
    expect(await count(coder.client, 'SELECT count(*) FROM workspace_agent_stats')).toBe(1);
  });
});

describe('apply interrupted while converting', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('apply_locks_interrupted', '2026');
    const now = Date.now();
    const rows = coder.population.workspaces.map((workspace, index) => agentRow(workspace, new Date(now - (index + 1) * minuteMs)));
    await insertAgentStats(coder.client, '2026', rows);
    await rollupTemplateUsage(coder.client, '2026', new Date(now));
  });

  afterAll(async () => {
    await coder?.close();
  });

  test('keeps mode, rerun completes it', async () => {
    // A trigger of the test fails every update of agent stats, so the
    // conversion ahead of the last transaction fails on its first batch.
    await coder.client.query(`
      CREATE FUNCTION public.block_updates() RETURNS trigger LANGUAGE plpgsql AS $body$
      BEGIN RAISE EXCEPTION 'updates blocked by the test'; END
      $body$`);
    await coder.client.query('CREATE TRIGGER aa_block BEFORE UPDATE ON workspace_agent_stats FOR EACH ROW EXECUTE FUNCTION public.block_updates()');
    const settings = { mode: 'anonymize' as const, scope: 'source' as const, schema: privacySchema, profile: 'coder', dryRun: false, lock: { lockTimeoutMs: 2000, retries: 0 } };

    const failure = await applyEnforcement(coder.client, settings).catch((error: unknown) => error);
    const stateRows = await count(coder.client, `SELECT count(*) FROM ${privacySchema}.state`);
    const rawTriggers = await count(coder.client, "SELECT count(*) FROM pg_trigger WHERE tgname = 'zz_insights_privacy' AND tgrelid = 'workspace_agent_stats'::regclass");
    const rollupTriggers = await count(coder.client, "SELECT count(*) FROM pg_trigger WHERE tgname = 'zz_insights_privacy' AND tgrelid = 'template_usage_stats'::regclass");
    const realRows = await count(coder.client, "SELECT count(*) FROM workspace_agent_stats WHERE substr(user_id::text, 15, 1) <> '8'");
    await coder.client.query('DROP TRIGGER aa_block ON workspace_agent_stats');
    const rerun = await applyEnforcement(coder.client, settings);

    expect(failure).toBeInstanceOf(ToolError);
    expect((failure as ToolError).message).toContain('stopped while converting the rows of the rollup window');
    expect((failure as ToolError).message).toContain('updates blocked by the test');
    expect((failure as ToolError).fix).toContain('Run the same apply again');
    expect(stateRows).toBe(0);
    expect(rawTriggers).toBe(1);
    expect(rollupTriggers).toBe(0);
    expect(realRows).toBe(coder.population.workspaces.length);
    expect(rerun.outcome).toBe('applied');
    expect(await count(coder.client, "SELECT count(*) FROM workspace_agent_stats WHERE substr(user_id::text, 15, 1) <> '8'")).toBe(0);
    expect(await count(coder.client, "SELECT count(*) FROM template_usage_stats WHERE substr(user_id::text, 15, 1) <> '8'")).toBe(0);
    expect(await count(coder.client, `SELECT count(*) FROM ${privacySchema}.state WHERE mode = 'anonymize'`)).toBe(1);
  });
});

describe('apply while the rollup writes', () => {
  let coder: CoderDatabase;
  const clients: pg.Client[] = [];

  beforeAll(async () => {
    coder = await createCoderDatabase('apply_locks_rollup', '2026');
    const now = Date.now();
    const rows = coder.population.workspaces.map((workspace, index) => agentRow(workspace, new Date(now - (index + 1) * minuteMs)));
    await insertAgentStats(coder.client, '2026', rows);
    await rollupTemplateUsage(coder.client, '2026', new Date(now));
  });

  afterAll(async () => {
    for (const client of clients) await client.end().catch(() => undefined);
    await coder?.close();
  });

  test('leaves rollup rows to last transaction', async () => {
    const writer = await connect(coder);
    const applier = await connect(coder);
    clients.push(writer, applier);
    const applierPid = await backendPid(applier);
    const rollupRows = await count(coder.client, 'SELECT count(*) FROM template_usage_stats');

    // An open write to template_usage_stats, as a long rollup holds, keeps
    // the batches from locking the rollup tables.
    await writer.query('BEGIN');
    await writer.query('UPDATE template_usage_stats SET usage_mins = usage_mins WHERE false');
    const settings = { mode: 'anonymize' as const, scope: 'source' as const, schema: privacySchema, profile: 'coder', dryRun: false, lock: { lockTimeoutMs: 300, retries: 2 } };
    const applying = applyEnforcement(applier, settings);
    // Only the last transaction locks template_usage_stats in ACCESS EXCLUSIVE mode.
    await waitForQuery(coder.client, applierPid, '%template_usage_stats%IN ACCESS EXCLUSIVE MODE NOWAIT%');
    const realRollupRows = await count(coder.client, "SELECT count(*) FROM template_usage_stats WHERE substr(user_id::text, 15, 1) <> '8'");
    await writer.query('COMMIT');
    const applied = await applying;

    expect(rollupRows).toBeGreaterThan(0);
    expect(realRollupRows).toBe(rollupRows);
    expect(applied.outcome).toBe('applied');
    expect(await count(coder.client, "SELECT count(*) FROM template_usage_stats WHERE substr(user_id::text, 15, 1) <> '8'")).toBe(0);
    expect(await count(coder.client, "SELECT count(*) FROM template_usage_stats_session_apps WHERE substr(user_id::text, 15, 1) <> '8'")).toBe(0);
    expect(await count(coder.client, 'SELECT count(*) FROM template_usage_stats')).toBe(rollupRows);
  });
});

describe('apply blocked in its last transaction', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('apply_locks_last', '2026');
    const now = Date.now();
    const rows = coder.population.workspaces.map((workspace, index) => agentRow(workspace, new Date(now - (index + 1) * minuteMs)));
    await insertAgentStats(coder.client, '2026', rows);
    await rollupTemplateUsage(coder.client, '2026', new Date(now));
  });

  afterAll(async () => {
    await coder?.close();
  });

  test('says a rerun completes the switch', async () => {
    const reader = await connect(coder);
    const settings = { mode: 'anonymize' as const, scope: 'source' as const, schema: privacySchema, profile: 'coder', dryRun: false, lock: { lockTimeoutMs: 200, retries: 0 } };
    let failure: unknown;
    try {
      // A read of the rollup table keeps only the last transaction, the one
      // that locks every usage table, from its locks.
      await reader.query('BEGIN');
      await reader.query('SELECT count(*) FROM template_usage_stats');
      failure = await applyEnforcement(coder.client, settings).catch((error: unknown) => error);
    } finally {
      await reader.query('COMMIT');
      await reader.end();
    }
    const stateRows = await count(coder.client, `SELECT count(*) FROM ${privacySchema}.state`);
    const realAgentRows = await count(coder.client, "SELECT count(*) FROM workspace_agent_stats WHERE substr(user_id::text, 15, 1) <> '8'");
    const rerun = await applyEnforcement(coder.client, settings);

    expect(failure).toBeInstanceOf(ToolError);
    expect((failure as ToolError).code).toBe('LOCK_TIMEOUT');
    expect((failure as ToolError).message).toContain('stopped in its last transaction');
    expect((failure as ToolError).fix).toContain('Run the same apply again');
    expect(stateRows).toBe(0);
    expect(realAgentRows).toBe(0);
    expect(rerun.outcome).toBe('applied');
    expect(await count(coder.client, "SELECT count(*) FROM template_usage_stats WHERE substr(user_id::text, 15, 1) <> '8'")).toBe(0);
  });
});

describe('apply with app sessions only', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('apply_locks_sessions', '2026');
  });

  afterAll(async () => {
    await coder?.close();
  });

  test('converts sessions without agent stats', async () => {
    // Without agent stats or rollup rows the rollup window is empty, but an
    // open session is upserted again after apply and must meet its row.
    const [workspace] = coder.population.workspaces;
    const now = Date.now();
    const session = {
      userId: workspace.ownerId,
      workspaceId: workspace.id,
      agentId: workspace.agentId,
      accessMethod: 'path',
      slugOrPort: 'code-server',
      sessionId: randomUUID(),
      sessionStartedAt: new Date(now - 10 * minuteMs),
      sessionEndedAt: new Date(now - minuteMs),
      requests: 3,
    };
    await upsertAppStats(coder.client, [session]);

    await applyMode(coder.client, 'anonymize');
    await upsertAppStats(coder.client, [{ ...session, sessionEndedAt: new Date(now), requests: 9 }]);

    const { rows } = await coder.client.query<{ user_id: string; requests: number }>('SELECT user_id::text, requests FROM workspace_app_stats');
    expect(rows).toHaveLength(1);
    expect(rows[0].user_id).toMatch(pseudonymPattern);
    expect(rows[0].requests).toBe(9);
  });
});

/** Waits until backend `pid` runs a statement whose text matches the LIKE pattern, for at most `timeoutMs`. */
async function waitForQuery(observer: pg.Client, pid: number, pattern: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const running = await count(observer, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE $2", [pid, pattern]);
    if (running > 0) return;
    await sleep(10);
  }
  throw new Error(`Backend ${pid} did not run a statement like ${pattern} within ${timeoutMs} ms`);
}
