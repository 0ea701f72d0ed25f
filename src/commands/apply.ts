import type pg from 'pg';
import { defaultBatchSize, type BackfillProgress, type ExistingRows } from '../core/backfill.js';
import { progressTableExists } from '../core/backfill-progress.js';
import { ToolError } from '../core/errors.js';
import {
  describeHmac,
  planApply,
  planConversionStart,
  protectedTables,
  replacesForeignKeys,
  type HmacImplementation,
  type HmacSetting,
  type Mode,
} from '../core/enforcement.js';
import { execute, queryRows } from '../core/execute.js';
import { allowedTriggers, findDrift, type AllowedTrigger, type Finding } from '../core/findings.js';
import { currentDatabase, inspectInstallation, type Installation, type RecordedState } from '../core/inspect.js';
import { checkPrivileges, validateSchemaName } from '../core/preflight.js';
import { ident, qualified, type Statement } from '../core/sql.js';
import { runLocked, type LockPolicy } from '../core/transaction.js';
import { toolVersion } from '../core/version.js';
import { periodName, recordedPolicy, type KeyPolicy } from '../core/keys.js';
import { validateForeignKey } from '../profiles/foreign-keys.js';
import { getProfile } from '../profiles/index.js';
import type { Detection, Profile, Scope, UsageTable, UserForeignKey } from '../profiles/types.js';
import { checkExistingChoice, countRealIds, describeExistingRows, runBackfill, type BackfillCommandResult } from './backfill.js';

/** Settings of `apply`, validated by the caller. */
export interface ApplySettings {
  readonly mode: Mode;
  /** Anonymize scope; ignored by other modes. Default `source`. */
  readonly scope: Scope;
  /** The tool's private schema. Default `insights_privacy`. */
  readonly schema: string;
  /** Rotation policy of the pseudonym key under anonymize. Default `none`. */
  readonly rotate?: KeyPolicy;
  readonly profile: string;
  /**
   * HMAC implementation of anonymize: `pgcrypto`, `core` (sha256(), no
   * extension), or `auto` for pgcrypto when the server offers it and core
   * otherwise. Ignored by other modes. Default `auto`.
   */
  readonly hmac?: HmacSetting;
  /** Build and return the statements without running them. */
  readonly dryRun: boolean;
  readonly lock: LockPolicy;
  /**
   * Asked before anything changes, with a description of the change;
   * returning false aborts. Absent means confirmed (`--yes`).
   */
  readonly confirm?: (summary: string[]) => Promise<boolean>;
  /**
   * Choice for the rows stored before enforcement; default keep.
   * Pseudonymize and purge run a backfill after the enforcement transaction
   * has committed, never inside it.
   */
  readonly existing?: ExistingRows;
  /** Rows per backfill batch. Default 5000. */
  readonly batchSize?: number;
  /**
   * Other triggers on protected tables, as "table.trigger", accepted after
   * review. Apply records each with a digest of its definition. Status
   * reports every other trigger, and an accepted one that changed.
   */
  readonly allowTriggers?: readonly string[];
  /** Stops the backfill after its current batch. */
  readonly signal?: AbortSignal;
  readonly onBackfillProgress?: (progress: BackfillProgress) => void;
}

/** Outcome of `apply`. */
export interface ApplyResult {
  readonly outcome: 'applied' | 'unchanged' | 'dry-run';
  readonly mode: Mode;
  readonly scope: Scope | null;
  /** The HMAC implementation that anonymize uses; null for other modes. */
  readonly hmac: HmacImplementation | null;
  readonly schema: string;
  readonly database: string;
  /** The detected application, for example "Coder (2026 column set)". */
  readonly application: string;
  readonly summary: string[];
  readonly statements: Statement[];
  /** Foreign keys restored by this run, and whether each could be validated. */
  readonly restoredForeignKeys: { name: string; validated: boolean }[];
  readonly existing: ExistingRows;
  /** The backfill that ran after the enforcement transaction; null with existing keep and in dry runs. */
  readonly backfill: BackfillCommandResult | null;
}

/** Tells whether the database already has the requested enforcement, free of drift, so that apply has nothing to do. */
export function isUnchanged(settings: ApplySettings, detection: Detection, installation: Installation, hmac: HmacImplementation | null, progressTable: boolean): boolean {
  if (settings.mode === 'off') {
    const leftovers = [...installation.triggers.values()].some(Boolean) || detection.userForeignKeys.some((state) => state.placeholder && !state.foreignKey);
    return !installation.schemaPresent && !leftovers;
  }
  const state = installation.state;
  if (!state || state.mode !== settings.mode || state.profile !== detection.profile || state.toolVersion !== toolVersion) return false;
  if (settings.mode === 'anonymize' && (state.scope !== settings.scope || installation.hmac !== hmac)) return false;
  if (settings.mode === 'anonymize' && recordedPolicy(state) !== (settings.rotate ?? 'none')) return false;
  if (!progressTable) return false;
  if (!sameAllowedTriggers(allowedTriggers(state), acceptTriggers(settings, detection, installation))) return false;
  return findDrift(detection, installation, settings.schema).every((finding) => finding.severity !== 'error' || !repairedByApply(finding));
}

/** Tells whether apply repairs a finding; another trigger or a rule on a protected table needs the operator. */
function repairedByApply(finding: Finding): boolean {
  return finding.code !== 'other-trigger' && finding.code !== 'rule';
}

function sameAllowedTriggers(recorded: AllowedTrigger[], requested: AllowedTrigger[]): boolean {
  const key = (entry: AllowedTrigger) => `${entry.table}\n${entry.trigger}\n${entry.digest}`;
  const recordedKeys = recorded.map(key).sort();
  const requestedKeys = requested.map(key).sort();
  return recordedKeys.length === requestedKeys.length && recordedKeys.every((value, index) => value === requestedKeys[index]);
}

/**
 * Resolves the --allow-trigger names against the catalog, with the digest
 * that status compares later. Under off nothing is recorded.
 */
function acceptTriggers(settings: ApplySettings, detection: Detection, installation: Installation): AllowedTrigger[] {
  if (settings.mode === 'off') return [];
  const accepted: AllowedTrigger[] = [];
  for (const name of settings.allowTriggers ?? []) {
    const [tableName, triggerName] = name.split('.');
    const table = detection.tables.find((candidate) => candidate.name === tableName);
    if (!table) {
      throw new ToolError('INVALID_OPTION', `--allow-trigger ${name}: ${tableName} is not a usage table of ${detection.description}.`, {
        fix: `Name the table as one of: ${detection.tables.map((candidate) => candidate.name).join(', ')}.`,
      });
    }
    const trigger = installation.tableCatalogs.get(table)?.otherTriggers.find((candidate) => candidate.name === triggerName);
    if (!trigger) {
      throw new ToolError('INVALID_OPTION', `--allow-trigger ${name}: table ${table.name} has no trigger named ${triggerName}.`, {
        fix: `Check the name with \\d ${table.name} in psql, or remove it from --allow-trigger (INSIGHTS_PRIVACY_ALLOW_TRIGGERS, allowTriggers in the config file).`,
      });
    }
    accepted.push({ table: table.name, trigger: trigger.name, digest: trigger.digest });
  }
  return accepted;
}

function describeChange(
  settings: ApplySettings,
  detection: Detection,
  installation: Installation,
  hmac: HmacImplementation | null,
  realIds: ReadonlyMap<UsageTable, number>,
): string[] {
  const lines: string[] = [];
  const scope = settings.mode === 'anonymize' ? ` (scope ${settings.scope})` : '';
  const current = installation.state ? `${installation.state.mode}${installation.state.mode === 'anonymize' ? ` (scope ${installation.state.scope})` : ''}` : 'off';
  lines.push(`Mode: ${current} -> ${settings.mode}${scope}, in schema ${settings.schema}.`);

  const tables = protectedTables(detection, settings.mode, settings.scope).map((table) => table.name);
  if (settings.mode === 'anonymize') lines.push(`New rows get pseudonymous user ids in: ${tables.join(', ')}.`);
  if (hmac) lines.push(describeHmacChange(installation, hmac));
  if (settings.mode === 'disable') lines.push(`New rows are dropped before they are stored in: ${tables.join(', ')}.`);
  if (settings.mode === 'off') lines.push('All triggers, functions, keys and the private schema are removed; stored rows stay as they are.');
  if (settings.mode === 'off' && installation.keys.length > 0) lines.push('The pseudonym key is deleted: stored pseudonyms can no longer be linked to new ones.');

  for (const state of detection.userForeignKeys) {
    if (replacesForeignKeys(settings.mode, settings.scope) && state.foreignKey) {
      lines.push(`Foreign key ${state.table.name}.${state.name} is replaced by a placeholder check constraint of the same name (restored by --mode off).`);
    }
    if (!replacesForeignKeys(settings.mode, settings.scope) && state.placeholder && !state.foreignKey) {
      lines.push(`Foreign key ${state.table.name}.${state.name} is restored (NOT VALID while pseudonymized rows remain).`);
    }
  }

  if (settings.mode === 'anonymize') {
    lines.push(describeCutover(settings, installation));
    lines.push(...describePolicyChange(installation, settings.rotate ?? 'none'));
  }
  lines.push(...describeExistingRows(settings.existing ?? 'keep', settings.mode, settings.scope, realIds, settings.batchSize ?? defaultBatchSize, 'apply'));
  lines.push(...describeOtherTriggers(settings, detection, installation));
  return lines;
}

/** Names the accepted triggers and warns about the others that status will report. */
function describeOtherTriggers(settings: ApplySettings, detection: Detection, installation: Installation): string[] {
  if (settings.mode === 'off') return [];
  const accepted = acceptTriggers(settings, detection, installation);
  const lines = accepted.map((entry) => `Trigger ${entry.table}.${entry.trigger} is accepted: status does not report it while its definition stays the same.`);
  for (const table of protectedTables(detection, settings.mode, settings.scope)) {
    for (const trigger of installation.tableCatalogs.get(table)?.otherTriggers ?? []) {
      if (accepted.some((entry) => entry.table === table.name && entry.trigger === trigger.name)) continue;
      lines.push(`Warning: table ${table.name} has another trigger, ${trigger.name}; status reports it if it can see or change user ids, until it is removed or accepted with --allow-trigger.`);
    }
  }
  return lines;
}

function describeCutover(settings: ApplySettings, installation: Installation): string {
  if (!convertsAhead(settings, installation)) {
    return 'Rows that Coder still recomputes or upserts (the rollup window, app sessions of the last hour) are converted to pseudonyms in the same transaction.';
  }
  if (settings.scope === 'source') {
    return (
      'Rows that Coder still recomputes or upserts (the rollup window, app sessions of the last hour) are converted to pseudonyms in batches while Coder writes on: ' +
      'first the raw tables get their triggers, then their rows and the rollup rows are converted, then a last short transaction installs the rollup tables\' triggers.'
    );
  }
  return 'Rollup rows that Coder still recomputes (the rollup window) are converted to pseudonyms in batches after their triggers are installed; the raw tables keep their rows as they are.';
}

/**
 * Tells whether anonymize converts the cut-over's rows in batches ahead of
 * the transaction that completes it, so that the table locks last only as
 * long as the DDL. A switch from scope rollup to source converts in that
 * transaction instead: while the raw rows are converted, the rollup tables'
 * anonymize triggers would make Coder's rollup fail.
 */
function convertsAhead(settings: ApplySettings, installation: Installation): boolean {
  if (settings.mode !== 'anonymize') return false;
  const state = installation.state;
  return !(settings.scope === 'source' && state?.mode === 'anonymize' && state.scope === 'rollup');
}

function describeHmacChange(installation: Installation, hmac: HmacImplementation): string {
  const next = describeHmac(hmac, installation.crypto);
  const current = installation.hmac;
  if (current && current !== hmac && installation.keys.length > 0) {
    const installed = installation.crypto?.create ? null : installation.crypto;
    return `HMAC implementation: ${describeHmac(current, installed)} -> ${next}; the keys stay, so every pseudonym stays the same.`;
  }
  return `Pseudonyms are computed with HMAC-SHA256 from ${next}.`;
}

function describePolicyChange(installation: Installation, policy: KeyPolicy): string[] {
  const current = installation.state?.mode === 'anonymize' ? recordedPolicy(installation.state) : null;
  const lines = [`Key rotation: ${current === null || current === policy ? policy : `${current} -> ${policy}`}.`];
  if (policy !== 'none') {
    lines.push(
      `Each UTC ${periodName(policy)} gets its own key, made when its first row is written, so a person counted over several periods counts once per period.`,
    );
  }
  if (current !== null && current !== policy) lines.push('Rows written from now on get other pseudonyms than the same people had before, as after a key rotation.');
  return lines;
}

/** Rejects a switch to scope rollup while pseudonymized raw rows remain in the window that Coder's rollup recomputes. */
export async function checkRollupScope(client: pg.ClientBase, profile: Profile, detection: Detection, settings: ApplySettings, installation: Installation): Promise<void> {
  if (settings.mode !== 'anonymize' || settings.scope !== 'rollup') return;
  if (installation.state?.mode === 'anonymize' && installation.state.scope === 'rollup') return;
  if (!installation.functions.has('is_pseudonym')) return;

  const blockers = await profile.rollupScopeBlockers(client, detection, ident(settings.schema));
  if (blockers > 0) {
    throw new ToolError(
      'INVALID_OPTION',
      `Scope rollup cannot start yet: ${blockers} pseudonymized row(s) in the raw tables are still inside the window that Coder's rollup recomputes, and mixing them with real ids would make the rollup's upsert fail.`,
      {
        fix: 'Under scope source every new raw row is pseudonymized, so the window never clears while it runs: apply --mode disable (or --mode off) first, then --scope rollup about two hours later, when the rollup window has moved past those rows.',
      },
    );
  }
}

async function prepare(client: pg.ClientBase, settings: ApplySettings) {
  const profile = getProfile(settings.profile);
  const detection = await profile.detect(client);
  const installation = await inspectInstallation(client, detection, settings.schema);

  for (const [table, trigger] of installation.triggers) {
    if (trigger && trigger.functionSchema !== settings.schema) {
      throw new ToolError('INVALID_OPTION', `Table ${table.name} is enforced by insights-privacy in schema ${trigger.functionSchema}, not in schema ${settings.schema}.`, {
        fix: `Pass --schema ${trigger.functionSchema}, or remove that installation first with "insights-privacy apply --mode off --schema ${trigger.functionSchema}".`,
      });
    }
  }

  const hmac = settings.mode === 'anonymize' ? chooseHmac(settings.hmac ?? 'auto', installation) : null;
  return { profile, detection, installation, hmac };
}

/** Picks the HMAC implementation of anonymize: `auto` takes pgcrypto when it is installed or available, else core. */
function chooseHmac(setting: HmacSetting, installation: Installation): HmacImplementation {
  if (setting === 'core') return 'core';
  if (installation.crypto) return 'pgcrypto';
  if (setting === 'auto') return 'core';
  throw new ToolError('MISSING_EXTENSION', 'The hmac setting is pgcrypto, but the pgcrypto extension is neither installed in this database nor available on the server.', {
    fix: 'Install the PostgreSQL contrib package on the server (pgcrypto ships with it) or ask the provider to allow pgcrypto; or pass --hmac core (or auto), which computes the same pseudonyms with core sha256().',
  });
}

/**
 * Detects the application, reads the installation and builds the statements
 * that apply runs for `settings` against the database as it is now.
 * `rawConverted` is true when the cut-over batches already converted the raw
 * tables, so the plan leaves them out.
 */
export async function planEnforcement(client: pg.ClientBase, settings: ApplySettings, rawConverted = false) {
  const { profile, detection, installation, hmac } = await prepare(client, settings);
  const allowed = acceptTriggers(settings, detection, installation);
  const recordedOptions = allowed.length > 0 ? { allowedTriggers: allowed } : {};
  const statements = planApply(detection, settings, { profile, crypto: installation.crypto, hmac, recordedOptions, rawConverted });
  const progressTable = await progressTableExists(client, settings.schema);
  return { profile, detection, installation, hmac, statements, progressTable };
}

async function validateRestoredKeys(client: pg.ClientBase, restored: UserForeignKey[], detection: Detection): Promise<{ name: string; validated: boolean }[]> {
  const results: { name: string; validated: boolean }[] = [];
  for (const foreignKey of restored) {
    const [row] = await queryRows<{ orphans: boolean }>(client, 'queries/orphan-rows.sql', [], {
      table: qualified(foreignKey.table.schema, foreignKey.table.name),
      users: qualified(detection.users.schema, detection.users.name),
      column: ident(foreignKey.columns[0]),
    });
    if (!row.orphans) for (const statement of validateForeignKey(foreignKey)) await execute(client, statement);
    results.push({ name: foreignKey.name, validated: !row.orphans });
  }
  return results;
}

/**
 * Installs, switches or removes enforcement. Runs in one transaction under
 * the tool's advisory lock; does nothing when the database already matches
 * the request.
 */
export async function applyEnforcement(client: pg.ClientBase, settings: ApplySettings): Promise<ApplyResult> {
  validateSchemaName(settings.schema);
  const existing = settings.existing ?? 'keep';
  checkExistingChoice(settings.mode, existing);
  const database = await currentDatabase(client);

  const first = await planEnforcement(client, settings);
  const base = {
    mode: settings.mode,
    scope: settings.mode === 'anonymize' ? settings.scope : null,
    hmac: first.hmac,
    schema: settings.schema,
    database,
    application: first.detection.description,
    restoredForeignKeys: [],
    existing,
    backfill: null,
  };

  if (isUnchanged(settings, first.detection, first.installation, first.hmac, first.progressTable)) {
    const unchanged = { ...base, outcome: 'unchanged' as const, summary: ['Enforcement already matches the request; nothing changed.'], statements: [] };
    if (existing === 'keep' || settings.dryRun) return unchanged;
    return { ...unchanged, backfill: await backfillExistingRows(client, settings, existing, settings.confirm) };
  }
  await checkPrivileges(client, first.detection, settings.schema);
  await checkRollupScope(client, first.profile, first.detection, settings, first.installation);

  const realIds = settings.mode === 'off' ? new Map<UsageTable, number>() : await countRealIds(client, protectedTables(first.detection, settings.mode, settings.scope), settings.lock);
  const summary = describeChange(settings, first.detection, first.installation, first.hmac, realIds);
  if (settings.dryRun) {
    // NOTE: the statements listed are those of one transaction. An anonymize
    // that convertsAhead runs the same DDL in two transactions instead, with
    // the cut-over's conversions in batches between them; the summary says so.
    if (existing !== 'keep') summary.push(`A dry run does not run the ${existing} backfill; apply runs it after the transaction commits.`);
    return { ...base, outcome: 'dry-run', summary, statements: first.statements };
  }

  if (settings.confirm && !(await settings.confirm(summary))) {
    throw new ToolError('ABORTED', 'Aborted: nothing was changed.', { fix: 'Run again and confirm, or pass --yes.' });
  }

  const ahead = convertsAhead(settings, first.installation) ? await convertCutoverAhead(client, settings) : null;
  const applied = await runLocked(client, settings.lock, async () => {
    const current = await planEnforcement(client, settings, ahead?.rawConverted);
    if (ahead) checkStateUnchanged(ahead.state, current.installation.state);
    const restored = current.detection.userForeignKeys
      .filter((state) => state.placeholder && !state.foreignKey && !replacesForeignKeys(settings.mode, settings.scope))
      .map((state) => state.placeholder as UserForeignKey);
    return { statements: current.statements, result: { statements: current.statements, restored, detection: current.detection } };
  }).catch((error: unknown) => {
    throw ahead ? unfinishedSwitch(error, settings, 'in its last transaction') : error;
  });

  const restoredForeignKeys = await validateRestoredKeys(client, applied.restored, applied.detection);
  const backfill = existing === 'keep' ? null : await backfillExistingRows(client, settings, existing, undefined);
  const statements = [...(ahead?.statements ?? []), ...applied.statements];
  return { ...base, outcome: 'applied', summary, statements, restoredForeignKeys, backfill };
}

/** Outcome of converting the cut-over's rows ahead of the last transaction. */
interface AheadResult {
  /** The statements of the first transaction. */
  readonly statements: Statement[];
  /** The recorded state when the first transaction ran, which the last one expects unchanged. */
  readonly state: RecordedState | null;
  /** Whether the raw tables' rows were converted, so that the last transaction leaves them out. */
  readonly rawConverted: boolean;
}

/**
 * Runs the first stages of anonymize: a transaction that installs the
 * functions, the key and the triggers of the tables whose rows are
 * converted (planConversionStart), then the profile's batches, each in its
 * own transaction. The state record stays as it was until the last
 * transaction, so a failure here leaves the recorded mode in place and a
 * new apply starts over.
 */
async function convertCutoverAhead(client: pg.ClientBase, settings: ApplySettings): Promise<AheadResult> {
  const started = await runLocked(client, settings.lock, async () => {
    const { profile, detection, installation, hmac } = await prepare(client, settings);
    const statements = planConversionStart(detection, settings, { profile, crypto: installation.crypto, hmac, recordedOptions: {} });
    return { statements, result: { statements, state: installation.state, profile, detection } };
  });

  try {
    await started.profile.convertAhead(client, started.detection, {
      schema: settings.schema,
      scope: settings.scope,
      batchSize: settings.batchSize ?? defaultBatchSize,
      lock: settings.lock,
    });
  } catch (error) {
    throw unfinishedSwitch(error, settings, 'while converting the rows of the rollup window');
  }
  return { statements: started.statements, state: started.state, rawConverted: settings.scope === 'source' };
}

/**
 * Adds to a failure after the first transaction of a staged anonymize what
 * is installed and that running apply again completes the switch.
 */
function unfinishedSwitch(error: unknown, settings: ApplySettings, where: string): unknown {
  if (!(error instanceof ToolError) || error.code === 'STATE_INVALID') return error;
  const installed = settings.scope === 'source' ? "the raw tables' triggers are installed" : "the rollup tables' triggers are installed";
  return new ToolError(error.code, `apply --mode anonymize stopped ${where}: ${installed}, but the mode is not switched yet. ${error.message}`, {
    fix: `${error.fix ?? ''} Run the same apply again; it converts the rows that are left and completes the switch.`.trim(),
    cause: error.cause ?? error,
    exitCode: error.exitCode,
  });
}

/** Rejects the last transaction of a staged anonymize when another apply changed the recorded state since its first transaction. */
function checkStateUnchanged(before: RecordedState | null, now: RecordedState | null): void {
  const same =
    before === now ||
    (before !== null && now !== null && before.mode === now.mode && before.scope === now.scope && before.appliedAt.getTime() === now.appliedAt.getTime());
  if (same) return;
  throw new ToolError('STATE_INVALID', 'Another apply changed the enforcement while this one converted the rows of the rollup window.', {
    fix: 'Run "insights-privacy status" to see the mode now in force, then run apply again if it is not the one you want.',
  });
}

/**
 * Runs the backfill that `existing` requests, after the enforcement
 * transaction has committed. A failure keeps the enforcement and says how
 * to continue the backfill.
 */
async function backfillExistingRows(
  client: pg.ClientBase,
  settings: ApplySettings,
  existing: Exclude<ExistingRows, 'keep'>,
  confirm: ApplySettings['confirm'],
): Promise<BackfillCommandResult> {
  try {
    return await runBackfill(client, {
      existing,
      schema: settings.schema,
      profile: settings.profile,
      batchSize: settings.batchSize ?? defaultBatchSize,
      lock: settings.lock,
      confirm,
      signal: settings.signal,
      onProgress: settings.onBackfillProgress,
    });
  } catch (error) {
    if (!(error instanceof ToolError) || error.code === 'ABORTED') throw error;
    throw new ToolError(error.code, `Mode ${settings.mode} is applied, but the ${existing} backfill of existing rows stopped: ${error.message}`, {
      fix: `${error.fix ?? ''} "insights-privacy backfill --existing ${existing}" continues it.`.trim(),
      cause: error.cause ?? error,
      exitCode: error.exitCode,
    });
  }
}
