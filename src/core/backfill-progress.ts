import type pg from 'pg';
import type { UsageTable } from '../profiles/types.js';
import type { BackfillAction } from './backfill.js';
import { ToolError } from './errors.js';
import { execute, queryRows } from './execute.js';
import { ident } from './sql.js';
import { templateStatements } from './templates.js';
import { advisoryLockClass } from './transaction.js';

// Where a backfill records its walks (the table backfill_progress in the
// tool's schema), and the session lock that lets one backfill run at a time.

/** Second key of the session advisory lock a backfill holds for its whole run; the first is `advisoryLockClass`. */
export const backfillLockObject = 2;

/** A table's backfill as the tool's schema records it. */
export interface RecordedBackfill {
  readonly tableSchema: string;
  readonly table: string;
  readonly action: BackfillAction;
  /** The walked table whose batches move this child table's rows; null for a walked table. */
  readonly parentTable: string | null;
  readonly keyColumns: readonly string[];
  /** Primary key of the last row walked, as text; null before the first batch and for child tables. */
  readonly position: readonly string[] | null;
  readonly rowsWalked: number;
  readonly rowsChanged: number;
  readonly rowsMerged: number;
  readonly startedAt: Date;
  readonly updatedAt: Date;
  readonly finishedAt: Date | null;
  /** Whether a backfill holds its session lock in this database now. */
  readonly running: boolean;
}

interface ProgressRow {
  table_schema: string;
  table_name: string;
  action: BackfillAction;
  parent_table: string | null;
  key_columns: string[];
  position: string[] | null;
  rows_walked: string;
  rows_changed: string;
  rows_merged: string;
  started_at: Date;
  updated_at: Date;
  finished_at: Date | null;
  running: boolean;
}

function toRecorded(row: ProgressRow): RecordedBackfill {
  return {
    tableSchema: row.table_schema,
    table: row.table_name,
    action: row.action,
    parentTable: row.parent_table,
    keyColumns: row.key_columns,
    position: row.position,
    rowsWalked: Number(row.rows_walked),
    rowsChanged: Number(row.rows_changed),
    rowsMerged: Number(row.rows_merged),
    startedAt: row.started_at,
    updatedAt: row.updated_at,
    finishedAt: row.finished_at,
    running: row.running,
  };
}

/** Tells whether the tool's schema has the table that records backfill positions (installations before it lack it). */
export async function progressTableExists(client: pg.ClientBase, schema: string): Promise<boolean> {
  const [row] = await queryRows<{ present: boolean }>(client, 'queries/relation-exists.sql', [schema, 'backfill_progress']);
  return row.present;
}

/** Reads the recorded backfill of every table; empty when the progress table does not exist. */
export async function readBackfillProgress(client: pg.ClientBase, schema: string): Promise<RecordedBackfill[]> {
  if (!(await progressTableExists(client, schema))) return [];
  const rows = await queryRows<ProgressRow>(client, 'queries/backfill-progress.sql', [advisoryLockClass, backfillLockObject], { schema: ident(schema) });
  return rows.map(toRecorded);
}

/**
 * Takes the session lock that keeps a second backfill off this database,
 * waiting at most `lockTimeoutMs` for a run that is ending. Also sets the
 * session's DateStyle to ISO, so that positions stored as text read back to
 * the same timestamps in any later session.
 */
export async function acquireBackfillLock(client: pg.ClientBase, lockTimeoutMs: number): Promise<void> {
  await client.query("SELECT set_config('DateStyle', 'ISO, YMD', false)");
  try {
    await client.query('BEGIN');
    await client.query(`SELECT set_config('lock_timeout', $1, true)`, [`${lockTimeoutMs}ms`]);
    const [lock] = templateStatements('backfill/acquire-session-lock.sql', {}, [advisoryLockClass, backfillLockObject]);
    await execute(client, lock);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    if ((error as { code?: unknown }).code !== '55P03') throw error;
    const [holder] = await queryRows<{ pid: number }>(client, 'backfill/session-lock-holder.sql', [advisoryLockClass, backfillLockObject]);
    throw new ToolError('LOCK_TIMEOUT', `Another insights-privacy backfill is running on this database${holder ? ` (server process ${holder.pid})` : ''}.`, {
      fix: 'Wait for it to finish, or stop it (Ctrl-C) and run this command again: the backfill continues where the other run stopped.',
      cause: error,
    });
  }
}

/** Releases the session lock of `acquireBackfillLock`. */
export async function releaseBackfillLock(client: pg.ClientBase): Promise<void> {
  const [unlock] = templateStatements('backfill/release-session-lock.sql', {}, [advisoryLockClass, backfillLockObject]);
  await execute(client, unlock);
}

/** Starts a table's walk from the first row; a child table gets `parentTable` and no key. */
export async function startProgress(
  client: pg.ClientBase,
  schema: string,
  table: UsageTable,
  start: { action: BackfillAction; parentTable: string | null; keyColumns: readonly string[]; finished: boolean },
): Promise<void> {
  const [statement] = templateStatements('backfill/progress-start.sql', { schema: ident(schema) }, [
    table.schema,
    table.name,
    start.action,
    start.parentTable,
    start.keyColumns,
    start.finished,
  ]);
  await execute(client, statement);
}

/** Reads a table's action and position and locks its row until the transaction ends; null when it has none. */
export async function lockProgress(client: pg.ClientBase, schema: string, table: UsageTable): Promise<{ action: BackfillAction; position: string[] | null } | null> {
  const [row] = await queryRows<{ action: BackfillAction; position: string[] | null }>(client, 'backfill/progress-read.sql', [table.schema, table.name], { schema: ident(schema) });
  return row ?? null;
}

/** Adds one batch to a table's counters, in the batch's transaction; `finished` ends the walk. */
export async function recordProgress(
  client: pg.ClientBase,
  schema: string,
  table: UsageTable,
  batch: { position: readonly string[] | null; walked: number; changed: number; merged: number; finished: boolean },
): Promise<void> {
  const [statement] = templateStatements('backfill/progress-record.sql', { schema: ident(schema) }, [
    table.schema,
    table.name,
    batch.position,
    batch.walked,
    batch.changed,
    batch.merged,
    batch.finished,
  ]);
  await execute(client, statement);
}
