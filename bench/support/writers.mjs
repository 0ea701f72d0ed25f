// Concurrent clients that write to a Coder-shaped database the way Coder
// does, each on its own connection, recording the latency of every
// statement or transaction, and every wait for a lock that pg_stat_activity
// shows for their sessions. On a busy machine a write can also take long
// without waiting for any lock, so the two are reported apart.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { insertAgentStats, rollupTemplateUsage, upsertAppStats } from '../../dist/fixture/index.js';
import { summarize } from './harness.mjs';

/**
 * The kinds of client:
 * - `agent-stats`: Coder's agent stats batcher, one INSERT … SELECT FROM unnest per flush;
 * - `app-stats`: the app stats collector, an upsert of open sessions and an
 *   update of workspaces.last_used_at in one transaction;
 * - `rollup`: the rollup into template_usage_stats;
 * - `users-read`: a read of one user by id, as every authenticated API request makes.
 */
export const writerKinds = ['agent-stats', 'app-stats', 'rollup', 'users-read'];

/**
 * Starts the clients named in `kinds` on database `url`, with workspaces
 * taken from `population`. `agentRows` is the number of rows per agent stats
 * flush; `intervals` the pause after each write of a kind, in milliseconds.
 * Returns an object whose stop() ends every loop after its current write
 * and returns the records.
 */
export async function startWriters(url, population, { kinds, agentRows = 100, appSessions = 200, intervals = {}, watchPid = null }) {
  const pause = { 'agent-stats': 1000, 'app-stats': 1000, rollup: 5000, 'users-read': 50, ...intervals };
  const records = [];
  const lockWaits = [];
  const lockHolds = [];
  const clients = [];
  const kindOfBackend = new Map();
  let stopped = false;

  async function open(kind) {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    // A failed write is recorded, as Coder logs it; an error event of an
    // idle client must not end the benchmark.
    client.on('error', () => undefined);
    clients.push(client);
    if (kind) {
      const { rows } = await client.query('SELECT pg_backend_pid() AS pid');
      kindOfBackend.set(rows[0].pid, kind);
    }
    return client;
  }

  async function loop(kind, write) {
    for (let iteration = 0; !stopped; iteration++) {
      const startedAt = performance.now();
      try {
        await write(iteration);
        records.push({ kind, startedAt, endedAt: performance.now() });
      } catch (error) {
        records.push({ kind, startedAt, endedAt: performance.now(), error: `${error.code ?? ''} ${error.message}`.trim() });
      }
      if (!stopped) await sleep(pause[kind]);
    }
  }

  const workspaces = population.workspaces;
  const loops = [];

  if (kinds.includes('agent-stats')) {
    const client = await open('agent-stats');
    loops.push(
      loop('agent-stats', async (iteration) => {
        const createdAt = new Date();
        const rows = Array.from({ length: agentRows }, (_, index) => {
          const workspace = workspaces[(iteration * agentRows + index) % workspaces.length];
          return {
            id: randomUUID(),
            createdAt,
            userId: workspace.ownerId,
            agentId: workspace.agentId,
            workspaceId: workspace.id,
            templateId: workspace.templateId,
            connectionCount: 1,
            sessionCounts: { [index % 2 === 0 ? 'vscode' : 'ssh']: 1 },
            connectionMedianLatencyMs: 10 + (index % 40),
          };
        });
        await insertAgentStats(client, '2026', rows);
      }),
    );
  }

  if (kinds.includes('app-stats')) {
    const client = await open('app-stats');
    const owned = workspaces.slice(0, Math.min(appSessions, workspaces.length));
    const sessions = owned.map((workspace) => ({ workspace, sessionId: randomUUID(), startedAt: new Date(), requests: 0 }));
    loops.push(
      loop('app-stats', async () => {
        const seenAt = new Date();
        const report = sessions.map((session) => {
          session.requests += 3;
          return {
            userId: session.workspace.ownerId,
            workspaceId: session.workspace.id,
            agentId: session.workspace.agentId,
            accessMethod: 'path',
            slugOrPort: 'code-server',
            sessionId: session.sessionId,
            sessionStartedAt: session.startedAt,
            sessionEndedAt: seenAt,
            requests: session.requests,
          };
        });
        try {
          await client.query('BEGIN');
          await upsertAppStats(client, report);
          await client.query('UPDATE workspaces SET last_used_at = $2 WHERE id = ANY($1::uuid[])', [owned.map((workspace) => workspace.id), seenAt]);
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw error;
        }
      }),
    );
  }

  if (kinds.includes('rollup')) {
    const client = await open('rollup');
    loops.push(loop('rollup', () => rollupTemplateUsage(client, '2026', new Date())));
  }

  if (kinds.includes('users-read')) {
    const client = await open('users-read');
    loops.push(
      loop('users-read', async (iteration) => {
        const user = workspaces[iteration % workspaces.length].ownerId;
        await client.query('SELECT id, email, username, deleted FROM users WHERE id = $1', [user]);
      }),
    );
  }

  const sampler = await open(null);
  loops.push(sampleActivity(sampler, { kindOfBackend, lockWaits, watchPid, lockHolds }, () => stopped));

  return {
    records,
    lockWaits,
    lockHolds,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      await Promise.all(clients.map((client) => client.end().catch(() => undefined)));
      return records;
    },
  };
}

/** Interval of the activity sampler, in milliseconds: a measured wait or hold may be this much shorter than the real one. */
const sampleMs = 20;

/** Matches the lock statements of the tool's transactions (lock-tables.sql, lock-for-batch.sql) and captures the mode. */
const lockStatement = /LOCK TABLE [\s\S]* IN (ACCESS EXCLUSIVE|SHARE ROW EXCLUSIVE) MODE NOWAIT/;

/**
 * Polls pg_stat_activity. For the writers' sessions it records each wait
 * for a heavyweight lock (wait_event_type Lock) as { kind, startedAt,
 * endedAt }, from the first sample that shows it to the first that does
 * not. For the session `watchPid`, the tool's, it records each transaction
 * that took table locks as { mode, startedAt, endedAt }: from the first
 * sample after its lock statement to the first sample after it ended, the
 * time it held the locks that writers wait for.
 */
async function sampleActivity(client, { kindOfBackend, lockWaits, watchPid, lockHolds }, isStopped) {
  const pids = [...kindOfBackend.keys(), ...(watchPid ? [watchPid] : [])];
  const waitingSince = new Map();
  let transaction = null;
  const closeTransaction = (now) => {
    if (transaction?.heldSince !== undefined) lockHolds.push({ mode: transaction.mode, startedAt: transaction.heldSince, endedAt: now });
    transaction = null;
  };

  while (!isStopped()) {
    const { rows } = await client.query(
      `SELECT pid, wait_event_type = 'Lock' AS waiting, xact_start::text AS xact_start, state, query FROM pg_stat_activity WHERE pid = ANY($1::int[])`,
      [pids],
    );
    const now = performance.now();
    for (const row of rows) {
      if (row.pid === watchPid) {
        if (transaction && transaction.xactStart !== row.xact_start) closeTransaction(now);
        if (!row.xact_start) continue;
        transaction ??= { xactStart: row.xact_start };
        const lock = row.state === 'active' ? lockStatement.exec(row.query) : null;
        if (lock) transaction.mode = lock[1];
        else if (transaction.mode && transaction.heldSince === undefined) transaction.heldSince = now;
        continue;
      }
      const since = waitingSince.get(row.pid);
      if (row.waiting && since === undefined) waitingSince.set(row.pid, now);
      if (!row.waiting && since !== undefined) {
        lockWaits.push({ kind: kindOfBackend.get(row.pid), startedAt: since, endedAt: now });
        waitingSince.delete(row.pid);
      }
    }
    await sleep(sampleMs);
  }
  const now = performance.now();
  closeTransaction(now);
  for (const [pid, since] of waitingSince) lockWaits.push({ kind: kindOfBackend.get(pid), startedAt: since, endedAt: now });
}

/** The longest time the watched session held table locks in `mode` within the interval from `from` to `to`, in milliseconds. */
export function longestHold(writers, mode, from, to) {
  const holds = writers.lockHolds.filter((hold) => hold.mode === mode && hold.endedAt >= from && hold.startedAt <= to);
  return holds.length > 0 ? Math.max(...holds.map((hold) => hold.endedAt - hold.startedAt)) : 0;
}

/**
 * Latency of the writes of one kind that overlap the interval from `from`
 * to `to` (performance.now() milliseconds): count, median, maximum,
 * failures, and the longest lock wait. A write that started before the
 * interval and waited into it counts, because that wait is what the
 * interval caused.
 */
export function latencyDuring(writers, kind, from, to) {
  const overlaps = (entry) => entry.kind === kind && entry.endedAt >= from && entry.startedAt <= to;
  const during = writers.records.filter(overlaps);
  const stats = summarize(during.map((record) => record.endedAt - record.startedAt));
  const waits = writers.lockWaits.filter(overlaps).map((wait) => wait.endedAt - wait.startedAt);
  const errors = during.filter((record) => record.error).map((record) => record.error);
  return {
    writes: during.length,
    medianMs: stats.median,
    maxMs: stats.max,
    maxLockWaitMs: waits.length > 0 ? Math.max(...waits) : 0,
    errors: errors.length,
    firstError: errors[0] ?? null,
  };
}
