import { createHash } from 'node:crypto';
import { literal, SqlFragment } from './sql.js';
import type { KeyInfo, RecordedState } from './inspect.js';

/**
 * Rotation policies of the pseudonym key. `none` keeps one key until
 * `rotate-key` replaces it; the others give every UTC-aligned period its own
 * key, created when the first row of the period is written.
 */
export const keyPolicies = ['none', 'daily', 'weekly', 'monthly', 'yearly'] as const;

export type KeyPolicy = (typeof keyPolicies)[number];

/** date_trunc() field and period length of each period policy; weeks start on Monday (ISO 8601). */
const periodUnits: Record<Exclude<KeyPolicy, 'none'>, { unit: string; length: string }> = {
  daily: { unit: 'day', length: '1 day' },
  weekly: { unit: 'week', length: '7 days' },
  monthly: { unit: 'month', length: '1 month' },
  yearly: { unit: 'year', length: '1 year' },
};

/** Names the period of a period policy for people: day, week, month or year. */
export function periodName(policy: Exclude<KeyPolicy, 'none'>): string {
  return periodUnits[policy].unit;
}

/** The period variables of key-id.sql; NULL for policy none, whose branch never reads them. */
export function periodVariables(policy: KeyPolicy): { periodUnit: SqlFragment; periodLength: SqlFragment } {
  if (policy === 'none') return { periodUnit: SqlFragment.trusted('NULL::text'), periodLength: SqlFragment.trusted('NULL::interval') };
  const period = periodUnits[policy];
  return { periodUnit: literal(period.unit), periodLength: SqlFragment.trusted(`${literal(period.length).text}::interval`) };
}

/** Returns whether a value is one of the rotation policies. */
export function isKeyPolicy(value: unknown): value is KeyPolicy {
  return typeof value === 'string' && (keyPolicies as readonly string[]).includes(value);
}

/** The rotation policy the last apply recorded; `none` when it recorded none (versions before rotation). */
export function recordedPolicy(state: RecordedState | null): KeyPolicy {
  const value = state?.options.rotate;
  return isKeyPolicy(value) ? value : 'none';
}

/**
 * Computes a key's fingerprint as the SQL templates do: the first 8 bytes of
 * SHA-256("insights-privacy key fingerprint" || key), in hex. It identifies a
 * key and reveals nothing about it.
 */
export function keyFingerprint(key: Buffer): string {
  return createHash('sha256').update('insights-privacy key fingerprint', 'utf8').update(key).digest().subarray(0, 8).toString('hex');
}

/** Length of every pseudonym key, in bytes. */
export const keyLength = 32;

/**
 * Where a key stands for rows written now: `in use`, `scheduled` (its period
 * starts later), `ended`, `unused` (another key of the same policy covers
 * now, which only keys inserted by hand cause), or `inactive` (made under
 * another rotation policy than the recorded one).
 */
export type KeyState = 'in use' | 'scheduled' | 'ended' | 'unused' | 'inactive';

function covers(key: KeyInfo, time: number): boolean {
  return (key.validFrom === null || key.validFrom.getTime() <= time) && (key.validUntil === null || time < key.validUntil.getTime());
}

/** Returns the key that key_id() selects for a timestamp under a policy, or undefined when none would be found. */
export function keyFor(keys: readonly KeyInfo[], policy: KeyPolicy, time: number): KeyInfo | undefined {
  const candidates = keys.filter((key) => key.policy === policy && covers(key, time));
  // The same order as key-id.sql: latest start first, no start last, then newest row.
  candidates.sort((a, b) => {
    const aStart = a.validFrom?.getTime() ?? -Infinity;
    const bStart = b.validFrom?.getTime() ?? -Infinity;
    return aStart === bStart ? b.id - a.id : bStart - aStart;
  });
  return candidates[0];
}

/** Classifies a key for status, relative to `now` and the recorded policy. */
export function keyState(key: KeyInfo, keys: readonly KeyInfo[], policy: KeyPolicy, now: number): KeyState {
  if (key.policy !== policy) return 'inactive';
  if (key.validFrom !== null && key.validFrom.getTime() > now) return 'scheduled';
  if (key.validUntil !== null && key.validUntil.getTime() <= now) return 'ended';
  return keyFor(keys, policy, now) === key ? 'in use' : 'unused';
}

/** Describes a key's period for people, for example "2025-01-01T00:00:00.000Z to 2025-02-01T00:00:00.000Z". */
export function describePeriod(validFrom: Date | null, validUntil: Date | null): string {
  if (!validFrom && !validUntil) return 'all time';
  if (!validFrom) return `until ${(validUntil as Date).toISOString()}`;
  if (!validUntil) return `from ${validFrom.toISOString()}`;
  return `${validFrom.toISOString()} to ${validUntil.toISOString()}`;
}
