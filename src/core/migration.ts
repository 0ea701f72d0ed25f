import { allowedTriggers } from './findings.js';
import { planApply, replacesForeignKeys, type CryptoLocation, type HmacImplementation, type HmacSetting, type Mode } from './enforcement.js';
import type { Installation, RecordedState } from './inspect.js';
import { recordedPolicy, type KeyPolicy } from './keys.js';
import { ident, literal, qualified, SqlFragment, type Statement } from './sql.js';
import { templateStatements } from './templates.js';
import { advisoryLockClass, advisoryLockObject } from './transaction.js';
import type { Detection, ForeignKeyState, Profile, Scope, UserForeignKey } from '../profiles/types.js';

/** Settings of a migration: those `apply` would get, and the lock timeout. */
export interface MigrationSettings {
  readonly mode: Mode;
  readonly scope: Scope;
  readonly schema: string;
  readonly profile: string;
  readonly hmac: HmacSetting;
  readonly rotate: KeyPolicy;
  /** The lock_timeout the migration sets for its transaction, in milliseconds. */
  readonly lockTimeoutMs: number;
  /** Other triggers accepted after review, as "table.trigger" (apply --allow-trigger). */
  readonly allowTriggers?: readonly string[];
}

/** An enforcement as `apply` takes it: a mode and, under anonymize, its options. */
export interface Enforcement {
  readonly mode: Mode;
  /** Anonymize scope; null for disable and off. */
  readonly scope: Scope | null;
  /** Rotation policy under anonymize; null otherwise. */
  readonly rotate: KeyPolicy | null;
  /** HMAC implementation under anonymize; null otherwise. */
  readonly hmac: HmacImplementation | null;
}

/** The two directions of a migration, planned from one look at the database. */
export interface MigrationPlan {
  readonly database: string;
  /** The detected application, for example "Coder (2026 column set)". */
  readonly application: string;
  readonly schema: string;
  /** The enforcement recorded when the plan was made; the down migration returns to it. */
  readonly current: Enforcement;
  /** The enforcement the up migration installs. */
  readonly target: Enforcement;
  /** Every statement of the up migration, in order, for one transaction. */
  readonly up: Statement[];
  /** Every statement of the down migration; a single failing statement when it is irreversible. */
  readonly down: Statement[];
  /** Reason why the down migration cannot return to `current`; null when it can. */
  readonly irreversible: string | null;
  /** The lock_timeout the migration sets, in milliseconds. */
  readonly lockTimeoutMs: number;
}

/**
 * Names a recorded enforcement the way the migration's check compares it
 * with the state table: "off", "disable" or "anonymize (scope source)".
 */
export function describeEnforcement(mode: Mode, scope: Scope | null): string {
  if (mode === 'anonymize') return `anonymize (scope ${scope ?? 'source'})`;
  return mode;
}

/** Reads the enforcement from the recorded state; off without a recorded mode. */
export function recordedEnforcement(state: RecordedState | null, installation: Installation): Enforcement {
  if (!state) return { mode: 'off', scope: null, rotate: null, hmac: null };
  if (state.mode === 'disable') return { mode: 'disable', scope: null, rotate: null, hmac: null };
  return { mode: 'anonymize', scope: state.scope ?? 'source', rotate: recordedPolicy(state), hmac: installation.hmac };
}

/**
 * Computes the foreign keys to users as a plan for `mode` leaves them.
 * Anonymize with scope source swaps each key for its placeholder, and every
 * other mode puts a replaced key back.
 */
export function foreignKeysAfter(detection: Detection, mode: Mode, scope: Scope): ForeignKeyState[] {
  return detection.userForeignKeys.map((state) => {
    if (replacesForeignKeys(mode, scope) && state.foreignKey) return { ...state, foreignKey: null, placeholder: { ...state.foreignKey, validated: false } };
    if (!replacesForeignKeys(mode, scope) && state.placeholder && !state.foreignKey) return { ...state, foreignKey: state.placeholder, placeholder: null };
    return state;
  });
}

/**
 * Computes where pgcrypto is after a plan for `mode` ran. Anonymize creates
 * it in the tool's schema when it needs it there, and anonymize with core or
 * off removes the tool's own copy.
 */
export function cryptoAfter(crypto: CryptoLocation | null, schema: string, mode: Mode, hmac: HmacImplementation | null): CryptoLocation | null {
  if (!crypto) return null;
  if (mode === 'anonymize' && hmac === 'pgcrypto' && crypto.create) return { schema: crypto.schema, create: false };
  const ownCopy = !crypto.create && crypto.schema === schema;
  if (ownCopy && (mode === 'off' || (mode === 'anonymize' && hmac === 'core'))) return { schema, create: true };
  return crypto;
}

/** Lists the foreign keys that a plan for `mode` restores from their placeholders, to validate afterwards. */
export function restoredForeignKeys(detection: Detection, mode: Mode, scope: Scope): UserForeignKey[] {
  if (replacesForeignKeys(mode, scope)) return [];
  return detection.userForeignKeys.filter((state) => state.placeholder && !state.foreignKey).map((state) => state.placeholder as UserForeignKey);
}

/** Inputs of `wrapPlan`: the expected enforcement, the lock timeout and the keys to validate. */
interface Wrapping {
  readonly schema: string;
  readonly expected: string;
  readonly lockTimeoutMs: number;
  readonly restored: readonly UserForeignKey[];
  readonly users: Detection['users'];
}

/**
 * Surrounds a plan with what `apply` does around it. First come the
 * transaction-local lock_timeout and the tool's advisory lock, in its
 * transaction-scoped form so that it works inside the migration tool's
 * transaction. A check that the database still has the enforcement the plan
 * was made for follows. After the plan, restored foreign keys without orphan
 * rows are validated, and the previous lock_timeout is put back.
 */
export function wrapPlan(plan: readonly Statement[], wrapping: Wrapping): Statement[] {
  const start = templateStatements('migration/start.sql', {
    lockTimeout: literal(`${wrapping.lockTimeoutMs}ms`),
    lockClass: SqlFragment.trusted(String(advisoryLockClass)),
    lockObject: SqlFragment.trusted(String(advisoryLockObject)),
  });
  const check = templateStatements('migration/check-enforcement.sql', {
    schema: ident(wrapping.schema),
    stateTable: literal(`${ident(wrapping.schema).text}.state`),
    expected: literal(wrapping.expected),
  });
  const validations = wrapping.restored.flatMap((foreignKey) =>
    templateStatements('migration/validate-foreign-key.sql', {
      table: qualified(foreignKey.table.schema, foreignKey.table.name),
      users: qualified(wrapping.users.schema, wrapping.users.name),
      column: ident(foreignKey.columns[0]),
      constraint: ident(foreignKey.name),
    }),
  );
  return [...start, ...check, ...plan, ...validations, ...templateStatements('migration/finish.sql', {})];
}

/** The hint of an irreversible down migration. */
export const irreversibleHint = 'Restore a backup made before the up migration to undo it; "insights-privacy apply" installs enforcement again, with a new key.';

/** Builds the single statement of a down migration that cannot be built, which fails with the reason. */
export function irreversibleStatements(reason: string): Statement[] {
  return templateStatements('migration/irreversible.sql', {
    message: literal(`insights-privacy: this migration cannot be undone: ${reason}`),
    hint: literal(irreversibleHint),
  });
}

/** Everything the down migration is planned from. */
export interface DownInput {
  readonly profile: Profile;
  /** The detection and installation at generation time, before the up migration. */
  readonly detection: Detection;
  readonly installation: Installation;
  readonly current: Enforcement;
  readonly target: Enforcement;
  readonly schema: string;
  readonly lockTimeoutMs: number;
}

/**
 * Tells why the down migration cannot return to the recorded enforcement, or
 * returns null when it can: an up migration to off deletes the keys, and a new
 * key would give everyone other pseudonyms than the stored rows have.
 */
function irreversibleReason(input: DownInput, crypto: CryptoLocation | null): string | null {
  const { installation, current, target, schema } = input;
  if (target.mode === 'off' && installation.keys.length > 0) {
    return `the up migration drops schema ${schema} with the pseudonym key(s), and a new key would give every user other pseudonyms than the rows stored so far.`;
  }
  if (current.mode === 'anonymize' && current.hmac === 'pgcrypto' && !crypto) {
    return 'the recorded enforcement computes pseudonyms with pgcrypto, which this server does not offer.';
  }
  return null;
}

/** Returns the recorded options that keep the triggers accepted with --allow-trigger, for the down migration to record again. */
function recordedAllowedTriggers(installation: Installation): Record<string, unknown> {
  const allowed = allowedTriggers(installation.state);
  return allowed.length > 0 ? { allowedTriggers: allowed } : {};
}

/**
 * Plans the down migration: `apply` with the recorded enforcement (or
 * `--mode off` when none is recorded), against the catalog as the up
 * migration leaves it. When that cannot be done honestly, the down migration
 * is one statement that fails with the reason.
 */
export function planDown(input: DownInput): { statements: Statement[]; irreversible: string | null } {
  const { detection, installation, current, target, schema } = input;
  const after: Detection = { ...detection, userForeignKeys: foreignKeysAfter(detection, target.mode, target.scope ?? 'source') };
  const crypto = cryptoAfter(installation.crypto, schema, target.mode, target.hmac);
  const irreversible = irreversibleReason(input, crypto);
  if (irreversible) return { statements: irreversibleStatements(irreversible), irreversible };

  const scope = current.scope ?? 'source';
  const plan = planApply(
    after,
    { mode: current.mode, scope, schema, rotate: current.rotate ?? 'none' },
    { profile: input.profile, crypto, hmac: current.hmac, recordedOptions: recordedAllowedTriggers(installation) },
  );
  const statements = wrapPlan(plan, {
    schema,
    expected: describeEnforcement(target.mode, target.scope),
    lockTimeoutMs: input.lockTimeoutMs,
    restored: restoredForeignKeys(after, current.mode, scope),
    users: detection.users,
  });
  return { statements, irreversible: null };
}
