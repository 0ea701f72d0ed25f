import type pg from 'pg';
import { ToolError } from '../core/errors.js';
import { queryRows } from '../core/execute.js';
import { keyFor, type KeyPolicy } from '../core/keys.js';
import { ident } from '../core/sql.js';
import { templateStatements } from '../core/templates.js';
import { runLocked } from '../core/transaction.js';
import { confirmChange, readKeyContext, type KeyCommandSettings, type KeyContext } from './key-common.js';

/** Result of `rotate-key`. */
export interface RotateKeyResult {
  readonly outcome: 'rotated';
  readonly database: string;
  readonly schema: string;
  /** Fingerprint of the key that ends at `switchAt`. */
  readonly previousFingerprint: string;
  /** Fingerprint of the new key. */
  readonly fingerprint: string;
  /** Rows stamped from this time on get the new key: the next half-hour boundary after the rotation. */
  readonly switchAt: string;
  readonly summary: string[];
}

function policyProblem(policy: KeyPolicy): ToolError {
  return new ToolError('INVALID_OPTION', `Keys rotate by period already (apply --rotate ${policy}): each period gets a new key, so rotate-key has nothing to do.`, {
    fix: 'Leave the keys to the period policy, or switch to a single rotating key with "insights-privacy apply --mode anonymize --rotate none" first.',
  });
}

/** Checks that there is a key of policy none to rotate and no rotation waiting, and returns the key in use. */
function checkRotatable(context: KeyContext, schema: string) {
  const state = context.installation.state;
  if (state?.mode !== 'anonymize') {
    throw new ToolError('INVALID_OPTION', `No pseudonym key to rotate in schema ${schema}: the recorded mode is ${state?.mode ?? 'off'}.`, {
      fix: 'Install anonymize first with "insights-privacy apply --mode anonymize".',
    });
  }
  if (context.policy !== 'none') throw policyProblem(context.policy);
  const crypto = context.installation.crypto;
  if (context.installation.hmac === 'pgcrypto' && (!crypto || crypto.create)) {
    throw new ToolError('MISSING_EXTENSION', 'The pgcrypto extension that makes new keys is missing.', {
      fix: 'Run "insights-privacy apply --mode anonymize" to repair the installation (--hmac core needs no extension).',
    });
  }

  const now = context.now.getTime();
  const scheduled = context.installation.keys.find((key) => key.policy === 'none' && key.validFrom !== null && key.validFrom.getTime() > now);
  if (scheduled) {
    throw new ToolError('INVALID_OPTION', `A rotation is already scheduled: key ${scheduled.fingerprint} takes over at ${scheduled.validFrom?.toISOString()}.`, {
      fix: 'Rotate again after that time.',
    });
  }
  const current = keyFor(context.installation.keys, 'none', now);
  if (!current) {
    throw new ToolError('STATE_INVALID', `Schema ${schema} has no key in use.`, { fix: 'Run "insights-privacy apply --mode anonymize" to create one.' });
  }
  return current;
}

/** Describes the effect of a rotation for the confirmation and the result. */
function describeRotation(previous: string, switchAt: Date): string[] {
  return [
    `Key ${previous} ends at ${switchAt.toISOString()}, the next half-hour boundary; rows stamped from then on get pseudonyms under a new key.`,
    'The old key is kept, so rows stored before keep their pseudonyms and the rollup can still recompute the buckets before the switch.',
    'Distinct-user counts over any period that spans the switch count each person twice, once per key.',
  ];
}

/**
 * Replaces the key of rotation policy none. The key in use ends at the next
 * half-hour boundary and a new key starts there, so each of Coder's 30-minute
 * rollup buckets stays under one key. Runs in one transaction under the
 * tool's advisory lock.
 */
export async function rotateKey(client: pg.ClientBase, settings: KeyCommandSettings): Promise<RotateKeyResult> {
  const context = await readKeyContext(client, settings);
  const current = checkRotatable(context, settings.schema);
  const [{ boundary }] = await queryRows<{ boundary: Date }>(client, 'queries/rotation-boundary.sql');
  await confirmChange(settings, describeRotation(current.fingerprint, boundary));

  const rotated = await runLocked(client, settings.lock, async () => {
    // Read again under the lock: another run may have rotated meanwhile.
    const locked = await readKeyContext(client, settings);
    const previous = checkRotatable(locked, settings.schema);
    const [{ boundary: switchAt }] = await queryRows<{ boundary: Date }>(client, 'queries/rotation-boundary.sql');
    const statements = templateStatements('rotate-key.sql', { schema: ident(settings.schema) }, [switchAt]);
    return { statements, result: { previous: previous.fingerprint, switchAt } };
  });

  const after = await readKeyContext(client, settings);
  const added = after.installation.keys.find((key) => key.policy === 'none' && key.validFrom?.getTime() === rotated.switchAt.getTime());
  if (!added) throw new ToolError('STATE_INVALID', 'The new key is missing after the rotation committed.', { fix: 'Run "insights-privacy status" and report this as a bug.' });

  return {
    outcome: 'rotated',
    database: context.database,
    schema: settings.schema,
    previousFingerprint: rotated.previous,
    fingerprint: added.fingerprint,
    switchAt: rotated.switchAt.toISOString(),
    summary: describeRotation(rotated.previous, rotated.switchAt),
  };
}
