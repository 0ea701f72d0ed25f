import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import {
  insertAgentStats,
  rollupTemplateUsage,
  upsertAppStats,
  type AgentStatRow,
  type AppStatSession,
  type ColumnSet,
  type FixtureWorkspace,
} from '../../src/fixture/index.js';

/** The kinds of write Coder sends to its usage tables. */
export type WriteKind = 'agent-stats' | 'app-stats' | 'rollup';

/**
 * One write a load writer sent: a statement, or for app stats the whole
 * transaction. Times are `performance.now()` milliseconds.
 */
export interface WriteRecord {
  kind: WriteKind;
  startedAt: number;
  endedAt: number;
  /** SQLSTATE and message of a failed write; absent when it succeeded. */
  error?: string;
}

/** An agent stats row that a writer inserted, with the start time of its statement. */
export interface WrittenAgentRow {
  id: string;
  startedAt: number;
}

/** The last committed report of one app session, with the start time of its transaction. */
export interface WrittenSession {
  report: AppStatSession;
  startedAt: number;
}

/** What the writers sent, as seen by the client. */
export interface LoadResult {
  records: WriteRecord[];
  agentRows: WrittenAgentRow[];
  /** The last committed report of each session, by session id. */
  sessions: Map<string, WrittenSession>;
}

/** The connections and the bounds of a Coder-like write load on one database. */
export interface LoadOptions {
  columnSet: ColumnSet;
  /** Workspaces whose agents report stats and whose owners keep app sessions open. */
  workspaces: readonly FixtureWorkspace[];
  /** One agent stats writer, two app stats writers (each owns half of the workspaces) and the rollup. */
  clients: { agentStats: pg.Client; appStats: readonly [pg.Client, pg.Client]; rollup: pg.Client };
  /** Pause after each write, in milliseconds. */
  agentIntervalMs: number;
  appIntervalMs: number;
  rollupIntervalMs: number;
  /** Every loop stops after this many writes, or after `maxDurationMs`, whichever comes first. */
  maxIterations: number;
  maxDurationMs: number;
}

/** A running load; `stop` ends every loop after its current write. */
export interface RunningLoad {
  stop(): Promise<LoadResult>;
}

function describeError(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  return typeof code === 'string' ? `${code}: ${message}` : message;
}

/** An app session that a writer keeps reporting, with its running request count. */
interface OpenSession {
  base: Omit<AppStatSession, 'sessionEndedAt' | 'requests'>;
  requests: number;
}

function openSession(workspace: FixtureWorkspace, startedAt: Date): OpenSession {
  return {
    base: {
      userId: workspace.ownerId,
      workspaceId: workspace.id,
      agentId: workspace.agentId,
      accessMethod: 'path',
      slugOrPort: 'code-server',
      sessionId: randomUUID(),
      sessionStartedAt: startedAt,
    },
    requests: 0,
  };
}

/**
 * Starts four loops that write to one Coder database the way Coder does:
 * agent stats batches from every agent, two app stats collectors, and the
 * rollup. Each collector upserts its open sessions, with a later end and more
 * requests each time, in one transaction with an update of
 * `workspaces.last_used_at`. Every write is recorded with its client-side
 * times and its error, if any. Loops never throw: a failed write is recorded
 * and the loop goes on.
 */
export function startCoderLoad(options: LoadOptions): RunningLoad {
  const records: WriteRecord[] = [];
  const agentRows: WrittenAgentRow[] = [];
  const sessions = new Map<string, WrittenSession>();
  const deadline = performance.now() + options.maxDurationMs;
  let stopped = false;

  async function timed(kind: WriteKind, write: () => Promise<void>): Promise<void> {
    const startedAt = performance.now();
    try {
      await write();
      records.push({ kind, startedAt, endedAt: performance.now() });
    } catch (error) {
      records.push({ kind, startedAt, endedAt: performance.now(), error: describeError(error) });
    }
  }

  async function loop(intervalMs: number, step: (iteration: number) => Promise<void>): Promise<void> {
    for (let iteration = 0; iteration < options.maxIterations && !stopped && performance.now() < deadline; iteration++) {
      await step(iteration);
      await sleep(intervalMs);
    }
  }

  const agentLoop = loop(options.agentIntervalMs, async (iteration) => {
    const createdAt = new Date();
    const rows: AgentStatRow[] = options.workspaces.map((workspace, index) => ({
      id: randomUUID(),
      createdAt,
      userId: workspace.ownerId,
      agentId: workspace.agentId,
      workspaceId: workspace.id,
      templateId: workspace.templateId,
      connectionCount: 1,
      sessionCounts: { [(iteration + index) % 2 === 0 ? 'vscode' : 'ssh']: 1 },
      connectionMedianLatencyMs: 10 + ((iteration + index) % 40),
    }));
    const startedAt = performance.now();
    await timed('agent-stats', async () => {
      await insertAgentStats(options.clients.agentStats, options.columnSet, rows);
      for (const row of rows) agentRows.push({ id: row.id, startedAt });
    });
  });

  const half = Math.ceil(options.workspaces.length / 2);
  const appLoops = options.clients.appStats.map((client, writer) => {
    const owned = options.workspaces.slice(writer * half, (writer + 1) * half);
    const open = owned.map((workspace) => openSession(workspace, new Date()));

    return loop(options.appIntervalMs, async (iteration) => {
      // Every tenth report one session ends and another opens in its place,
      // so the load has both long-running and new sessions.
      if (iteration > 0 && iteration % 10 === 0 && open.length > 0) {
        const slot = (iteration / 10) % open.length;
        open[slot] = openSession(owned[slot], new Date());
      }
      const seenAt = new Date();
      const report = open.map((session): AppStatSession => {
        session.requests += 3;
        return { ...session.base, sessionEndedAt: seenAt, requests: session.requests };
      });

      const startedAt = performance.now();
      await timed('app-stats', async () => {
        try {
          await client.query('BEGIN');
          await upsertAppStats(client, report);
          await client.query('UPDATE workspaces SET last_used_at = $2 WHERE id = ANY($1::uuid[])', [owned.map((workspace) => workspace.id), seenAt]);
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw error;
        }
        for (const session of report) sessions.set(session.sessionId, { report: session, startedAt });
      });
    });
  });

  const rollupLoop = loop(options.rollupIntervalMs, async () => {
    await timed('rollup', async () => {
      await rollupTemplateUsage(options.clients.rollup, options.columnSet, new Date());
    });
  });

  const all = Promise.all([agentLoop, ...appLoops, rollupLoop]);
  return {
    async stop() {
      stopped = true;
      await all;
      return { records, agentRows, sessions };
    },
  };
}
