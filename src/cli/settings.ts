import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { cosmiconfig } from 'cosmiconfig';
import { z } from 'zod';
import { defaultBatchSize, existingRowsChoices, type ExistingRows } from '../core/backfill.js';
import { ToolError } from '../core/errors.js';
import { defaultSchema } from '../core/enforcement.js';
import type { HmacSetting, Mode } from '../core/enforcement.js';
import { keyPolicies, type KeyPolicy } from '../core/keys.js';
import type { Scope } from '../profiles/types.js';

/** Every setting a command can read, after precedence is applied. */
export interface Settings {
  /** Connection URL; undefined lets node-postgres read libpq's PG* variables. */
  databaseUrl: string | undefined;
  mode: Mode | undefined;
  scope: Scope;
  /** HMAC implementation of anonymize: auto, pgcrypto or core. Default auto. */
  hmac: HmacSetting;
  /** Rotation policy of the pseudonym key under anonymize. Default `none`. */
  rotate: KeyPolicy;
  profile: string;
  schema: string;
  /** Maximum wait for one lock, in milliseconds. Default 2000. */
  lockTimeoutMs: number;
  /** Retries of a transaction whose locks timed out. Default 5. */
  lockRetries: number;
  /** Seconds to wait for a connection. Default 10. */
  connectTimeoutSeconds: number;
  /** Choice for the rows stored before enforcement; undefined when not set, and apply then keeps them. */
  existing: ExistingRows | undefined;
  /** Rows per backfill batch. Default 5000. */
  batchSize: number;
  /**
   * Other triggers on protected tables, as "table.trigger", that an operator
   * reviewed and accepted; status reports any other. Default none.
   */
  allowTriggers: string[];
}

/** Values given as flags; undefined when a flag was not given. */
export type FlagValues = Partial<Record<keyof Settings, string>>;

const modes = ['anonymize', 'disable', 'off'] as const;
/** Largest backfill batch, so that a mistyped size cannot turn the backfill into one long transaction. */
const maxBatchSize = 100000;
const scopes = ['source', 'rollup'] as const;
const hmacSettings = ['auto', 'pgcrypto', 'core'] as const;

/** Keys of the config file, each with the environment variable that overrides it. */
const environmentNames: Record<keyof Settings, string> = {
  databaseUrl: 'INSIGHTS_PRIVACY_DATABASE_URL',
  mode: 'INSIGHTS_PRIVACY_MODE',
  scope: 'INSIGHTS_PRIVACY_SCOPE',
  hmac: 'INSIGHTS_PRIVACY_HMAC',
  rotate: 'INSIGHTS_PRIVACY_ROTATE',
  profile: 'INSIGHTS_PRIVACY_PROFILE',
  schema: 'INSIGHTS_PRIVACY_SCHEMA',
  lockTimeoutMs: 'INSIGHTS_PRIVACY_LOCK_TIMEOUT_MS',
  lockRetries: 'INSIGHTS_PRIVACY_LOCK_RETRIES',
  connectTimeoutSeconds: 'INSIGHTS_PRIVACY_CONNECT_TIMEOUT_SECONDS',
  existing: 'INSIGHTS_PRIVACY_EXISTING',
  batchSize: 'INSIGHTS_PRIVACY_BATCH_SIZE',
  allowTriggers: 'INSIGHTS_PRIVACY_ALLOW_TRIGGERS',
};

const flagNames: Record<keyof Settings, string> = {
  databaseUrl: '--database-url',
  mode: '--mode',
  scope: '--scope',
  hmac: '--hmac',
  rotate: '--rotate',
  profile: '--profile',
  schema: '--schema',
  lockTimeoutMs: '--lock-timeout',
  lockRetries: '--lock-retries',
  connectTimeoutSeconds: '--connect-timeout',
  existing: '--existing',
  batchSize: '--batch-size',
  allowTriggers: '--allow-trigger',
};

const configFileSchema = z
  .object({
    databaseUrl: z.string().min(1),
    mode: z.enum(modes),
    scope: z.enum(scopes),
    hmac: z.enum(hmacSettings),
    rotate: z.enum(keyPolicies),
    profile: z.string().min(1),
    schema: z.string().min(1),
    lockTimeoutMs: z.number().int().min(1).max(600000),
    lockRetries: z.number().int().min(0).max(100),
    connectTimeoutSeconds: z.number().int().min(1).max(600),
    existing: z.enum(['keep', 'pseudonymize', 'purge']),
    batchSize: z.number().int().min(1).max(maxBatchSize),
    allowTriggers: z.array(z.string().min(1)),
  })
  .partial()
  .strict();

type ConfigFile = z.infer<typeof configFileSchema>;

/** Location and contents of the configuration file. */
export interface LoadedConfig {
  path: string | null;
  values: ConfigFile;
}

/**
 * Loads the configuration file: the path given by `--config` or
 * INSIGHTS_PRIVACY_CONFIG, else the first of cosmiconfig's default names for
 * "insights-privacy" in the working directory (.insights-privacyrc.json,
 * insights-privacy.config.json, a package.json key, and others). Unknown
 * keys and wrong types are rejected, all at once.
 */
export async function loadConfig(explicitPath: string | undefined, cwd: string): Promise<LoadedConfig> {
  const explorer = cosmiconfig('insights-privacy', { searchStrategy: 'none' });
  let found: { filepath: string; config: unknown; isEmpty?: boolean } | null;
  const path = explicitPath === undefined ? undefined : resolve(cwd, explicitPath);
  try {
    found = path ? await explorer.load(path) : await explorer.search(cwd);
  } catch (error) {
    const reason = await describeReadError(error, path);
    throw new ToolError('INVALID_CONFIG', `Could not read config file ${path ?? cwd}: ${reason}`, {
      fix: 'Check that the file exists and is valid JSON or YAML, for example {"mode": "anonymize"}.',
      cause: error,
    });
  }
  if (!found || found.isEmpty) return { path: found?.filepath ?? null, values: {} };

  const parsed = configFileSchema.safeParse(found.config);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => describeIssue(issue, found.config));
    throw new ToolError('INVALID_CONFIG', `Invalid config file ${found.filepath}: ${problems.join('; ')}.`, {
      fix: `Allowed keys: ${Object.keys(configFileSchema.shape).join(', ')}.`,
    });
  }
  return { path: found.filepath, values: parsed.data };
}

/**
 * Describes why a config file could not be read without quoting it: parser
 * messages repeat the file's text, which may contain a database password, so
 * only the line and column of a syntax error are kept.
 */
async function describeReadError(error: unknown, path: string | undefined): Promise<string> {
  const code = (error as { code?: unknown }).code;
  if (code === 'ENOENT') return 'the file does not exist';
  if (code === 'EACCES') return 'permission denied';
  if (code === 'EISDIR') return 'it is a folder, not a file';

  const message = error instanceof Error ? error.message : String(error);
  const lineColumn = /line (\d+), column (\d+)/.exec(message) ?? /\((\d+):(\d+)\)/.exec(message);
  if (lineColumn) return `syntax error at line ${lineColumn[1]}, column ${lineColumn[2]}`;

  // parse-json, which cosmiconfig uses for JSON, marks the failing line of its code frame with ">".
  const frameLine = /^>\s*(\d+)\s*\|/m.exec(message);
  if (frameLine) return `syntax error at line ${frameLine[1]}`;

  const text = path ? await readFile(path, 'utf8').catch(() => '') : '';
  const lineOf = (offset: number) => text.slice(0, offset).split('\n').length;

  const position = /position (\d+)/.exec(message);
  if (position) return `syntax error at line ${lineOf(Number(position[1]))}`;

  // V8 sometimes gives no position, only the text around the error: ...'"<text>"'...
  const excerpt = /\.\.\."(.+?)"\.\.\./.exec(message);
  const offset = excerpt ? text.indexOf(excerpt[1]) : -1;
  if (offset >= 0) return `syntax error at line ${lineOf(offset)}`;
  return 'syntax error';
}

function describeIssue(issue: z.ZodIssue, config: unknown): string {
  if (issue.code === 'unrecognized_keys') return `unknown key(s) ${issue.keys.join(', ')}`;
  if (issue.path.length === 0) return `the file must contain one object of settings (${issue.message})`;
  const key = issue.path.join('.');
  // The database URL may hold a password, so its value is never repeated.
  const shown = key === 'databaseUrl' ? '' : ` (got ${JSON.stringify((config as Record<string, unknown>)[key])})`;
  return `${key}: ${issue.message}${shown}`;
}

function parseInteger(raw: string, source: string, minimum: number, maximum: number, problems: string[]): number | undefined {
  const value = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || value < minimum || value > maximum) {
    problems.push(`${source} must be an integer from ${minimum} to ${maximum}, got "${raw}"`);
    return undefined;
  }
  return value;
}

/**
 * Parses a comma-separated list of "table.trigger" names. A config file's
 * array arrives here joined by commas, so a trigger name that contains a
 * comma or a dot cannot be accepted this way.
 */
function triggerList(picked: { raw: string; source: string } | undefined, problems: string[]): string[] {
  if (!picked) return [];
  const names = picked.raw
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name.length > 0);
  const invalid = names.filter((name) => !/^[^.]+\.[^.]+$/.test(name));
  if (invalid.length > 0) problems.push(`${picked.source} takes table.trigger names, got "${invalid.join('", "')}"`);
  return invalid.length > 0 ? [] : [...new Set(names)];
}

/**
 * Combines flags, environment and config file, in that order of precedence,
 * over the defaults. The connection URL is taken from --database-url,
 * INSIGHTS_PRIVACY_DATABASE_URL, DATABASE_URL, then the config file; without
 * any, node-postgres reads PGHOST, PGPORT, PGDATABASE, PGUSER and PGPASSWORD.
 * Every invalid value is reported in one error.
 */
export function resolveSettings(flags: FlagValues, env: NodeJS.ProcessEnv, config: LoadedConfig): Settings {
  const problems: string[] = [];
  const fileName = config.path ?? 'config file';

  const pick = (key: keyof Settings): { raw: string; source: string } | undefined => {
    if (flags[key] !== undefined) return { raw: flags[key] as string, source: flagNames[key] };
    const fromEnv = env[environmentNames[key]];
    if (fromEnv !== undefined && fromEnv !== '') return { raw: fromEnv, source: environmentNames[key] };
    if (key === 'databaseUrl' && env.DATABASE_URL) return { raw: env.DATABASE_URL, source: 'DATABASE_URL' };
    const fromFile = config.values[key];
    if (fromFile !== undefined) return { raw: String(fromFile), source: `${fileName} key ${key}` };
    return undefined;
  };

  const choice = <T extends string>(key: keyof Settings, allowed: readonly T[]): T | undefined => {
    const picked = pick(key);
    if (!picked) return undefined;
    if (!(allowed as readonly string[]).includes(picked.raw)) {
      problems.push(`${picked.source} must be one of ${allowed.join(', ')}, got "${picked.raw}"`);
      return undefined;
    }
    return picked.raw as T;
  };

  const integer = (key: keyof Settings, fallback: number, minimum: number, maximum: number): number => {
    const picked = pick(key);
    if (!picked) return fallback;
    return parseInteger(picked.raw, picked.source, minimum, maximum, problems) ?? fallback;
  };

  const settings: Settings = {
    databaseUrl: pick('databaseUrl')?.raw,
    mode: choice('mode', modes),
    scope: choice('scope', scopes) ?? 'source',
    hmac: choice('hmac', hmacSettings) ?? 'auto',
    rotate: choice('rotate', keyPolicies) ?? 'none',
    profile: pick('profile')?.raw ?? 'coder',
    schema: pick('schema')?.raw ?? defaultSchema,
    lockTimeoutMs: integer('lockTimeoutMs', 2000, 1, 600000),
    lockRetries: integer('lockRetries', 5, 0, 100),
    connectTimeoutSeconds: integer('connectTimeoutSeconds', 10, 1, 600),
    existing: choice('existing', existingRowsChoices),
    batchSize: integer('batchSize', defaultBatchSize, 1, maxBatchSize),
    allowTriggers: triggerList(pick('allowTriggers'), problems),
  };

  if (problems.length > 0) {
    throw new ToolError('INVALID_OPTION', `Invalid setting(s): ${problems.join('; ')}.`, {
      fix: 'Correct the values named above; run "insights-privacy help" for the allowed values.',
    });
  }
  return settings;
}
