import type pg from 'pg';
import { acquireBackfillLock, progressTableExists, releaseBackfillLock } from '../core/backfill-progress.js';
import {
  planBackfill,
  runBackfillPlan,
  type BackfillAction,
  type BackfillPlan,
  type BackfillProgress,
  type BackfillResult,
  type ExistingRows,
} from '../core/backfill.js';
import { protectedTables, type Mode } from '../core/enforcement.js';
import { ToolError } from '../core/errors.js';
import { queryRows } from '../core/execute.js';
import { findDrift } from '../core/findings.js';
import { currentDatabase, inspectInstallation, readState, type RecordedState } from '../core/inspect.js';
import { validateSchemaName } from '../core/preflight.js';
import { ident, qualified } from '../core/sql.js';
import { inLockedTransaction, type LockPolicy } from '../core/transaction.js';
import { getProfile } from '../profiles/index.js';
import type { Detection, Scope, UsageTable } from '../profiles/types.js';

/** Settings of `backfill`, validated by the caller. */
export interface BackfillSettings {
  /** Pseudonymize or purge the rows with real user ids in the protected tables. */
  readonly existing: ExistingRows;
  readonly schema: string;
  readonly profile: string;
  /** Rows per batch, each batch in its own transaction. */
  readonly batchSize: number;
  readonly lock: LockPolicy;
  /**
   * Asked before anything changes, with a description of the change;
   * returning false aborts. Absent means confirmed (`--yes`). Not asked when
   * nothing is left to do.
   */
  readonly confirm?: (summary: string[]) => Promise<boolean>;
  /** Stops the run after the batch in flight; the run then reports outcome `interrupted`. */
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: BackfillProgress) => void;
}

/** Outcome of `backfill`. */
export interface BackfillCommandResult extends BackfillResult {
  readonly database: string;
  /** The detected application, for example "Coder (2026 column set)". */
  readonly application: string;
  readonly schema: string;
  readonly batchSize: number;
  /** The description shown before the run. */
  readonly summary: string[];
}

const existingChoiceFix = 'Use --existing pseudonymize (replace real user ids with their pseudonyms) or --existing purge (delete the rows that hold real user ids).';

/**
 * Rejects an `existing` choice that the target mode cannot carry out,
 * before anything changes. Pseudonymize needs anonymize, whose key and
 * functions it uses: under disable the foreign key of workspace_app_stats
 * to users is restored, which no pseudonym satisfies, and no new row is
 * stored to be linked with. Off removes the tool's schema, where a backfill
 * records its position, and lets new rows with real ids in.
 */
export function checkExistingChoice(mode: Mode, existing: ExistingRows): void {
  if (existing === 'keep') return;
  if (mode === 'off') {
    throw new ToolError('INVALID_OPTION', `--existing ${existing} does not work with --mode off: off removes the schema in which a backfill records its position, and new rows keep their real ids.`, {
      fix: `Run "insights-privacy apply --mode disable --existing purge" (or --mode anonymize --existing ${existing}) before switching to off, or leave --existing out.`,
    });
  }
  if (existing === 'pseudonymize' && mode !== 'anonymize') {
    throw new ToolError('INVALID_OPTION', `--existing pseudonymize needs --mode anonymize, not --mode ${mode}: it uses the pseudonym key and functions of anonymize.`, {
      fix: 'Run "insights-privacy apply --mode anonymize --existing pseudonymize" first and switch to disable afterwards, or use --existing purge.',
    });
  }
}

function requireAction(existing: ExistingRows): BackfillAction {
  if (existing === 'keep') {
    throw new ToolError('INVALID_OPTION', 'backfill --existing keep has nothing to do: keep leaves the rows stored before enforcement as they are.', { fix: existingChoiceFix });
  }
  return existing;
}

/**
 * Counts, per table, the rows whose user id is not a pseudonym: a full scan
 * of each table, each in a transaction with the lock policy's timeout and
 * retries, so that a table locked by another session cannot make it wait
 * without end.
 */
export async function countRealIds(client: pg.ClientBase, tables: readonly UsageTable[], lock: LockPolicy): Promise<Map<UsageTable, number>> {
  const counts = new Map<UsageTable, number>();
  for (const table of tables) {
    const [row] = await inLockedTransaction(client, lock, () =>
      queryRows<{ rows: string }>(client, 'queries/count-real-ids.sql', [], {
        table: qualified(table.schema, table.name),
        column: ident(table.userColumns[0]),
      }),
    );
    counts.set(table, Number(row.rows));
  }
  return counts;
}

/**
 * Describes what a choice for the existing rows does, with the number of
 * rows with real user ids in each table the mode protects, for the
 * confirmation of apply and backfill.
 */
export function describeExistingRows(
  existing: ExistingRows,
  mode: Mode,
  scope: Scope,
  counts: ReadonlyMap<UsageTable, number>,
  batchSize: number,
  command: 'apply' | 'backfill',
): string[] {
  if (mode === 'off') return [];
  const when = command === 'apply' ? 'After the switch commits, ' : '';
  const lines = [`Existing rows (stored before enforcement): ${existing}.`];
  for (const [table, rows] of counts) lines.push(`  ${table.name}: ${rows} row(s) with real user ids.`);

  if (existing === 'keep' && mode === 'anonymize') {
    lines.push(
      "They stay identifiable: per-user insights from before the switch stay visible, and Coder's distinct-user counts over a period that spans the switch count each person twice (once under the real id, once under the pseudonym).",
    );
  }
  if (existing === 'keep' && mode === 'disable') {
    lines.push('They stay identifiable, and Coder keeps showing them until it deletes them; it never deletes workspace_app_stats.');
  }
  if (existing === 'pseudonymize') {
    lines.push(
      `${when}${when ? 'their' : 'Their'} user ids are replaced by the pseudonyms new rows get, in batches of ${batchSize} rows that each commit on their own. Per-user insights from before the switch disappear; distinct-user counts and minutes stay exact. A row whose pseudonymized twin exists is merged into it.`,
    );
  }
  if (existing === 'purge') {
    lines.push(
      `${when}${when ? 'they' : 'They'} are deleted for good, in batches of ${batchSize} rows that each commit on their own: usage minutes, active users and app usage from before the switch are lost. Rows that hold pseudonyms are kept.`,
    );
  }
  if (existing !== 'keep' && mode === 'anonymize' && scope === 'rollup') {
    lines.push('Scope rollup does not protect workspace_agent_stats and workspace_app_stats, so their rows stay as they are.');
  }
  return lines;
}

async function describePlan(client: pg.ClientBase, plan: BackfillPlan, state: RecordedState, settings: BackfillSettings): Promise<string[]> {
  const counts = new Map<UsageTable, number>();
  const notes: string[] = [];
  for (const planned of plan.walks) {
    counts.set(planned.walk.table, planned.realIdsLeft);
    for (const [follower, rows] of await countRealIds(client, planned.walk.followers, settings.lock)) counts.set(follower, rows);
    if (planned.finishedEarlier && planned.recorded?.finishedAt) {
      notes.push(`${planned.walk.table.name}: ${plan.action} finished on ${planned.recorded.finishedAt.toISOString()}; nothing is left to do.`);
    } else if (planned.resumeFrom && planned.recorded) {
      notes.push(`${planned.walk.table.name}: continues the interrupted ${plan.action} after ${planned.recorded.rowsWalked} row(s) walked.`);
    }
  }
  return [...describeExistingRows(plan.action, state.mode, state.scope ?? 'source', counts, settings.batchSize, 'backfill'), ...notes];
}

/**
 * Checks that the recorded enforcement lets a backfill run: a mode must be
 * installed, pseudonymize needs anonymize, and enforcement must match what
 * this version installs, because otherwise new rows with real ids keep
 * arriving. Returns the recorded state.
 */
async function checkInstallation(client: pg.ClientBase, detection: Detection, schema: string, action: BackfillAction): Promise<RecordedState> {
  const installation = await inspectInstallation(client, detection, schema);
  const state = installation.state;
  if (!state) {
    throw new ToolError('STATE_INVALID', `No enforcement is installed in schema ${schema}, so new rows keep their real ids and there is nowhere to record a backfill's position.`, {
      fix: `Run "insights-privacy apply --mode anonymize --existing ${action}"${action === 'purge' ? ' (or --mode disable --existing purge)' : ''}, which runs the backfill after installing enforcement.`,
    });
  }
  checkExistingChoice(state.mode, action);

  const errors = findDrift(detection, installation, schema).filter((finding) => finding.severity === 'error');
  if (errors.length > 0) {
    throw new ToolError(
      'STATE_INVALID',
      `Enforcement in schema ${schema} does not match mode ${state.mode}: ${errors.map((finding) => `${finding.object} ${finding.problem}`).join('; ')}.`,
      { fix: 'Run "insights-privacy apply" to repair it, then run the backfill again.' },
    );
  }
  if (!(await progressTableExists(client, schema))) {
    throw new ToolError('STATE_INVALID', `Schema ${schema} has no backfill_progress table: it was installed by an earlier version of insights-privacy.`, {
      fix: 'Run "insights-privacy apply" once with the recorded mode; it adds the table.',
    });
  }
  return state;
}

/** Stops a batch when enforcement changed since the run started, for example by an apply in another session. */
function stateGuard(client: pg.ClientBase, schema: string, started: RecordedState): () => Promise<void> {
  return async () => {
    const current = await readState(client, schema);
    if (!current || current.mode !== started.mode || current.scope !== started.scope) {
      const now = current ? `${current.mode}${current.scope ? ` (scope ${current.scope})` : ''}` : 'off';
      throw new ToolError('STATE_INVALID', `Enforcement changed while the backfill ran: it is now ${now}.`, {
        fix: 'Run the backfill again if the new mode allows it; it continues after the last committed batch.',
      });
    }
  };
}

/**
 * Pseudonymizes or purges the rows stored before enforcement, in the tables
 * the recorded mode protects. Holds a session lock so that one backfill
 * runs at a time, plans (a scan of each table), requests confirmation when
 * there is work, then walks each table in batches. Never runs inside
 * another transaction: each batch commits on its own.
 */
export async function runBackfill(client: pg.ClientBase, settings: BackfillSettings): Promise<BackfillCommandResult> {
  validateSchemaName(settings.schema);
  const action = requireAction(settings.existing);
  const profile = getProfile(settings.profile);
  const detection = await profile.detect(client);
  const database = await currentDatabase(client);
  const state = await checkInstallation(client, detection, settings.schema, action);

  await acquireBackfillLock(client, settings.lock.lockTimeoutMs);
  try {
    const tables = protectedTables(detection, state.mode, state.scope ?? 'source');
    const walks = await profile.prepareBackfill(client, detection, { schema: settings.schema, tables });
    const plan = await planBackfill(client, settings.schema, action, walks, settings.lock);
    const summary = await describePlan(client, plan, state, settings);
    const base = { database, application: detection.description, schema: settings.schema, batchSize: settings.batchSize, summary };

    const work = plan.walks.some((planned) => !planned.finishedEarlier);
    if (work && settings.confirm && !(await settings.confirm(summary))) {
      throw new ToolError('ABORTED', 'Aborted: nothing was changed.', { fix: 'Run again and confirm, or pass --yes.' });
    }

    const result = await runBackfillPlan(client, plan, {
      batchSize: settings.batchSize,
      lock: settings.lock,
      signal: settings.signal,
      onProgress: settings.onProgress,
      beforeBatch: stateGuard(client, settings.schema, state),
    });
    return { ...base, ...result };
  } finally {
    await releaseBackfillLock(client).catch(() => undefined);
  }
}
