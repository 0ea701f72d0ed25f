import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { ToolError, isDatabaseError } from '../core/errors.js';
import { execute, lockNotAvailable, queryRows } from '../core/execute.js';
import { currentDatabase, inspectInstallation, type Installation } from '../core/inspect.js';
import { recordedPolicy, type KeyPolicy } from '../core/keys.js';
import { validateSchemaName } from '../core/preflight.js';
import { ident } from '../core/sql.js';
import { templateStatements } from '../core/templates.js';
import type { LockPolicy } from '../core/transaction.js';
import { getProfile } from '../profiles/index.js';

/** Settings every key command takes, validated by the caller. */
export interface KeyCommandSettings {
  /** The tool's private schema. Default `insights_privacy`. */
  readonly schema: string;
  readonly profile: string;
  readonly lock: LockPolicy;
  /**
   * Asked before anything changes, with a description of the change;
   * returning false aborts. Absent means confirmed (`--yes`).
   */
  readonly confirm?: (summary: string[]) => Promise<boolean>;
}

/** State that a key command reads before it changes anything. */
export interface KeyContext {
  readonly database: string;
  readonly installation: Installation;
  /** The recorded rotation policy; `none` without a recorded anonymize. */
  readonly policy: KeyPolicy;
  /** The server's clock at the time of reading. */
  readonly now: Date;
}

/** Reads the installation, its rotation policy and the server's clock. */
export async function readKeyContext(client: pg.ClientBase, settings: Pick<KeyCommandSettings, 'schema' | 'profile'>): Promise<KeyContext> {
  validateSchemaName(settings.schema);
  const detection = await getProfile(settings.profile).detect(client);
  const installation = await inspectInstallation(client, detection, settings.schema);
  const [clock] = await queryRows<{ now: Date }>(client, 'queries/rotation-boundary.sql');
  return { database: await currentDatabase(client), installation, policy: recordedPolicy(installation.state), now: clock.now };
}

/** Reads the server's clock; outside a transaction block, now() is the time of the statement. */
export async function serverTime(client: pg.ClientBase): Promise<Date> {
  const [clock] = await queryRows<{ now: Date }>(client, 'queries/rotation-boundary.sql');
  return clock.now;
}

/** Asks for confirmation when the settings carry a callback, and aborts on a no. */
export async function confirmChange(settings: KeyCommandSettings, summary: string[]): Promise<void> {
  if (settings.confirm && !(await settings.confirm(summary))) {
    throw new ToolError('ABORTED', 'Aborted: nothing was changed.', { fix: 'Run again and confirm, or pass --yes.' });
  }
}

/**
 * Rewrites the key table with VACUUM FULL after keys were deleted, so that
 * their bytes do not stay in dead tuples or free space of the table's file.
 * VACUUM FULL keeps row versions that an older snapshot may still see, so
 * it first waits, with the lock policy's retries and back-off, until no
 * session of this database runs a transaction that began before
 * `deletedAt`. It holds an exclusive lock on the key table, which the
 * triggers read, so it waits at most the lock timeout per attempt. Returns
 * whether the table got a new file with no such transaction open. It
 * returns false when the waits ran out, and when the current role does not
 * own the table, because VACUUM then skips it with a warning.
 *
 * NOTE: the old file's disk blocks, the WAL and any backup or replica still
 * hold the deleted keys until they are overwritten or expire.
 */
export async function rewriteKeyTable(client: pg.ClientBase, schema: string, lock: LockPolicy, deletedAt: Date): Promise<boolean> {
  const fileOf = async () => {
    const [row] = await queryRows<{ file: string | null }>(client, 'queries/key-table-file.sql', [`${ident(schema).text}.keys`]);
    return row.file;
  };
  const olderSessions = async () => {
    const [row] = await queryRows<{ sessions: string }>(client, 'queries/older-snapshots.sql', [deletedAt]);
    return Number(row.sessions);
  };
  const backOff = (attempt: number) => sleep(Math.min(200 * 2 ** (attempt - 1), 5000));

  for (let attempt = 1; (await olderSessions()) > 0; attempt += 1) {
    if (attempt > lock.retries) return false;
    lock.onRetry?.(attempt, `a transaction that began before the keys were deleted is still open`);
    await backOff(attempt);
  }

  const before = await fileOf();
  const [vacuum] = templateStatements('vacuum-keys.sql', { schema: ident(schema) });
  for (let attempt = 1; ; attempt += 1) {
    await client.query(`SELECT set_config('lock_timeout', $1, false)`, [`${lock.lockTimeoutMs}ms`]);
    try {
      await execute(client, vacuum);
      break;
    } catch (error) {
      if (!isDatabaseError(error) || error.code !== lockNotAvailable) throw error;
      if (attempt > lock.retries) return false;
      lock.onRetry?.(attempt, `a lock on ${schema}.keys was not granted within ${lock.lockTimeoutMs} ms`);
      await backOff(attempt);
    } finally {
      await client.query('RESET lock_timeout');
    }
  }
  return (await fileOf()) !== before;
}
