import type pg from 'pg';
import { ToolError } from '../core/errors.js';
import { execute } from '../core/execute.js';
import { describePeriod } from '../core/keys.js';
import { ident } from '../core/sql.js';
import { templateStatements } from '../core/templates.js';
import { runLocked } from '../core/transaction.js';
import { confirmChange, readKeyContext, rewriteKeyTable, serverTime, type KeyCommandSettings } from './key-common.js';

/**
 * How long after its end a key may still be needed, in milliseconds. Coder's
 * rollup recomputes every bucket from one hour before its newest bucket,
 * truncated to the hour. While Coder writes, that reaches at most 2.5 hours
 * back, and under scope rollup it hashes those buckets with their keys again.
 */
export const forgetMarginMs = 150 * 60 * 1000;

/** Settings of `forget-keys`, validated by the caller. */
export interface ForgetKeysSettings extends KeyCommandSettings {
  /** Keys whose period ended at or before this time are deleted. */
  readonly before: Date;
}

/** A key that forget-keys deleted or would delete. */
export interface ForgottenPeriod {
  readonly fingerprint: string;
  readonly policy: string;
  readonly periodStart: string | null;
  readonly periodEnd: string;
}

/** Result of `forget-keys`. */
export interface ForgetKeysResult {
  readonly outcome: 'forgotten' | 'unchanged';
  readonly database: string;
  readonly schema: string;
  readonly before: string;
  readonly forgotten: ForgottenPeriod[];
  /**
   * Whether VACUUM FULL gave the key table a new file while no older
   * transaction was open, so no deleted key stays in the table's file.
   */
  readonly tableRewritten: boolean;
  readonly summary: string[];
}

const datePattern = /^\d{4}-\d{2}-\d{2}$/;
const timestampPattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * Parses the value of --before: a date (midnight UTC) or an ISO 8601
 * timestamp with a time zone. A timestamp without a zone is rejected,
 * because its meaning would depend on the machine the tool runs on.
 */
export function parseCutoff(raw: string): Date {
  const value = raw.trim();
  const parsed = datePattern.test(value) ? new Date(`${value}T00:00:00Z`) : timestampPattern.test(value) ? new Date(value) : null;
  if (!parsed || Number.isNaN(parsed.getTime())) {
    throw new ToolError('INVALID_OPTION', `Invalid --before "${raw}".`, {
      fix: 'Give a date such as 2025-01-01 (midnight UTC) or a timestamp with a time zone such as 2025-01-01T00:00:00Z.',
    });
  }
  return parsed;
}

function checkCutoff(before: Date, now: Date): void {
  if (before.getTime() > now.getTime()) {
    throw new ToolError('INVALID_OPTION', `--before ${before.toISOString()} is later than the server's time ${now.toISOString()}: the key in use is never forgotten.`, {
      fix: 'Give a past date, for example the first day of the current month.',
    });
  }
  if (before.getTime() > now.getTime() - forgetMarginMs) {
    throw new ToolError('INVALID_OPTION', `--before ${before.toISOString()} is less than 2.5 hours before the server's time ${now.toISOString()}: Coder's rollup may still recompute buckets that need those keys.`, {
      fix: `Give a time no later than ${new Date(now.getTime() - forgetMarginMs).toISOString()}, or run forget-keys again later.`,
    });
  }
}

function describeForget(periods: readonly ForgottenPeriod[]): string[] {
  return [
    ...periods.map((period) => `Key ${period.fingerprint} (${period.policy}, ${describePeriod(period.periodStart ? new Date(period.periodStart) : null, new Date(period.periodEnd))}) is deleted for good.`),
    'Pseudonyms stored under these keys can no longer be linked to anyone through this database, by superusers neither. Backups, WAL archives and replicas made before still hold the keys.',
    'Rows stamped in a forgotten period can no longer be written to a protected table: pseudonym() raises an error instead of making a new key.',
  ];
}

/**
 * Deletes the keys whose period ended at or before `before`, records their
 * periods in `forgotten_keys`, and rewrites the key table so that no copy of
 * a deleted key stays in its file. Rejects a cut-off later than the server's
 * time minus `forgetMarginMs`, which also keeps the key in use.
 */
export async function forgetKeys(client: pg.ClientBase, settings: ForgetKeysSettings): Promise<ForgetKeysResult> {
  const context = await readKeyContext(client, settings);
  if (!context.installation.schemaPresent) {
    throw new ToolError('INVALID_OPTION', `Schema ${settings.schema} does not exist, so it has no keys.`, { fix: 'Check --schema.' });
  }
  checkCutoff(settings.before, context.now);

  const selected: ForgottenPeriod[] = context.installation.keys
    .filter((key) => key.validUntil !== null && key.validUntil.getTime() <= settings.before.getTime())
    .map((key) => ({ fingerprint: key.fingerprint, policy: key.policy, periodStart: key.validFrom?.toISOString() ?? null, periodEnd: (key.validUntil as Date).toISOString() }));
  const base = { database: context.database, schema: settings.schema, before: settings.before.toISOString() };
  if (selected.length === 0) {
    return { ...base, outcome: 'unchanged', forgotten: [], tableRewritten: false, summary: [`No key period ended by ${base.before}; nothing changed.`] };
  }
  await confirmChange(settings, describeForget(selected));

  const forgotten = await runLocked(client, settings.lock, async () => {
    const locked = await readKeyContext(client, settings);
    checkCutoff(settings.before, locked.now);
    const [statement] = templateStatements('forget-keys.sql', { schema: ident(settings.schema) }, [settings.before]);
    const { rows } = await execute<{ fingerprint: string; policy: string; valid_from: Date | null; valid_until: Date }>(client, statement);
    const periods = rows.map((row) => ({ fingerprint: row.fingerprint, policy: row.policy, periodStart: row.valid_from?.toISOString() ?? null, periodEnd: row.valid_until.toISOString() }));
    return { statements: [], result: periods };
  });

  const tableRewritten = await rewriteKeyTable(client, settings.schema, settings.lock, await serverTime(client));
  return { ...base, outcome: 'forgotten', forgotten, tableRewritten, summary: describeForget(forgotten) };
}
