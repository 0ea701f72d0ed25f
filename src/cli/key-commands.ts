import type { Command } from 'commander';
import { exportKeys, secretFileWarning } from '../commands/export-key.js';
import { forgetKeys, parseCutoff } from '../commands/forget-keys.js';
import { importKeys } from '../commands/import-key.js';
import { rotateKey } from '../commands/rotate-key.js';
import { withClient } from '../core/connection.js';
import { ExitCode, ToolError } from '../core/errors.js';
import type { LockPolicy } from '../core/transaction.js';
import { formatExport, formatForget, formatImport, formatRotate } from './format-keys.js';
import { paint, type CliIo } from './io.js';
import type { Settings } from './settings.js';

/** Helpers that the key commands take from the main program. */
export interface KeyCommandDeps {
  readonly io: CliIo;
  readonly run: (handler: () => Promise<number>) => void;
  readonly addCommonOptions: (command: Command) => Command;
  readonly settingsFor: (io: CliIo, flags: Record<string, unknown>) => Promise<Settings & { env: NodeJS.ProcessEnv }>;
  readonly confirmWith: (io: CliIo, summary: string[], command: string, question: string) => Promise<boolean>;
}

function lockPolicy(io: CliIo, settings: Settings): LockPolicy {
  return {
    lockTimeoutMs: settings.lockTimeoutMs,
    retries: settings.lockRetries,
    onRetry: (attempt, reason) => io.stderr.write(`insights-privacy: attempt ${attempt} failed (${reason}); retrying\n`),
  };
}

function print(io: CliIo, flags: Record<string, unknown>, result: unknown, human: string): number {
  io.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : human);
  return ExitCode.ok;
}

function required(value: unknown, flag: string, example: string): string {
  if (typeof value !== 'string' || value === '') throw new ToolError('INVALID_OPTION', `${flag} is missing.`, { fix: `Pass it, for example ${example}.` });
  return value;
}

/** Registers rotate-key, forget-keys, export-key and import-key. */
export function addKeyCommands(program: Command, deps: KeyCommandDeps): void {
  const { io, run, addCommonOptions, settingsFor, confirmWith } = deps;
  const withLockOptions = (command: Command) =>
    command
      .option('--lock-timeout <ms>', 'maximum wait for one lock, in milliseconds (default: 2000)')
      .option('--lock-retries <count>', 'retries when a lock wait times out (default: 5)');

  withLockOptions(addCommonOptions(program.command('rotate-key')))
    .description('give rows stamped from the next half hour on a new pseudonym key; old keys are kept')
    .option('-y, --yes', 'rotate without asking for confirmation')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
Examples:
  insights-privacy rotate-key
  insights-privacy rotate-key --yes --json   # in a script; prints the new key's fingerprint`,
    )
    .action((flags) =>
      run(async () => {
        const settings = await settingsFor(io, flags);
        const result = await withClient(settings, (client) =>
          rotateKey(client, {
            schema: settings.schema,
            profile: settings.profile,
            lock: lockPolicy(io, settings),
            confirm: flags.yes ? undefined : (summary) => confirmWith(io, summary, 'rotate-key', 'Rotate the key?'),
          }),
        );
        return print(io, flags, result, formatRotate(result, paint(io)));
      }),
    );

  withLockOptions(addCommonOptions(program.command('forget-keys')))
    .description('delete the keys of periods that ended by a date, so their pseudonyms can no longer be linked to anyone')
    .option('--before <date>', 'delete keys whose period ended at or before this date (YYYY-MM-DD, midnight UTC) or timestamp with time zone')
    .option('-y, --yes', 'delete without asking for confirmation')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
Examples:
  insights-privacy forget-keys --before 2025-01-01
  insights-privacy forget-keys --before 2025-07-01T00:00:00Z --yes`,
    )
    .action((flags) =>
      run(async () => {
        const before = parseCutoff(required(flags.before, '--before', '--before 2025-01-01'));
        const settings = await settingsFor(io, flags);
        const result = await withClient(settings, (client) =>
          forgetKeys(client, {
            schema: settings.schema,
            profile: settings.profile,
            before,
            lock: lockPolicy(io, settings),
            confirm: flags.yes ? undefined : (summary) => confirmWith(io, summary, 'forget-keys', 'Delete these keys for good?'),
          }),
        );
        return print(io, flags, result, formatForget(result, paint(io)));
      }),
    );

  addCommonOptions(program.command('export-key'))
    .description('write every pseudonym key to a new file (mode 0600), for import-key into a restore or a copy of this database')
    .option('--out <file>', 'the file to create')
    .option('--force', 'replace the file if it exists')
    .option('--json', 'print the result as JSON (without the keys)')
    .addHelpText(
      'after',
      `
Examples:
  insights-privacy export-key --out coder-keys.json
  insights-privacy export-key --out coder-keys.json --force   # overwrite an older export

The file contains every key: store it like a database password.`,
    )
    .action((flags) =>
      run(async () => {
        const out = required(flags.out, '--out', '--out coder-keys.json');
        const settings = await settingsFor(io, flags);
        const result = await withClient(settings, (client) =>
          exportKeys(client, { schema: settings.schema, profile: settings.profile, out, cwd: io.cwd, force: Boolean(flags.force) }),
        );
        io.stderr.write(`${secretFileWarning(result.path)}\n`);
        return print(io, flags, result, formatExport(result, paint(io)));
      }),
    );

  withLockOptions(addCommonOptions(program.command('import-key')))
    .description('add the keys of an export-key file, so that this database makes the same pseudonyms as the exported one')
    .option('--in <file>', 'the file that export-key wrote')
    .option('--force', "replace this database's key of a period where the file has another one")
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
Examples:
  insights-privacy import-key --in coder-keys.json --database-url postgresql://coder@restored-db/coder
  insights-privacy import-key --in coder-keys.json --force   # pseudonyms under replaced keys can no longer be linked`,
    )
    .action((flags) =>
      run(async () => {
        const input = required(flags.in, '--in', '--in coder-keys.json');
        const settings = await settingsFor(io, flags);
        const result = await withClient(settings, (client) =>
          importKeys(client, { schema: settings.schema, profile: settings.profile, in: input, cwd: io.cwd, force: Boolean(flags.force), lock: lockPolicy(io, settings) }),
        );
        for (const warning of result.warnings) io.stderr.write(`warning: ${warning}\n`);
        return print(io, flags, result, formatImport(result, paint(io)));
      }),
    );
}
