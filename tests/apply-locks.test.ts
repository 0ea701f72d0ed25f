import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { insertAgentStats, type AgentStatRow, type FixtureWorkspace } from '../src/fixture/index.js';
import { applyMode, createCoderDatabase, type CoderDatabase } from './support/coder.js';

// How apply takes its locks while Coder writes: writers must not queue
// behind a lock request of apply that waits.

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
