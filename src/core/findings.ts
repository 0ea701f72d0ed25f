import type { Detection, ForeignKeyState, Scope } from '../profiles/types.js';
import {
  protectedTables,
  pseudonymFunctions,
  replacesForeignKeys,
  triggerFunction,
  stateFunctions,
  triggerFunctionName,
  triggerName,
  type ExpectedFunction,
  type PseudonymSetup,
} from './enforcement.js';
import type { Installation, InstalledFunction, InstalledTrigger, OtherTrigger, RecordedState, RecordedTable, TableCatalog } from './inspect.js';
import type { UsageTable } from '../profiles/types.js';
import { toolVersion } from './version.js';
import { recordedPolicy, type KeyPolicy } from './keys.js';

/** `error` fails `status --check`; `warning` and `info` are shown only. */
export type Severity = 'error' | 'warning' | 'info';

/** Kinds of findings. */
export type FindingCode =
  | 'not-installed'
  | 'trigger-without-state'
  | 'extension-missing'
  | 'function-changed'
  | 'key-pads-missing'
  | 'key-missing'
  | 'trigger-not-expected'
  | 'trigger-changed'
  | 'foreign-key-restored'
  | 'foreign-key-replaced'
  | 'version-differs'
  | 'state-edited'
  | 'table-recreated'
  | 'table-altered'
  | 'other-trigger'
  | 'rule';

/** One difference between what the recorded mode requires and what the catalog has. */
export interface Finding {
  readonly severity: Severity;
  /** A stable name of the kind of finding, for scripts; see docs/status-json.md. */
  readonly code: FindingCode;
  /** The database object concerned, for example a table or function name. */
  readonly object: string;
  readonly problem: string;
  /** The command that repairs it. */
  readonly fix: string;
}

/** pg_trigger.tgtype bits (PostgreSQL's trigger.h): row level, BEFORE, INSERT, UPDATE. */
const tgTypeRow = 1;
const tgTypeBefore = 2;
const tgTypeInsert = 4;
const tgTypeUpdate = 16;

/** A trigger that an operator accepted with `apply --allow-trigger`, as the state options record it. */
export interface AllowedTrigger {
  readonly table: string;
  readonly trigger: string;
  /** The trigger's digest when it was accepted (see OtherTrigger.digest). */
  readonly digest: string;
}

/** Reads the accepted triggers from the recorded options; a malformed entry counts as not accepted. */
export function allowedTriggers(state: RecordedState | null): AllowedTrigger[] {
  const recorded = state?.options.allowedTriggers;
  if (!Array.isArray(recorded)) return [];
  return recorded.filter(
    (entry): entry is AllowedTrigger =>
      typeof entry === 'object' && entry !== null && typeof entry.table === 'string' && typeof entry.trigger === 'string' && typeof entry.digest === 'string',
  );
}

const describeConfig = (config: string) => config || 'no fixed search_path';

function functionProblems(expected: ExpectedFunction, installed: InstalledFunction | undefined): string | null {
  if (!installed) return 'is missing';
  if (installed.body !== expected.body) return 'has a body that differs from what this version of insights-privacy installs (replaced or edited)';
  if (installed.securityDefiner !== expected.securityDefiner) return expected.securityDefiner ? 'is not SECURITY DEFINER' : 'is SECURITY DEFINER';
  if (installed.config !== expected.config) return `runs with "${describeConfig(installed.config)}" instead of "${describeConfig(expected.config)}"`;
  if (installed.publicExecute) return 'is executable by PUBLIC';
  return null;
}

function triggerProblems(trigger: InstalledTrigger | null, schema: string, functionName: string, mode: 'anonymize' | 'disable', userColumns: readonly string[]): string | null {
  if (!trigger) return 'has no insights-privacy trigger';
  if (trigger.enabled !== 'A') {
    const state = { O: 'enabled only for session_replication_role origin', R: 'enabled only for replicas', D: 'disabled' }[trigger.enabled] ?? trigger.enabled;
    return `has the insights-privacy trigger ${state}, not ENABLE ALWAYS`;
  }
  if (trigger.functionSchema !== schema || trigger.functionName !== functionName) {
    return `has an insights-privacy trigger that calls ${trigger.functionSchema}.${trigger.functionName} instead of ${schema}.${functionName}`;
  }
  const wanted = tgTypeRow | tgTypeBefore | tgTypeInsert | (mode === 'anonymize' ? tgTypeUpdate : 0);
  const columnsMatch = mode === 'disable' || [...trigger.updateColumns].sort().join(',') === [...userColumns].sort().join(',');
  if (trigger.type !== wanted || !columnsMatch) return `has an insights-privacy trigger with the wrong events: ${trigger.definition}`;
  return null;
}

function foreignKeyFinding(state: ForeignKeyState, replaced: boolean): Finding | null {
  const object = `${state.table.name}.${state.name}`;
  if (replaced && state.foreignKey) {
    return {
      severity: 'error',
      object,
      code: 'foreign-key-restored',
      problem: 'the foreign key to users is back (a Coder upgrade may have re-created it); inserts of pseudonymized rows fail until it is replaced',
      fix: 'insights-privacy apply',
    };
  }
  if (!replaced && state.placeholder && !state.foreignKey) {
    return { severity: 'error', code: 'foreign-key-replaced', object, problem: 'the foreign key to users is still replaced by the insights-privacy placeholder', fix: 'insights-privacy apply' };
  }
  return null;
}

const keyPadColumns = ['inner_key_pad', 'outer_key_pad'];

/**
 * The pseudonym setup that the recorded state and the installed pgcrypto
 * call for, which the expected anonymize functions are rendered with; null
 * when the recorded implementation is pgcrypto and pgcrypto is missing, so
 * that nothing can be compared.
 */
export function expectedPseudonymSetup(installation: Installation, state: RecordedState | null): PseudonymSetup | null {
  const hmac = installation.hmac ?? 'pgcrypto';
  if (hmac === 'pgcrypto' && (!installation.crypto || installation.crypto.create)) return null;
  return { hmac, crypto: installation.crypto, policy: recordedPolicy(state) };
}

/** Compares the pseudonym functions and keys with what the recorded HMAC implementation and rotation policy need. */
function pseudonymFindings(installation: Installation, schema: string, policy: KeyPolicy): Finding[] {
  const findings: Finding[] = [];
  const hmac = installation.hmac ?? 'pgcrypto';
  const setup = expectedPseudonymSetup(installation, installation.state);

  if (!setup) {
    findings.push({ severity: 'error', code: 'extension-missing', object: 'extension pgcrypto', problem: 'is missing, so pseudonyms cannot be computed', fix: 'insights-privacy apply' });
  } else {
    for (const expected of pseudonymFunctions(schema, setup.hmac, setup.crypto, policy)) {
      const problem = functionProblems(expected, installation.functions.get(expected.name));
      if (problem) findings.push({ severity: 'error', code: 'function-changed', object: `${schema}.${expected.name}()`, problem, fix: 'insights-privacy apply' });
    }
  }

  const missingPads = keyPadColumns.filter((column) => !installation.keyPadColumns.includes(column));
  if (hmac === 'core' && missingPads.length > 0) {
    findings.push({
      severity: 'error',
      code: 'key-pads-missing',
      object: `${schema}.keys`,
      problem: `lacks the generated column(s) ${missingPads.join(', ')} that the core HMAC implementation reads; every write to a protected table fails`,
      fix: 'insights-privacy apply',
    });
  }
  // Period policies create their keys on first use, so only policy none needs one in advance.
  if (policy === 'none' && !installation.keys.some((key) => key.policy === 'none')) {
    findings.push({ severity: 'error', code: 'key-missing', object: `${schema}.keys`, problem: 'holds no key; every write to a protected table fails', fix: 'insights-privacy apply' });
  }
  return findings;
}

/**
 * Tells whether trigger `name` fires before the tool's trigger. PostgreSQL
 * fires the triggers of one event in the order of their names, compared
 * byte by byte (strcmp).
 */
function firesBeforeTool(name: string): boolean {
  return Buffer.compare(Buffer.from(name, 'utf8'), Buffer.from(triggerName, 'utf8')) < 0;
}

/**
 * Describes how another row trigger defeats enforcement, or returns null
 * when it cannot: a BEFORE trigger that fires earlier receives the raw user
 * id, and one that fires later can overwrite the pseudonym. Under disable the
 * tool's trigger drops the row, so only earlier INSERT triggers see it.
 */
function otherTriggerProblem(trigger: OtherTrigger, mode: 'anonymize' | 'disable'): string | null {
  if (trigger.enabled === 'D') return null;
  const rowBefore = (trigger.type & tgTypeRow) !== 0 && (trigger.type & tgTypeBefore) !== 0;
  const onInsert = (trigger.type & tgTypeInsert) !== 0;
  const onUpdate = (trigger.type & tgTypeUpdate) !== 0;
  if (!rowBefore) return null;

  const before = firesBeforeTool(trigger.name);
  if (mode === 'disable') {
    return onInsert && before ? `has trigger ${trigger.name}, which fires before ${triggerName} and so receives every new row, raw user id included, before disable drops it` : null;
  }
  if (!onInsert && !onUpdate) return null;
  return before
    ? `has trigger ${trigger.name}, which fires before ${triggerName} and so receives the raw user id of every new row`
    : `has trigger ${trigger.name}, which fires after ${triggerName} and so can replace the pseudonym with a raw user id`;
}

function otherTriggerFindings(table: UsageTable, catalog: TableCatalog, mode: 'anonymize' | 'disable', allowed: AllowedTrigger[]): Finding[] {
  const findings: Finding[] = [];
  for (const trigger of catalog.otherTriggers) {
    const problem = otherTriggerProblem(trigger, mode);
    if (!problem) continue;
    const accepted = allowed.find((entry) => entry.table === table.name && entry.trigger === trigger.name);
    if (accepted?.digest === trigger.digest) continue;
    const acceptCommand = `insights-privacy apply --allow-trigger ${table.name}.${trigger.name}`;
    findings.push({
      severity: 'error',
      code: 'other-trigger',
      object: `${table.name}.${trigger.name}`,
      problem: accepted ? `${problem}; it was accepted with --allow-trigger, but its definition or function changed since` : problem,
      fix: `Review trigger ${trigger.name} (function ${trigger.functionSchema}.${trigger.functionName}): drop or disable it (ALTER TABLE ${table.name} DISABLE TRIGGER ${trigger.name}), or accept it with "${acceptCommand}"`,
    });
  }

  for (const rule of catalog.rules) {
    if (rule.enabled === 'D' || (rule.event !== '2' && rule.event !== '3')) continue;
    findings.push({
      severity: 'error',
      code: 'rule',
      object: `${table.name}.${rule.name}`,
      problem: `has rewrite rule ${rule.name}, which rewrites ${rule.event === '3' ? 'INSERT' : 'UPDATE'} statements before any trigger runs, so it can copy raw user ids elsewhere or bypass the trigger`,
      fix: `Drop the rule (DROP RULE ${rule.name} ON ${table.name}); protected tables must not have INSERT or UPDATE rules`,
    });
  }
  return findings;
}

/** Compares a protected table with its identity when the state was recorded. */
function tableIdentityFinding(table: UsageTable, catalog: TableCatalog, recorded: RecordedTable | undefined, mode: 'anonymize' | 'disable'): Finding | null {
  if (!recorded) return null;
  if (recorded.oid !== table.oid) {
    const unprotected = mode === 'anonymize' ? 'stored with real user ids' : 'stored although disable drops new rows';
    return {
      severity: 'error',
      code: 'table-recreated',
      object: table.name,
      problem: `was dropped and re-created after insights-privacy recorded it (table oid ${recorded.oid}, now ${table.oid}), for example by an application upgrade; rows written to the new table before the next apply are ${unprotected}`,
      fix: `insights-privacy apply, then "insights-privacy backfill --existing ${mode === 'anonymize' ? 'pseudonymize' : 'purge'}" for the rows written meanwhile`,
    };
  }

  const added = catalog.columns.filter((column) => !recorded.columns.includes(column));
  const removed = recorded.columns.filter((column) => !catalog.columns.includes(column));
  if (added.length === 0 && removed.length === 0) return null;

  const parts: string[] = [];
  if (added.length > 0) parts.push(`added or changed column(s) ${added.join(', ')}`);
  if (removed.length > 0) parts.push(`removed or changed column(s) ${removed.join(', ')}`);
  const newUuids = added.filter((column) => / uuid$/.test(column) && !table.userColumns.includes(column.split(' ')[0]));
  const warning = newUuids.length > 0 ? `; the new uuid column(s) ${newUuids.map((column) => column.split(' ')[0]).join(', ')} are not pseudonymized` : '';
  return {
    severity: 'error',
    code: 'table-altered',
    object: table.name,
    problem: `was altered after insights-privacy recorded it: ${parts.join('; ')}${warning}`,
    fix: 'Check that no new column holds a user id, then run insights-privacy apply, which records the new columns',
  };
}

/** Reports a state row that no longer matches the digest stored with it. */
function stateFinding(state: RecordedState, schema: string): Finding | null {
  if (state.digestMatches !== false) return null;
  const scope = state.mode === 'anonymize' && state.scope ? ` --scope ${state.scope}` : '';
  return {
    severity: 'error',
    code: 'state-edited',
    object: `${schema}.state`,
    problem: `was changed outside insights-privacy: the row no longer matches the digest that apply stored with it (it now records mode ${state.mode})`,
    fix: `Run insights-privacy apply with the mode you intend, for example "insights-privacy apply --mode ${state.mode}${scope}", which records the state again`,
  };
}

/**
 * Compares the catalog with what the recorded mode requires. With no
 * recorded mode, any leftover trigger is an error and the absence of
 * enforcement is reported as an error too, since `status --check` guards
 * that enforcement is in place.
 */
export function findDrift(detection: Detection, installation: Installation, schema: string): Finding[] {
  const findings: Finding[] = [];
  const state = installation.state;

  if (!state) {
    findings.push({
      severity: 'error',
      code: 'not-installed',
      object: installation.schemaPresent ? `${schema}.state` : `schema ${schema}`,
      problem: installation.schemaPresent ? 'has no recorded mode' : 'is missing: no enforcement is installed',
      fix: 'insights-privacy apply --mode anonymize (or --mode disable)',
    });
    for (const [table, trigger] of installation.triggers) {
      if (trigger) findings.push({ severity: 'error', code: 'trigger-without-state', object: table.name, problem: 'has an insights-privacy trigger without recorded state', fix: 'insights-privacy apply --mode off' });
    }
    return findings;
  }

  const mode = state.mode;
  const scope: Scope = state.scope ?? 'source';
  const protectedSet = new Set(protectedTables(detection, mode, scope));

  const edited = stateFinding(state, schema);
  if (edited) findings.push(edited);
  for (const expected of stateFunctions(schema)) {
    const problem = functionProblems(expected, installation.functions.get(expected.name));
    if (problem) findings.push({ severity: 'error', code: 'function-changed', object: `${schema}.${expected.name}()`, problem, fix: 'insights-privacy apply' });
  }
  if (mode === 'anonymize') findings.push(...pseudonymFindings(installation, schema, recordedPolicy(state)));
  const allowed = allowedTriggers(state);

  for (const table of detection.tables) {
    const trigger = installation.triggers.get(table) ?? null;
    if (!protectedSet.has(table)) {
      if (trigger) findings.push({ severity: 'error', code: 'trigger-not-expected', object: table.name, problem: `has an insights-privacy trigger, but ${mode} with scope ${scope} does not protect it`, fix: 'insights-privacy apply' });
      continue;
    }
    const triggerProblem = triggerProblems(trigger, schema, triggerFunctionName(table), mode, table.userColumns);
    if (triggerProblem) findings.push({ severity: 'error', code: 'trigger-changed', object: table.name, problem: triggerProblem, fix: 'insights-privacy apply' });
    // Without pgcrypto the anonymize trigger functions cannot be rendered;
    // the missing extension is an error of its own above.
    const setup = mode === 'anonymize' ? expectedPseudonymSetup(installation, state) : undefined;
    if (setup !== null) {
      const expected = triggerFunction(schema, table, mode, setup);
      const functionProblem = functionProblems(expected, installation.functions.get(expected.name));
      if (functionProblem) findings.push({ severity: 'error', code: 'function-changed', object: `${schema}.${expected.name}()`, problem: functionProblem, fix: 'insights-privacy apply' });
    }

    const catalog = installation.tableCatalogs.get(table);
    if (!catalog) continue;
    const identity = tableIdentityFinding(table, catalog, state.tables[`${table.schema}.${table.name}`], mode);
    if (identity) findings.push(identity);
    findings.push(...otherTriggerFindings(table, catalog, mode, allowed));
  }

  for (const foreignKey of detection.userForeignKeys) {
    const finding = foreignKeyFinding(foreignKey, replacesForeignKeys(mode, scope));
    if (finding) findings.push(finding);
  }

  if (state.toolVersion !== toolVersion) {
    findings.push({ severity: 'warning', code: 'version-differs', object: `${schema}.state`, problem: `was applied by insights-privacy ${state.toolVersion}; this is ${toolVersion}`, fix: 'insights-privacy apply' });
  }
  return findings;
}
