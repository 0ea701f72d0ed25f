import { ident, joinSql, literal, qualified, SqlFragment, type Statement } from './sql.js';
import { functionBody, renderFragment, renderTemplate, templateStatements } from './templates.js';
import { replaceForeignKey, restoreForeignKey } from '../profiles/foreign-keys.js';
import type { Detection, EnforcedMode, Profile, Scope, TableRef, UsageTable } from '../profiles/types.js';
import { toolVersion } from './version.js';
import { periodVariables, type KeyPolicy } from './keys.js';

/** Mode requested from `apply`. */
export type Mode = EnforcedMode | 'off';

/** Name of the trigger on every protected table; "zz" sorts it after other BEFORE triggers. */
export const triggerName = 'zz_insights_privacy';

/** The label mixed into every HMAC input, so that these pseudonyms differ from any other use of the key. */
export const domainLabel = 'insights-privacy:user_id:v1\n';

/** Default name of the tool's private schema. */
export const defaultSchema = 'insights_privacy';

/** Enforcement requested from `apply`. */
export interface EnforcementTarget {
  readonly mode: Mode;
  readonly scope: Scope;
  /** Name of the tool's private schema. */
  readonly schema: string;
  /** Rotation policy of the pseudonym key under anonymize. Default `none`. */
  readonly rotate?: KeyPolicy;
}

/**
 * The implementation of HMAC-SHA256 behind pseudonyms: pgcrypto's hmac(), or
 * the same HMAC built on core sha256() for servers that do not offer
 * pgcrypto. Both give identical pseudonyms under the same key.
 */
export type HmacImplementation = 'pgcrypto' | 'core';

/** The `hmac` setting: an implementation, or `auto` for pgcrypto when the server offers it and core otherwise. */
export type HmacSetting = HmacImplementation | 'auto';

/** Names an HMAC implementation as `status` shows it: "core sha256()" or "pgcrypto (schema …)". */
export function describeHmac(hmac: HmacImplementation, crypto: CryptoLocation | null): string {
  if (hmac === 'core') return 'core sha256()';
  return crypto ? `pgcrypto (schema ${crypto.schema})` : 'pgcrypto (missing)';
}

/** Location of the pgcrypto functions once the plan has run. */
export interface CryptoLocation {
  /** Schema of the pgcrypto extension; the tool's schema when the plan creates it. */
  readonly schema: string;
  /** Whether the plan must create the extension. */
  readonly create: boolean;
}

/** Name of the trigger function of one table. */
export function triggerFunctionName(table: UsageTable): string {
  return `enforce_${table.name}`;
}

/** Lists the tables a mode protects: every usage table, except under anonymize with scope rollup. */
export function protectedTables(detection: Detection, mode: Mode, scope: Scope): UsageTable[] {
  if (mode === 'off') return [];
  if (mode === 'anonymize' && scope === 'rollup') return detection.tables.filter((table) => table.role === 'rollup');
  return [...detection.tables];
}

/** Tells whether a mode needs the foreign keys to users replaced by placeholders. */
export function replacesForeignKeys(mode: Mode, scope: Scope): boolean {
  return mode === 'anonymize' && scope === 'source';
}

/** One function the tool installs, with the body and settings that drift detection expects. */
export interface ExpectedFunction {
  readonly name: string;
  readonly statements: Statement[];
  readonly body: string;
  /** Whether the template declares the function SECURITY DEFINER. */
  readonly securityDefiner: boolean;
  /**
   * The function's settings as pg_proc.proconfig joined with commas, such as
   * "search_path=pg_catalog, pg_temp", or "" for a function without a SET
   * clause. Taken from the template's `SET search_path = …` line.
   */
  readonly config: string;
}

const searchPathClause = /^SET search_path = (.+)$/m;

function expectedFunction(name: string, template: string, variables: Record<string, SqlFragment>, securityDefiner = true): ExpectedFunction {
  const rendered = renderTemplate(template, variables);
  const searchPath = searchPathClause.exec(rendered);
  return {
    name,
    statements: templateStatements(template, variables),
    body: functionBody(rendered),
    securityDefiner,
    config: searchPath ? `search_path=${searchPath[1]}` : '',
  };
}

/** What the computation of a pseudonym depends on. */
export interface PseudonymSetup {
  readonly hmac: HmacImplementation;
  /** Location of pgcrypto; needed for the pgcrypto implementation only. */
  readonly crypto: CryptoLocation | null;
  readonly policy: KeyPolicy;
}

/**
 * The pieces of SQL that compute a pseudonym, shared by pseudonym() and the
 * trigger functions so that both compute the same one. Each takes the SQL
 * expression of its input: the id, the row's timestamp, or the variable
 * that holds the digest. The digest expression reads the key row `k` that
 * the key selection's FROM clause names.
 */
interface PseudonymParts {
  isPseudonym(id: SqlFragment): SqlFragment;
  digest(id: SqlFragment): SqlFragment;
  keySelection(rowTime: SqlFragment): SqlFragment;
  uuid(digest: SqlFragment): SqlFragment;
}

function pseudonymParts(schemaName: string, setup: PseudonymSetup): PseudonymParts {
  const schema = ident(schemaName);
  const label = literal(Buffer.from(domainLabel, 'utf8').toString('hex'));
  const { hmac, crypto, policy } = setup;
  if (hmac === 'pgcrypto' && !crypto) throw new Error('pseudonymParts: the pgcrypto implementation needs the location of pgcrypto');

  return {
    isPseudonym: (id) => renderFragment('fragments/is-pseudonym.sql', { id }),
    digest: (id) =>
      hmac === 'core'
        ? renderFragment('fragments/digest-core.sql', { id, label })
        : renderFragment('fragments/digest-pgcrypto.sql', { id, label, hmac: qualified((crypto as CryptoLocation).schema, 'hmac') }),
    keySelection: (rowTime) =>
      policy === 'none'
        ? renderFragment('fragments/key-none.sql', { schema, rowTime })
        : renderFragment('fragments/key-period.sql', { schema, rowTime, policy: literal(policy), periodUnit: periodVariables(policy).periodUnit }),
    uuid: (digest) => renderFragment('fragments/pseudonym-uuid.sql', { digest }),
  };
}

/**
 * The functions behind pseudonyms, as this version renders them: the
 * version check, the HMAC helpers, the key functions for a rotation policy,
 * and the pseudonym and key source of one HMAC implementation. `crypto` is
 * needed for pgcrypto only.
 */
export function pseudonymFunctions(schemaName: string, hmac: HmacImplementation, crypto: CryptoLocation | null, policy: KeyPolicy = 'none'): ExpectedFunction[] {
  if (hmac === 'pgcrypto' && !crypto) throw new Error('pseudonymFunctions: the pgcrypto implementation needs the location of pgcrypto');
  const schema = ident(schemaName);
  const parts = pseudonymParts(schemaName, { hmac, crypto, policy });
  // Qualified with the function name, because the key table has a column id too.
  const id = SqlFragment.trusted('pseudonym.id');
  const rowTime = SqlFragment.trusted('row_time');

  const randomKey =
    hmac === 'core'
      ? expectedFunction('random_key', 'random-key-core.sql', { schema }, false)
      : expectedFunction('random_key', 'random-key-pgcrypto.sql', { schema, genRandomBytes: qualified((crypto as CryptoLocation).schema, 'gen_random_bytes') }, false);
  return [
    expectedFunction('is_pseudonym', 'is-pseudonym.sql', { schema, test: parts.isPseudonym(SqlFragment.trusted('id')) }, false),
    expectedFunction('hmac_key_pad', 'hmac-key-pad.sql', { schema }, false),
    expectedFunction('hmac_sha256', 'hmac-sha256.sql', { schema }, false),
    randomKey,
    expectedFunction('add_key', 'add-key.sql', { schema }),
    expectedFunction('key_id', 'key-id.sql', {
      schema,
      schemaName: literal(schemaName),
      policy: literal(policy),
      keySelection: indent(parts.keySelection(rowTime), '  '),
      ...periodVariables(policy),
    }),
    expectedFunction('pseudonym', 'pseudonym.sql', {
      schema,
      schemaName: literal(schemaName),
      isPseudonym: parts.isPseudonym(id),
      digest: parts.digest(id),
      keySelection: indent(parts.keySelection(rowTime), '  '),
      uuid: parts.uuid(SqlFragment.trusted('digest')),
    }),
  ];
}

/** Lists the functions of the state table, which every mode installs. */
export function stateFunctions(schemaName: string): ExpectedFunction[] {
  return [expectedFunction('state_digest', 'state-digest.sql', { schema: ident(schemaName) }, false)];
}

/**
 * The trigger function of one protected table for a mode. Under anonymize
 * it computes the pseudonyms inline, so it depends on `pseudonym`, the
 * setup that pseudonymFunctions() renders too.
 */
export function triggerFunction(schemaName: string, table: UsageTable, mode: EnforcedMode, pseudonym?: PseudonymSetup): ExpectedFunction {
  const schema = ident(schemaName);
  const name = triggerFunctionName(table);
  const fn = qualified(schemaName, name);

  if (mode === 'disable') return expectedFunction(name, 'trigger-function-disable.sql', { function: fn });
  if (!pseudonym) throw new Error('triggerFunction: anonymize needs the pseudonym setup');

  const parts = pseudonymParts(schemaName, pseudonym);
  const rowTime = SqlFragment.trusted(`NEW.${ident(table.timeColumn).text}`);
  const assignments = table.userColumns.map((column) => {
    const id = SqlFragment.trusted(`NEW.${ident(column).text}`);
    return renderTemplate('trigger-assignment.sql', {
      column: ident(column),
      timeColumn: ident(table.timeColumn),
      schema,
      isPseudonym: parts.isPseudonym(id),
      digest: parts.digest(id),
      keySelection: indent(parts.keySelection(rowTime), '    '),
      uuid: parts.uuid(SqlFragment.trusted('digest')),
    }).trimEnd();
  });
  return expectedFunction(name, 'trigger-function-anonymize.sql', { function: fn, assignments: SqlFragment.trusted(assignments.join('\n')) });
}

/** Indents every line of a multi-line fragment after the first, which the template indents itself. */
function indent(fragment: SqlFragment, prefix: string): SqlFragment {
  return SqlFragment.trusted(fragment.text.split('\n').join(`\n${prefix}`));
}

/** Returns the events the trigger fires on: anonymize also catches an UPDATE that sets a user id. */
export function triggerEvents(table: UsageTable, mode: EnforcedMode): string {
  if (mode === 'disable') return 'INSERT';
  return `INSERT OR UPDATE OF ${joinSql(table.userColumns.map(ident)).text}`;
}

function triggerStatements(schemaName: string, table: UsageTable, mode: EnforcedMode): Statement[] {
  const comment =
    mode === 'anonymize'
      ? `insights-privacy: replaces ${table.userColumns.join(', ')} with keyed pseudonyms before the row is stored.`
      : 'insights-privacy: drops every new row before it is stored (mode disable).';
  return templateStatements('trigger.sql', {
    trigger: ident(triggerName),
    table: qualified(table.schema, table.name),
    events: SqlFragment.trusted(triggerEvents(table, mode)),
    function: qualified(schemaName, triggerFunctionName(table)),
    comment: literal(comment),
  });
}

function removeTriggerStatements(schemaName: string, table: UsageTable): Statement[] {
  return [
    ...templateStatements('drop-trigger.sql', { trigger: ident(triggerName), table: qualified(table.schema, table.name) }),
    ...templateStatements('drop-function.sql', { function: qualified(schemaName, triggerFunctionName(table)) }),
  ];
}

function lockStatements(tables: readonly TableRef[]): Statement[] {
  return templateStatements('lock-tables.sql', { tables: joinSql(tables.map((table) => qualified(table.schema, table.name))) });
}

/**
 * Builds the statements that install pseudonyms: pgcrypto when the plan
 * creates it, the functions of the HMAC implementation and of the rotation
 * policy, the padded-key columns and, under policy none, the first key.
 * Switching to core removes a pgcrypto that the tool created in its own
 * schema, because nothing uses it any more. The keys stay, and so does every
 * pseudonym.
 */
function pseudonymStatements(schemaName: string, policy: KeyPolicy, context: PlanContext): Statement[] {
  const schema = ident(schemaName);
  const { crypto, hmac } = context;
  if (!hmac) throw new Error('planApply: anonymize needs an HMAC implementation');
  const statements: Statement[] = [];

  if (hmac === 'pgcrypto' && crypto?.create) statements.push(...templateStatements('pgcrypto.sql', { schema }));
  for (const fn of pseudonymFunctions(schemaName, hmac, crypto, policy)) statements.push(...fn.statements);
  statements.push(...templateStatements('key-pads.sql', { schema }));
  if (hmac === 'core' && crypto && !crypto.create && crypto.schema === schemaName) statements.push(...templateStatements('drop-extension.sql', {}));
  // Period policies create each period's key on its first use instead.
  if (policy === 'none') statements.push(...templateStatements('create-key.sql', { schema }));
  return statements;
}

/** Everything the plan needs besides the detection. */
export interface PlanContext {
  readonly profile: Profile;
  readonly crypto: CryptoLocation | null;
  /** The HMAC implementation that anonymize installs, where `pgcrypto` needs `crypto`; null for other modes. */
  readonly hmac: HmacImplementation | null;
  /** The options recorded in the state table with the mode. */
  readonly recordedOptions: Record<string, unknown>;
  /** Set when the profile's convertAhead has converted the raw tables' rows since planConversionStart's statements committed. */
  readonly rawConverted?: boolean;
}

/**
 * Builds the statements that install a mode, in the order they run inside
 * one transaction: table locks, the private schema, functions and key,
 * triggers, foreign keys, the cut-over conversion, and the state record.
 */
export function planApply(detection: Detection, target: EnforcementTarget, context: PlanContext): Statement[] {
  if (target.mode === 'off') return planOff(detection, target, context.crypto);

  const { mode, scope, schema: schemaName } = target;
  const schema = ident(schemaName);
  const statements: Statement[] = [...lockStatements(detection.tables), ...templateStatements('schema.sql', { schema })];
  for (const fn of stateFunctions(schemaName)) statements.push(...fn.statements);

  if (mode === 'anonymize') statements.push(...pseudonymStatements(schemaName, target.rotate ?? 'none', context));

  const pseudonym = mode === 'anonymize' && context.hmac ? { hmac: context.hmac, crypto: context.crypto, policy: target.rotate ?? 'none' } : undefined;
  const protectedSet = new Set(protectedTables(detection, mode, scope));
  for (const table of detection.tables) {
    if (protectedSet.has(table)) {
      statements.push(...triggerFunction(schemaName, table, mode, pseudonym).statements, ...triggerStatements(schemaName, table, mode));
    } else {
      statements.push(...removeTriggerStatements(schemaName, table));
    }
  }

  const cutover =
    mode === 'anonymize' ? context.profile.cutover(detection, { schema, scope, tables: [...protectedSet], rawConverted: context.rawConverted }) : null;
  statements.push(...(cutover?.beforeForeignKeys ?? []));
  statements.push(...foreignKeyStatements(detection, mode, scope));
  statements.push(...(cutover?.afterForeignKeys ?? []));

  const anonymizeOptions = mode === 'anonymize' ? { rotate: target.rotate ?? 'none', hmac: context.hmac } : {};
  const options = { ...context.recordedOptions, scope, ...anonymizeOptions };
  const usageTables = JSON.stringify(detection.tables.map((table) => [table.schema, table.name]));
  statements.push(
    ...templateStatements('record-state.sql', { schema }, [mode, detection.profile, mode === 'anonymize' ? scope : null, JSON.stringify(options), toolVersion, usageTables]),
  );
  return statements;
}

function foreignKeyStatements(detection: Detection, mode: EnforcedMode, scope: Scope): Statement[] {
  const statements: Statement[] = [];
  for (const state of detection.userForeignKeys) {
    if (replacesForeignKeys(mode, scope) && state.foreignKey) statements.push(...replaceForeignKey(state.foreignKey));
    if (!replacesForeignKeys(mode, scope) && state.placeholder && !state.foreignKey) statements.push(...restoreForeignKey(state.placeholder));
  }
  return statements;
}

/**
 * Builds the first transaction of an anonymize that converts the cut-over's
 * rows in batches while writers go on. It installs the functions and key,
 * the triggers of the tables whose rows the batches convert, and the
 * placeholder of a foreign key that pseudonyms would violate. The cut-over,
 * restored foreign keys and the state record are left to planApply.
 *
 * With scope source these are the raw tables: the rollup tables keep their
 * triggers until planApply runs, because while raw rows of one user hold
 * both the real id and the pseudonym, an anonymize trigger on
 * template_usage_stats would make Coder's rollup fail. With scope rollup
 * they are the rollup tables, and the raw tables lose their triggers.
 */
export function planConversionStart(detection: Detection, target: EnforcementTarget, context: PlanContext): Statement[] {
  if (target.mode !== 'anonymize') throw new Error('planConversionStart: only anonymize converts rows');
  const { scope, schema: schemaName } = target;
  const schema = ident(schemaName);
  const tables = scope === 'source' ? detection.tables.filter((table) => table.role === 'raw') : detection.tables;
  const protectedSet = new Set(protectedTables(detection, 'anonymize', scope));

  // The functions and key need no lock on the application's tables, so they
  // come first. Replacing a foreign key locks the referenced table (users)
  // in ACCESS EXCLUSIVE mode, which every read of it waits for, so that lock
  // is taken together with the others and held only for the DDL.
  const statements: Statement[] = [...templateStatements('schema.sql', { schema }), ...pseudonymStatements(schemaName, target.rotate ?? 'none', context)];
  if (!context.hmac) throw new Error('planConversionStart: anonymize needs an HMAC implementation');
  const pseudonym = { hmac: context.hmac, crypto: context.crypto, policy: target.rotate ?? 'none' };
  const replacesKey = replacesForeignKeys('anonymize', scope) && detection.userForeignKeys.some((state) => state.foreignKey);
  statements.push(...lockStatements(replacesKey ? [...tables, detection.users] : tables));
  for (const table of tables) {
    if (protectedSet.has(table)) {
      statements.push(...triggerFunction(schemaName, table, 'anonymize', pseudonym).statements, ...triggerStatements(schemaName, table, 'anonymize'));
    } else {
      statements.push(...removeTriggerStatements(schemaName, table));
    }
  }
  // A restored foreign key is left to planApply, whose transaction reports it for validation.
  if (replacesKey) statements.push(...foreignKeyStatements(detection, 'anonymize', scope));
  return statements;
}

/** Builds the statements of `off`: triggers dropped, foreign keys restored, the private schema removed. */
export function planOff(detection: Detection, target: EnforcementTarget, crypto: CryptoLocation | null): Statement[] {
  const statements: Statement[] = [...lockStatements(detection.tables)];
  for (const table of detection.tables) {
    statements.push(...templateStatements('drop-trigger.sql', { trigger: ident(triggerName), table: qualified(table.schema, table.name) }));
  }
  for (const state of detection.userForeignKeys) {
    if (state.placeholder && !state.foreignKey) statements.push(...restoreForeignKey(state.placeholder));
  }
  if (crypto && crypto.schema === target.schema) statements.push(...templateStatements('drop-extension.sql', {}));
  statements.push(...templateStatements('drop-schema.sql', { schema: ident(target.schema) }));
  return statements;
}
