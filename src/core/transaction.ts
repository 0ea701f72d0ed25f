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
  for (let attempt = 1; ; attempt += 1) {
    try {
      await client.query('BEGIN');
      await client.query(`SELECT set_config('lock_timeout', $1, true)`, [`${policy.lockTimeoutMs}ms`]);
      const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_xact_lock($1, $2) AS locked', [advisoryLockClass, advisoryLockObject]);
      if (!rows[0].locked) throw new LockBusy('another insights-privacy run holds the advisory lock');

      const { statements, result } = await build();
      for (const statement of statements) await execute(client, statement);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      // A deadlock victim is retried like a lock timeout: the rollback released
      // every lock, so the other transaction has gone on.
      const retryable = error instanceof LockBusy || (isDatabaseError(error) && (error.code === lockNotAvailable || error.code === deadlockDetected));
      if (!retryable) throw error;

      const reason =
        error instanceof LockBusy ? error.message : error.code === deadlockDetected ? 'a deadlock with another transaction' : `a lock was not granted within ${policy.lockTimeoutMs} ms`;
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
