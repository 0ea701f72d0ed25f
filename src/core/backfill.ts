import type pg from 'pg';
import type { UsageTable } from '../profiles/types.js';
import { ToolError } from './errors.js';
import { execute, queryRows } from './execute.js';
import { ident, joinSql, qualified, SqlFragment, type Statement } from './sql.js';
import { templateStatements } from './templates.js';
import { inLockedTransaction, type LockPolicy } from './transaction.js';
import { lockProgress, readBackfillProgress, recordProgress, startProgress, type RecordedBackfill } from './backfill-progress.js';

/** Choice for the rows stored before enforcement. */
export type ExistingRows = 'keep' | 'pseudonymize' | 'purge';

/** Every value of `ExistingRows`, in the order help text lists them. */
export const existingRowsChoices: readonly ExistingRows[] = ['keep', 'pseudonymize', 'purge'];

/** A choice that changes rows, and so runs a backfill. */
export type BackfillAction = Exclude<ExistingRows, 'keep'>;

/** Rows per batch unless the user sets another size. */
export const defaultBatchSize = 5000;

/** Planner settings of every batch transaction, explained in backfill/batch-settings.sql. */
const [batchSettings] = templateStatements('backfill/batch-settings.sql', {});

/** Sets the planner settings of a batch for the rest of the current transaction. */
export async function applyBatchSettings(client: pg.ClientBase): Promise<void> {
  await execute(client, batchSettings);
}

/** SQLSTATE of a unique violation: a writer stored a row's pseudonymized twin while a batch ran, so the batch is run again. */
const uniqueViolation = '23505';

/** One column of a walk's key, with its type as `format_type` spells it. */
export interface KeyColumn {
  readonly name: string;
  readonly type: string;
}

/**
 * The rows of one batch: those whose walk key is after the previous
 * position and at most the batch's last key. Statements get the last key as
 * parameter $1 and the previous position as $2, absent in a walk's first batch.
 */
export interface BatchRange {
  /** The condition on the key columns of the table aliased `alias`. */
  condition(alias: string): SqlFragment;
  readonly params: readonly unknown[];
}

/**
 * One statement of a batch. It returns one row with the bigint columns
 * `changed` and `merged`, which are added to the counters of `counts`;
 * null ignores them.
 */
export interface BatchStatement {
  readonly statement: Statement;
  readonly counts: UsageTable | null;
}

/** A table that a backfill walks along a key, with the tables whose rows move with it. */
export interface BackfillWalk {
  readonly table: UsageTable;
  /**
   * The columns the walk is ordered and positioned by: the primary key, or
   * columns that end with it. Their values must never change, and none may
   * be null.
   */
  readonly key: readonly KeyColumn[];
  /** Child tables: their rows are changed in the batch of their parent rows and have no position of their own. */
  readonly followers: readonly UsageTable[];
  /** The statements that pseudonymize or purge the rows of one batch, in order. */
  batchStatements(action: BackfillAction, range: BatchRange): BatchStatement[];
}

/** A walk as planned before it runs: where it continues and how much is left. */
export interface PlannedWalk {
  readonly walk: BackfillWalk;
  /** The position to continue after; null starts at the first row. */
  readonly resumeFrom: readonly string[] | null;
  /** The recorded walk this one continues, or that finished earlier; null when it starts afresh. */
  readonly recorded: RecordedBackfill | null;
  /** Rows after the position. */
  readonly rowsLeft: number;
  /** Rows after the position whose user id is not a pseudonym. */
  readonly realIdsLeft: number;
  /** Set when an earlier run with the same action finished the walk and no row with a real id is left. */
  readonly finishedEarlier: boolean;
}

/** The work of a backfill, read before it changes anything. */
export interface BackfillPlan {
  readonly action: BackfillAction;
  readonly schema: string;
  readonly walks: readonly PlannedWalk[];
}

/** Progress of the walk of one table, reported after each batch. */
export interface BackfillProgress {
  readonly table: string;
  readonly action: BackfillAction;
  /** Rows walked so far, including earlier runs of this walk. */
  readonly rowsWalked: number;
  /** Rows walked before this run plus the rows left when it started; an estimate, because writers add rows. */
  readonly rowsTotal: number;
  readonly rowsChanged: number;
  readonly rowsMerged: number;
  /** Rows walked by this run per second of this run. */
  readonly rowsPerSecond: number;
  readonly finished: boolean;
}

/** The outcome of one table in a backfill run. */
export interface TableBackfill {
  readonly table: string;
  /** For a child table, the walked table whose batches move its rows. */
  readonly movesWith: string | null;
  /** `stopped`: interrupted, with a recorded position; `pending`: not reached before the run stopped. */
  readonly outcome: 'finished' | 'already finished' | 'stopped' | 'pending';
  /** Counters over every run of this walk: rows walked, rows pseudonymized or deleted, rows merged into a pseudonymized twin. */
  readonly rowsWalked: number;
  readonly rowsChanged: number;
  readonly rowsMerged: number;
  readonly rowsWalkedThisRun: number;
  readonly seconds: number;
  /** Rows walked by this run per second; null when it walked none. */
  readonly rowsPerSecond: number | null;
}

/** The outcome of a backfill run. */
export interface BackfillResult {
  readonly action: BackfillAction;
  readonly outcome: 'finished' | 'already finished' | 'interrupted';
  readonly tables: TableBackfill[];
}

/** Settings of one backfill run. */
export interface BackfillRunOptions {
  /** Rows per batch and transaction. */
  readonly batchSize: number;
  readonly lock: LockPolicy;
  /** Stops the run after the batch in flight. */
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: BackfillProgress) => void;
  /** Runs first in every batch's transaction; throws to stop the run, for example when enforcement changed. */
  readonly beforeBatch?: () => Promise<void>;
}

/** Reads a table's primary key from the catalog; a table without one cannot be walked. */
export async function readPrimaryKey(client: pg.ClientBase, table: UsageTable): Promise<KeyColumn[]> {
  const key = await queryRows<KeyColumn>(client, 'queries/primary-key.sql', [table.oid]);
  if (key.length === 0) {
    throw new ToolError('NOT_A_CODER_DATABASE', `Table ${table.schema}.${table.name} has no primary key, so its existing rows cannot be walked in batches.`, {
      fix: 'Report the application version you run to the insights-privacy maintainers.',
    });
  }
  return key;
}

/** Renders `alias.column` for each column, as a comma-separated list. */
export function aliasedColumns(alias: string, columns: readonly string[]): SqlFragment {
  return joinSql(columns.map((column) => SqlFragment.trusted(`${alias}.${ident(column).text}`)));
}

/** Renders `(alias.k1, alias.k2) OPERATOR (CAST(($N::text[])[1] AS type1), ...)`. */
function keyBound(key: readonly KeyColumn[], alias: string, operator: '>' | '<=', parameter: number): SqlFragment {
  const columns = aliasedColumns(alias, key.map((column) => column.name));
  // The type comes from format_type in the catalog, so it is valid SQL text.
  const values = key.map((column, index) => `CAST(($${parameter}::text[])[${index + 1}] AS ${column.type})`);
  return SqlFragment.trusted(`(${columns.text}) ${operator} (${values.join(', ')})`);
}

function batchRange(key: readonly KeyColumn[], through: readonly string[], after: readonly string[] | null): BatchRange {
  return {
    condition: (alias) => {
      const upper = keyBound(key, alias, '<=', 1);
      return after ? SqlFragment.trusted(`${upper.text} AND ${keyBound(key, alias, '>', 2).text}`) : upper;
    },
    params: after ? [through, after] : [through],
  };
}

/** Renders the condition "key after the position" on alias t, or TRUE without a position. */
function afterPosition(key: readonly KeyColumn[], position: readonly string[] | null, parameter: number): SqlFragment {
  return position ? keyBound(key, 't', '>', parameter) : SqlFragment.trusted('TRUE');
}

function sameKey(recorded: RecordedBackfill, key: readonly KeyColumn[]): boolean {
  return recorded.keyColumns.join(',') === key.map((column) => column.name).join(',');
}

/**
 * Reads the recorded position of each walk and counts the rows left,
 * without changing anything. A recorded walk continues when it has the same action and
 * primary key and is not finished; any other walk starts from the first row.
 * Counting scans each table once, in a transaction with the lock policy's
 * timeout and retries.
 */
export async function planBackfill(client: pg.ClientBase, schema: string, action: BackfillAction, walks: readonly BackfillWalk[], lock: LockPolicy): Promise<BackfillPlan> {
  const recordedRows = await readBackfillProgress(client, schema);
  const planned: PlannedWalk[] = [];

  for (const walk of walks) {
    const recorded = recordedRows.find((row) => row.tableSchema === walk.table.schema && row.table === walk.table.name) ?? null;
    const comparable = recorded !== null && recorded.action === action && recorded.parentTable === null && sameKey(recorded, walk.key);
    const resumeFrom = comparable && !recorded.finishedAt ? recorded.position : null;
    const continues = comparable && !recorded.finishedAt;

    const [counts] = await inLockedTransaction(client, lock, () =>
      queryRows<{ rows: string; real_ids: string }>(client, 'backfill/count-rows.sql', resumeFrom ? [resumeFrom] : [], {
        table: qualified(walk.table.schema, walk.table.name),
        userColumn: ident(walk.table.userColumns[0]),
        after: afterPosition(walk.key, resumeFrom, 1),
      }),
    );
    const realIdsLeft = Number(counts.real_ids);
    const finishedEarlier = comparable && recorded.finishedAt !== null && realIdsLeft === 0;

    planned.push({
      walk,
      resumeFrom,
      recorded: continues || finishedEarlier ? recorded : null,
      rowsLeft: Number(counts.rows),
      realIdsLeft,
      finishedEarlier,
    });
  }
  return { action, schema, walks: planned };
}

/** Counters of one table, kept in memory while a run goes on. */
interface Counters {
  walked: number;
  changed: number;
  merged: number;
}

/**
 * Runs a planned backfill: for each table, batches of at most
 * `batchSize` rows along the primary key, each in its own short
 * transaction with the tool's advisory lock, lock_timeout and retries, and
 * each recording its position in the same transaction. An aborted signal
 * stops the run after the batch in flight. Any failure leaves the position
 * of the last committed batch, from which the next run continues.
 */
export async function runBackfillPlan(client: pg.ClientBase, plan: BackfillPlan, options: BackfillRunOptions): Promise<BackfillResult> {
  const results: TableBackfill[] = [];
  let interrupted = false;

  for (const planned of plan.walks) {
    const { walk } = planned;
    if (interrupted || options.signal?.aborted) {
      interrupted = true;
      results.push(...pendingResults(planned));
      continue;
    }
    if (planned.finishedEarlier) {
      results.push(...(await finishedEarlierResults(client, plan, planned)));
      continue;
    }

    try {
      const walkResults = await runWalk(client, plan, planned, options);
      results.push(...walkResults);
      if (walkResults[0].outcome === 'stopped') interrupted = true;
    } catch (error) {
      throw withResumeHint(error, walk.table);
    }
  }

  const outcome = interrupted ? 'interrupted' : results.every((result) => result.outcome === 'already finished') ? 'already finished' : 'finished';
  return { action: plan.action, outcome, tables: results };
}

function pendingResults(planned: PlannedWalk): TableBackfill[] {
  return [planned.walk.table, ...planned.walk.followers].map((table) => ({
    table: table.name,
    movesWith: table === planned.walk.table ? null : planned.walk.table.name,
    outcome: 'pending' as const,
    rowsWalked: 0,
    rowsChanged: 0,
    rowsMerged: 0,
    rowsWalkedThisRun: 0,
    seconds: 0,
    rowsPerSecond: null,
  }));
}

async function finishedEarlierResults(client: pg.ClientBase, plan: BackfillPlan, planned: PlannedWalk): Promise<TableBackfill[]> {
  const recorded = await readBackfillProgress(client, plan.schema);
  return [planned.walk.table, ...planned.walk.followers].map((table) => {
    const row = recorded.find((candidate) => candidate.tableSchema === table.schema && candidate.table === table.name);
    return {
      table: table.name,
      movesWith: table === planned.walk.table ? null : planned.walk.table.name,
      outcome: 'already finished' as const,
      rowsWalked: row?.rowsWalked ?? 0,
      rowsChanged: row?.rowsChanged ?? 0,
      rowsMerged: row?.rowsMerged ?? 0,
      rowsWalkedThisRun: 0,
      seconds: 0,
      rowsPerSecond: null,
    };
  });
}

/**
 * Records the start of a walk: a fresh row for the table and each follower,
 * unless the walk continues a recorded one, whose followers only get a row
 * when they lack one. A walk without rows to change is recorded as finished.
 */
async function startWalk(client: pg.ClientBase, plan: BackfillPlan, planned: PlannedWalk, options: BackfillRunOptions): Promise<Map<UsageTable, Counters>> {
  const { walk } = planned;
  const finished = planned.realIdsLeft === 0;

  return inLockedTransaction(client, options.lock, async () => {
    await options.beforeBatch?.();
    const recorded = await readBackfillProgress(client, plan.schema);
    const counters = new Map<UsageTable, Counters>();

    for (const table of [walk.table, ...walk.followers]) {
      const follower = table !== walk.table;
      const row = recorded.find((candidate) => candidate.tableSchema === table.schema && candidate.table === table.name);
      const keep = planned.recorded !== null && row !== undefined && row.action === plan.action && !row.finishedAt;
      if (keep) {
        counters.set(table, { walked: row.rowsWalked, changed: row.rowsChanged, merged: row.rowsMerged });
        // The rows after the position may all hold pseudonyms already.
        if (finished) await recordProgress(client, plan.schema, table, { position: row.position, walked: 0, changed: 0, merged: 0, finished: true });
        continue;
      }
      const keyColumns = follower ? [] : walk.key.map((column) => column.name);
      await startProgress(client, plan.schema, table, { action: plan.action, parentTable: follower ? walk.table.name : null, keyColumns, finished });
      counters.set(table, { walked: 0, changed: 0, merged: 0 });
    }
    return counters;
  });
}

async function runWalk(client: pg.ClientBase, plan: BackfillPlan, planned: PlannedWalk, options: BackfillRunOptions): Promise<TableBackfill[]> {
  const { walk } = planned;
  const counters = await startWalk(client, plan, planned, options);
  const walkedBefore = counters.get(walk.table)?.walked ?? 0;
  const rowsTotal = walkedBefore + planned.rowsLeft;
  const startedAt = performance.now();
  let walkedThisRun = 0;
  let finished = planned.realIdsLeft === 0;

  const report = () => {
    const own = counters.get(walk.table) as Counters;
    const seconds = (performance.now() - startedAt) / 1000;
    options.onProgress?.({
      table: walk.table.name,
      action: plan.action,
      rowsWalked: own.walked,
      rowsTotal: Math.max(rowsTotal, own.walked),
      rowsChanged: own.changed,
      rowsMerged: own.merged,
      rowsPerSecond: seconds > 0 ? walkedThisRun / seconds : 0,
      finished,
    });
  };

  report();
  while (!finished && !options.signal?.aborted) {
    const batch = await runBatch(client, plan, walk, options);
    walkedThisRun += batch.rows;
    for (const [table, delta] of batch.counts) {
      const current = counters.get(table) as Counters;
      current.walked += table === walk.table ? batch.rows : 0;
      current.changed += delta.changed;
      current.merged += delta.merged;
    }
    finished = batch.finished;
    report();
  }

  const seconds = (performance.now() - startedAt) / 1000;
  return [walk.table, ...walk.followers].map((table) => {
    const current = counters.get(table) as Counters;
    const own = table === walk.table;
    return {
      table: table.name,
      movesWith: own ? null : walk.table.name,
      outcome: finished ? ('finished' as const) : ('stopped' as const),
      rowsWalked: current.walked,
      rowsChanged: current.changed,
      rowsMerged: current.merged,
      rowsWalkedThisRun: own ? walkedThisRun : 0,
      seconds,
      rowsPerSecond: own && walkedThisRun > 0 && seconds > 0 ? walkedThisRun / seconds : null,
    };
  });
}

interface BatchOutcome {
  rows: number;
  counts: Map<UsageTable, { changed: number; merged: number }>;
  finished: boolean;
}

/**
 * Runs one batch in its own transaction: reads the recorded position under
 * a row lock, finds the next `batchSize` keys, runs the walk's statements
 * on them and records the new position and counters. A batch with fewer
 * rows than `batchSize` reached the end of the table and finishes the walk.
 */
async function runBatch(client: pg.ClientBase, plan: BackfillPlan, walk: BackfillWalk, options: BackfillRunOptions): Promise<BatchOutcome> {
  const table = qualified(walk.table.schema, walk.table.name);

  return inLockedTransaction(
    client,
    options.lock,
    async () => {
      await applyBatchSettings(client);
      await options.beforeBatch?.();
      const recorded = await lockProgress(client, plan.schema, walk.table);
      if (!recorded || recorded.action !== plan.action) {
        throw new ToolError('STATE_INVALID', `The recorded backfill of ${walk.table.name} changed while this run walked it.`, {
          fix: 'Run the backfill again; it reads the recorded position afresh.',
        });
      }

      const position = recorded.position;
      const keyNames = walk.key.map((column) => ident(column.name));
      const [next] = await queryRows<{ rows: string; position: string[] | null }>(client, 'backfill/next-batch.sql', position ? [options.batchSize, position] : [options.batchSize], {
        table,
        keyColumns: aliasedColumns('t', walk.key.map((column) => column.name)),
        after: afterPosition(walk.key, position, 2),
        keyText: joinSql(walk.key.map((column) => SqlFragment.trusted(`w.${ident(column.name).text}::text`))),
        lastFirst: joinSql(keyNames.map((name) => SqlFragment.trusted(`w.${name.text} DESC`))),
      });

      const rows = Number(next.rows);
      const counts = new Map<UsageTable, { changed: number; merged: number }>([walk.table, ...walk.followers].map((member) => [member, { changed: 0, merged: 0 }]));
      if (rows > 0 && next.position) {
        for (const step of walk.batchStatements(plan.action, batchRange(walk.key, next.position, position))) {
          const result = await execute<{ changed: string; merged: string }>(client, step.statement);
          const target = step.counts ? counts.get(step.counts) : undefined;
          if (!target) continue;
          target.changed += Number(result.rows[0].changed);
          target.merged += Number(result.rows[0].merged);
        }
      }

      const finished = rows < options.batchSize;
      const newPosition = rows > 0 ? next.position : position;
      for (const [member, delta] of counts) {
        const own = member === walk.table;
        await recordProgress(client, plan.schema, member, { position: own ? newPosition : null, walked: own ? rows : 0, ...delta, finished });
      }
      return { rows, counts, finished };
    },
    [uniqueViolation],
  );
}

/**
 * Tells whether an error means the connection is gone: node-postgres reports
 * a closed socket without a SQLSTATE, and the server ends a session with
 * class 57P (for example pg_terminate_backend) or 08.
 */
function isConnectionLoss(error: unknown): boolean {
  const cause = error instanceof ToolError ? error.cause : error;
  const code = (cause as { code?: unknown } | undefined)?.code;
  const message = cause instanceof Error ? cause.message : '';
  if (typeof code === 'string' && (/^57P0[1-3]$/.test(code) || code.startsWith('08'))) return true;
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'ETIMEDOUT' || /Connection terminated|not queryable/i.test(message);
}

/** Adds to a failure of a walk that the next run continues after the last committed batch. */
function withResumeHint(error: unknown, table: UsageTable): unknown {
  const resume = 'Run the same command again: the backfill continues after the last committed batch.';
  if (isConnectionLoss(error)) {
    const cause = error instanceof ToolError ? error.cause : error;
    const message = cause instanceof Error ? cause.message : String(cause);
    return new ToolError('CONNECTION_FAILED', `The backfill stopped in table ${table.name}: the connection to the database was lost (${message}).`, {
      fix: `Check that the server is reachable. ${resume}`,
      cause,
    });
  }
  const cause = error instanceof ToolError ? error.cause : undefined;
  if (error instanceof ToolError && cause instanceof Error && /deleted by forget-keys/.test(cause.message)) {
    // Running again would fail on the same row, so the resume hint does not apply.
    return new ToolError(error.code, `The backfill stopped in table ${table.name}: ${error.message}`, {
      fix: 'Rows stamped in a period whose key forget-keys deleted cannot be pseudonymized any more: run "insights-privacy backfill --existing purge" to delete the rows with real user ids instead.',
      cause,
      exitCode: error.exitCode,
    });
  }
  if (error instanceof ToolError) {
    return new ToolError(error.code, `The backfill stopped in table ${table.name}: ${error.message}`, {
      fix: error.fix ? `${error.fix} ${resume}` : resume,
      cause: error.cause ?? error,
      exitCode: error.exitCode,
    });
  }
  return error;
}
