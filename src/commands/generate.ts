import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, link, lstat, open, rename, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type pg from 'pg';
import { ToolError } from '../core/errors.js';
import { currentDatabase } from '../core/inspect.js';
import { describeEnforcement, planDown, recordedEnforcement, restoredForeignKeys, wrapPlan, type Enforcement, type MigrationPlan, type MigrationSettings } from '../core/migration.js';
import { defaultVersion, isValidVersion, migrationFormats, renderMigration, type MigrationFile, type MigrationFormat } from '../core/migration-files.js';
import { validateSchemaName } from '../core/preflight.js';
import { toolVersion } from '../core/version.js';
import { checkRollupScope, isUnchanged, planEnforcement, type ApplySettings } from './apply.js';

/** Output options of `generate`, as given; `checkOutput` validates them. */
export interface OutputOptions {
  readonly format: string | undefined;
  /** The folder to write into, relative to `cwd`. */
  readonly out: string | undefined;
  readonly cwd: string;
  /** Version in the file names; default from the generation time. */
  readonly version: string | undefined;
  /** Replace files of the same name. */
  readonly force: boolean;
}

/** Validated output options. */
export interface CheckedOutput {
  readonly format: MigrationFormat;
  /** Absolute path of an existing folder. */
  readonly folder: string;
  readonly version: string | undefined;
  readonly force: boolean;
}

/** Settings of `generate`, validated by the caller except for the output, which `generateMigration` checks. */
export interface GenerateSettings extends MigrationSettings {
  readonly output: OutputOptions;
  /** The moment written into the header and the default version; default now. */
  readonly now?: Date;
}

/** Outcome of `generate`. */
export interface GenerateResult {
  readonly outcome: 'generated';
  readonly format: MigrationFormat;
  readonly database: string;
  readonly application: string;
  readonly schema: string;
  /** The enforcement recorded at generation, which the down migration returns to. */
  readonly current: Enforcement;
  /** The enforcement the up migration installs. */
  readonly target: Enforcement;
  /** Reason why the down migration fails instead of returning to `current`; null when it can. */
  readonly irreversible: string | null;
  readonly files: { path: string; direction: MigrationFile['direction'] }[];
  /** How to run the migration with its tool. */
  readonly run: string[];
}

/**
 * Validates the format, the folder and the version before anything is read
 * or written. The folder must exist: a mistyped path would otherwise become
 * a new folder that no migration tool reads.
 */
export async function checkOutput(options: OutputOptions): Promise<CheckedOutput> {
  const format = options.format;
  if (format === undefined) {
    throw new ToolError('INVALID_OPTION', 'No --format given.', { fix: `Pass --format ${migrationFormats.join(' or --format ')}.` });
  }
  if (!(migrationFormats as readonly string[]).includes(format)) {
    throw new ToolError('INVALID_OPTION', `Unknown --format "${format}".`, { fix: `Pass --format ${migrationFormats.join(' or --format ')}.` });
  }
  const checkedFormat = format as MigrationFormat;

  if (options.version !== undefined && !isValidVersion(checkedFormat, options.version)) {
    const expected = checkedFormat === 'node-pg-migrate' ? 'digits only, for example 1767225600000' : 'digits, optionally separated by dots or underscores, for example 20260101120000 or 2.1';
    throw new ToolError('INVALID_OPTION', `Invalid --migration-version "${options.version}" for format ${checkedFormat}.`, { fix: `Pass ${expected}, or leave it out to use the generation time.` });
  }

  if (options.out === undefined || options.out === '') {
    throw new ToolError('INVALID_OPTION', 'No --out given.', { fix: "Pass --out DIR, the folder your migration tool reads (node-pg-migrate's --migrations-dir, Flyway's locations)." });
  }
  const folder = resolve(options.cwd, options.out);
  const found = await stat(folder).catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? null : Promise.reject(error)));
  if (!found) {
    throw new ToolError('INVALID_OPTION', `Folder ${folder} (--out) does not exist.`, { fix: `Create it first (mkdir -p ${folder}), or pass the folder your migration tool reads.` });
  }
  if (!found.isDirectory()) {
    throw new ToolError('INVALID_OPTION', `${folder} (--out) is a file, not a folder.`, { fix: 'Pass the folder to write the migration files into.' });
  }
  return { format: checkedFormat, folder, version: options.version, force: options.force };
}

function applySettings(settings: MigrationSettings): ApplySettings {
  return {
    mode: settings.mode,
    scope: settings.scope,
    schema: settings.schema,
    profile: settings.profile,
    hmac: settings.hmac,
    rotate: settings.rotate,
    dryRun: true,
    lock: { lockTimeoutMs: settings.lockTimeoutMs, retries: 0 },
    allowTriggers: settings.allowTriggers,
  };
}

/**
 * Plans a migration against the database as it is now: up is what `apply`
 * would run for `settings`, down is what `apply` would then run to return to
 * the enforcement recorded now. Neither contains a key: the up migration
 * creates the key inside PostgreSQL, as apply does. Rejects a request for
 * which apply would change nothing. Reads the catalog only.
 */
export async function planMigration(client: pg.ClientBase, settings: MigrationSettings): Promise<MigrationPlan> {
  validateSchemaName(settings.schema);
  const request = applySettings(settings);
  const { profile, detection, installation, hmac, statements, progressTable } = await planEnforcement(client, request);
  const database = await currentDatabase(client);
  const current = recordedEnforcement(installation.state, installation);

  if (isUnchanged(request, detection, installation, hmac, progressTable)) {
    throw new ToolError('INVALID_OPTION', `Database ${database} already has enforcement ${describeEnforcement(current.mode, current.scope)} as requested, so a migration would change nothing.`, {
      fix: 'Generate the migration against a database in the state the migration will run on (for example a copy of production before the change), or request another --mode.',
    });
  }
  await checkRollupScope(client, profile, detection, request, installation);

  const anonymize = settings.mode === 'anonymize';
  const target: Enforcement = {
    mode: settings.mode,
    scope: anonymize ? settings.scope : null,
    rotate: anonymize ? settings.rotate : null,
    hmac: anonymize ? hmac : null,
  };
  const up = wrapPlan(statements, {
    schema: settings.schema,
    expected: describeEnforcement(current.mode, current.scope),
    lockTimeoutMs: settings.lockTimeoutMs,
    restored: restoredForeignKeys(detection, settings.mode, settings.scope),
    users: detection.users,
  });
  const down = planDown({ profile, detection, installation, current, target, schema: settings.schema, lockTimeoutMs: settings.lockTimeoutMs });

  return {
    database,
    application: detection.description,
    schema: settings.schema,
    current,
    target,
    up,
    down: down.statements,
    irreversible: down.irreversible,
    lockTimeoutMs: settings.lockTimeoutMs,
  };
}

/** Builds the generate command line that reproduces the files, without connection settings. */
function commandLine(settings: GenerateSettings, output: CheckedOutput): string {
  const parts = ['insights-privacy generate', `--mode ${settings.mode}`];
  if (settings.mode === 'anonymize') parts.push(`--scope ${settings.scope}`, `--hmac ${settings.hmac}`, `--rotate ${settings.rotate}`);
  parts.push(`--schema ${settings.schema}`, `--profile ${settings.profile}`, `--lock-timeout ${settings.lockTimeoutMs}`, `--format ${output.format}`);
  for (const name of settings.allowTriggers ?? []) parts.push(`--allow-trigger ${name}`);
  return parts.join(' ');
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    (error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? false : Promise.reject(error)),
  );
}

/**
 * Writes one file so that it appears complete or not at all. The text goes
 * to a hidden temporary file in the same folder, because migration tools skip
 * names that start with a dot. The file is then hard-linked to its name,
 * which fails when that name exists, or renamed over it with `force`.
 */
async function writeAtomically(path: string, folder: string, name: string, text: string, force: boolean): Promise<void> {
  const temporary = join(folder, `.${name}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
  try {
    await handle.writeFile(text, 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }

  try {
    if (force) {
      await rename(temporary, path);
      return;
    }
    await link(temporary, path).catch(async (error: NodeJS.ErrnoException) => {
      // Some file systems have no hard links; an exclusive copy still never overwrites.
      if (error.code !== 'EPERM' && error.code !== 'ENOTSUP' && error.code !== 'EOPNOTSUPP') throw error;
      await copyFile(temporary, path, constants.COPYFILE_EXCL);
    });
  } finally {
    await unlink(temporary).catch(() => undefined);
  }
}

function existsError(paths: string[]): ToolError {
  return new ToolError('INVALID_OPTION', `Migration file(s) ${paths.join(', ')} exist; generate does not overwrite them.`, {
    fix: 'Pass another --migration-version, or --force to replace the files (only before any database ran them).',
  });
}

/** Writes the files; on a failure, removes the ones this call wrote, so that no half migration stays behind. */
async function writeFiles(output: CheckedOutput, files: readonly MigrationFile[]): Promise<string[]> {
  const paths = files.map((file) => join(output.folder, file.name));
  if (!output.force) {
    const present: string[] = [];
    for (const path of paths) if (await exists(path)) present.push(path);
    if (present.length > 0) throw existsError(present);
  }

  const written: string[] = [];
  try {
    for (const [index, file] of files.entries()) {
      await writeAtomically(paths[index], output.folder, file.name, file.text, output.force);
      written.push(paths[index]);
    }
  } catch (error) {
    for (const path of written) await unlink(path).catch(() => undefined);
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw existsError([paths[written.length]]);
    throw new ToolError('INVALID_OPTION', `Cannot write the migration into ${output.folder}: ${(error as Error).message}.`, {
      fix: 'Pass --out with a folder you can write to.',
      cause: error,
    });
  }
  return written;
}

function runInstructions(format: MigrationFormat, folder: string, files: readonly MigrationFile[]): string[] {
  if (format === 'node-pg-migrate') {
    return [`npx node-pg-migrate up --migrations-dir ${folder}`, `npx node-pg-migrate down --migrations-dir ${folder}   # undo`];
  }
  return files.map((file) => `psql -v ON_ERROR_STOP=1 --single-transaction -f ${join(folder, file.name)}${file.direction === 'down' ? '   # undo' : ''}`);
}

/**
 * Writes a migration that makes the same change as `apply` with the same
 * settings: for node-pg-migrate one file with up and down, for SQL a Flyway
 * versioned file and its undo file. Checks the output options first, then
 * reads the catalog; nothing is written when either fails.
 */
export async function generateMigration(client: pg.ClientBase, settings: GenerateSettings): Promise<GenerateResult> {
  const output = await checkOutput(settings.output);
  const plan = await planMigration(client, settings);

  const now = settings.now ?? new Date();
  const header = { toolVersion, generatedAt: now, command: commandLine(settings, output), profile: settings.profile };
  const files = renderMigration(plan, header, output.format, output.version ?? defaultVersion(output.format, now));
  const paths = await writeFiles(output, files);

  return {
    outcome: 'generated',
    format: output.format,
    database: plan.database,
    application: plan.application,
    schema: plan.schema,
    current: plan.current,
    target: plan.target,
    irreversible: plan.irreversible,
    files: files.map((file, index) => ({ path: paths[index], direction: file.direction })),
    run: runInstructions(output.format, output.folder, files),
  };
}
