import type { Detection, ForeignKeyState, Scope } from '../profiles/types.js';
import {
  protectedTables,
  pseudonymFunctions,
  replacesForeignKeys,
  triggerFunction,
  triggerFunctionName,
  type ExpectedFunction,
  type PseudonymSetup,
} from './enforcement.js';
import type { Installation, InstalledFunction, InstalledTrigger, RecordedState } from './inspect.js';
import { toolVersion } from './version.js';
import { recordedPolicy, type KeyPolicy } from './keys.js';

/** `error` fails `status --check`; `warning` and `info` are shown only. */
export type Severity = 'error' | 'warning' | 'info';

/** One difference between what the recorded mode requires and what the catalog has. */
export interface Finding {
  readonly severity: Severity;
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
      problem: 'the foreign key to users is back (a Coder upgrade may have re-created it); inserts of pseudonymized rows fail until it is replaced',
      fix: 'insights-privacy apply',
    };
  }
  if (!replaced && state.placeholder && !state.foreignKey) {
    return { severity: 'error', object, problem: 'the foreign key to users is still replaced by the insights-privacy placeholder', fix: 'insights-privacy apply' };
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
    findings.push({ severity: 'error', object: 'extension pgcrypto', problem: 'is missing, so pseudonyms cannot be computed', fix: 'insights-privacy apply' });
  } else {
    for (const expected of pseudonymFunctions(schema, setup.hmac, setup.crypto, policy)) {
      const problem = functionProblems(expected, installation.functions.get(expected.name));
      if (problem) findings.push({ severity: 'error', object: `${schema}.${expected.name}()`, problem, fix: 'insights-privacy apply' });
    }
  }

  const missingPads = keyPadColumns.filter((column) => !installation.keyPadColumns.includes(column));
  if (hmac === 'core' && missingPads.length > 0) {
    findings.push({
      severity: 'error',
      object: `${schema}.keys`,
      problem: `lacks the generated column(s) ${missingPads.join(', ')} that the core HMAC implementation reads; every write to a protected table fails`,
      fix: 'insights-privacy apply',
    });
  }
  // Period policies create their keys on first use, so only policy none needs one in advance.
  if (policy === 'none' && !installation.keys.some((key) => key.policy === 'none')) {
    findings.push({ severity: 'error', object: `${schema}.keys`, problem: 'holds no key; every write to a protected table fails', fix: 'insights-privacy apply' });
  }
  return findings;
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
      object: installation.schemaPresent ? `${schema}.state` : `schema ${schema}`,
      problem: installation.schemaPresent ? 'has no recorded mode' : 'is missing: no enforcement is installed',
      fix: 'insights-privacy apply --mode anonymize (or --mode disable)',
    });
    for (const [table, trigger] of installation.triggers) {
      if (trigger) findings.push({ severity: 'error', object: table.name, problem: 'has an insights-privacy trigger without recorded state', fix: 'insights-privacy apply --mode off' });
    }
    return findings;
  }

  const mode = state.mode;
  const scope: Scope = state.scope ?? 'source';
  const protectedSet = new Set(protectedTables(detection, mode, scope));

  if (mode === 'anonymize') findings.push(...pseudonymFindings(installation, schema, recordedPolicy(state)));

  for (const table of detection.tables) {
    const trigger = installation.triggers.get(table) ?? null;
    if (!protectedSet.has(table)) {
      if (trigger) findings.push({ severity: 'error', object: table.name, problem: `has an insights-privacy trigger, but ${mode} with scope ${scope} does not protect it`, fix: 'insights-privacy apply' });
      continue;
    }
    const triggerProblem = triggerProblems(trigger, schema, triggerFunctionName(table), mode, table.userColumns);
    if (triggerProblem) findings.push({ severity: 'error', object: table.name, problem: triggerProblem, fix: 'insights-privacy apply' });
    // Without pgcrypto the anonymize trigger functions cannot be rendered;
    // the missing extension is an error of its own above.
    const setup = mode === 'anonymize' ? expectedPseudonymSetup(installation, state) : undefined;
    if (setup === null) continue;
    const expected = triggerFunction(schema, table, mode, setup);
    const functionProblem = functionProblems(expected, installation.functions.get(expected.name));
    if (functionProblem) findings.push({ severity: 'error', object: `${schema}.${expected.name}()`, problem: functionProblem, fix: 'insights-privacy apply' });
  }

  for (const foreignKey of detection.userForeignKeys) {
    const finding = foreignKeyFinding(foreignKey, replacesForeignKeys(mode, scope));
    if (finding) findings.push(finding);
  }

  if (state.toolVersion !== toolVersion) {
    findings.push({ severity: 'warning', object: `${schema}.state`, problem: `was applied by insights-privacy ${state.toolVersion}; this is ${toolVersion}`, fix: 'insights-privacy apply' });
  }
  return findings;
}
