import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { ToolError, isDatabaseError } from './errors.js';
import { deadlockDetected, execute, lockNotAvailable } from './execute.js';
import type { Statement } from './sql.js';

/** Two-key advisory lock id that serializes insights-privacy runs on one database ("iprv", 1). */
export const advisoryLockClass = 0x69707276;
export const advisoryLockObject = 1;

/** Lock waiting and retry settings of a locking transaction. */
export interface LockPolicy {
  /** Maximum wait for one lock, in milliseconds, before the attempt is rolled back. */
  readonly lockTimeoutMs: number;
  /** Retries after the first attempt. */
  readonly retries: number;
  /** Called before each retry, with the attempt number that failed and the reason. */
  readonly onRetry?: (attempt: number, reason: string) => void;
}

class LockBusy extends Error {}

/**
 * Runs statements in one transaction that holds the tool's advisory lock,
 * with lock_timeout set so that the application's writers never queue behind
 * this transaction for longer than the timeout. When a lock is not granted
 * in time the transaction rolls back and starts again after a back-off.
 * `build` runs inside the transaction, after the advisory lock, so that the
 * statements reflect the catalog as it is under the lock.
 */
export async function runLocked<T>(client: pg.ClientBase, policy: LockPolicy, build: () => Promise<{ statements: Statement[]; result: T }>): Promise<T> {
  return inLockedTransaction(client, policy, async () => {
    const { statements, result } = await build();
    for (const statement of statements) await execute(client, statement);
    return result;
  });
}

/**
 * Runs `work` in one transaction that holds the tool's advisory lock, with
 * lock_timeout set, and commits when it returns. A lock wait past the
 * timeout, a deadlock, a busy advisory lock or a failure with one of the
 * SQLSTATEs in `retryOn` rolls the transaction back and runs `work` again
 * after a back-off, at most `policy.retries` times.
 */
export async function inLockedTransaction<T>(client: pg.ClientBase, policy: LockPolicy, work: () => Promise<T>, retryOn: readonly string[] = []): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await client.query('BEGIN');
      await client.query(`SELECT set_config('lock_timeout', $1, true)`, [`${policy.lockTimeoutMs}ms`]);
      const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_xact_lock($1, $2) AS locked', [advisoryLockClass, advisoryLockObject]);
      if (!rows[0].locked) throw new LockBusy('another insights-privacy run holds the advisory lock');

      const result = await work();
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      // A deadlock victim is retried like a lock timeout: the rollback released
      // every lock, so the other transaction has gone on.
      const code = sqlState(error);
      const retryable = error instanceof LockBusy || code === lockNotAvailable || code === deadlockDetected || (code !== undefined && retryOn.includes(code));
      if (!retryable) throw error;

      const reason =
        error instanceof LockBusy
          ? error.message
          : code === deadlockDetected
            ? 'a deadlock with another transaction'
            : code === lockNotAvailable
              ? `a lock was not granted within ${policy.lockTimeoutMs} ms`
              : `a concurrent write (SQLSTATE ${code})`;
      if (attempt > policy.retries) {
        throw new ToolError('LOCK_TIMEOUT', `Gave up after ${attempt} attempt(s): ${reason}.`, {
          fix: 'Retry later, or raise --lock-timeout (milliseconds) or --lock-retries; long-running transactions on the usage tables hold the locks.',
          cause: error,
        });
      }
      policy.onRetry?.(attempt, reason);
      await sleep(Math.min(200 * 2 ** (attempt - 1), 5000) * (0.5 + Math.random()));
    }
  }
}

/** Returns the SQLSTATE of a PostgreSQL error, also when execute() wrapped it in a ToolError. */
function sqlState(error: unknown): string | undefined {
  if (isDatabaseError(error)) return error.code;
  if (error instanceof ToolError && isDatabaseError(error.cause)) return error.cause.code;
  return undefined;
}
