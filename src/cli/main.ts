import { Command, CommanderError, Option } from 'commander';
import { applyEnforcement } from '../commands/apply.js';
import { readStatus } from '../commands/status.js';
import { withClient } from '../core/connection.js';
import { ExitCode, ToolError } from '../core/errors.js';
import { toolVersion } from '../core/version.js';
import { formatApply, formatStatements, formatStatus } from './format.js';
import { addKeyCommands } from './key-commands.js';
import { askYesNo, paint, processIo, type CliIo } from './io.js';
import { loadConfig, resolveSettings, type FlagValues, type Settings } from './settings.js';

const exitCodeHelp = `
Exit codes:
  0  success; for status --check, enforcement matches the recorded mode
  1  status --check: enforcement is missing or drifted
  2  error: invalid input, connection failure, missing privilege or SQL error (nothing changed)
  3  aborted: the confirmation was declined, or was impossible without --yes`;

interface CommonFlags {
  databaseUrl?: string;
  config?: string;
  profile?: string;
  schema?: string;
  connectTimeout?: string;
  verbose?: boolean;
}

function addCommonOptions(command: Command): Command {
  return command
    .option('--database-url <url>', 'PostgreSQL connection URL (env INSIGHTS_PRIVACY_DATABASE_URL or DATABASE_URL; default: libpq PG* variables)')
    .option('--config <file>', 'config file, JSON or YAML (env INSIGHTS_PRIVACY_CONFIG; default: .insights-privacyrc* in the working directory)')
    .option('--profile <name>', 'table rules to use (env INSIGHTS_PRIVACY_PROFILE; default: coder)')
    .option('--schema <name>', "the tool's private schema (env INSIGHTS_PRIVACY_SCHEMA; default: insights_privacy)")
    .option('--connect-timeout <seconds>', 'seconds to wait for the connection (default: 10)')
    .option('--verbose', 'show stack traces of errors');
}

async function settingsFor(io: CliIo, flags: CommonFlags & FlagValues & Record<string, unknown>): Promise<Settings & { env: NodeJS.ProcessEnv }> {
  const config = await loadConfig(flags.config ?? io.env.INSIGHTS_PRIVACY_CONFIG, io.cwd);
  const values: FlagValues = {
    databaseUrl: flags.databaseUrl,
    profile: flags.profile,
    schema: flags.schema,
    mode: flags.mode as string | undefined,
    scope: flags.scope as string | undefined,
    hmac: flags.hmac as string | undefined,
    rotate: flags.rotate as string | undefined,
    lockTimeoutMs: flags.lockTimeout as string | undefined,
    lockRetries: flags.lockRetries as string | undefined,
    connectTimeoutSeconds: flags.connectTimeout,
  };
  return { ...resolveSettings(values, io.env, config), env: io.env };
}

async function confirmWith(io: CliIo, summary: string[], command = 'apply', question = 'Apply these changes?'): Promise<boolean> {
  if (!io.stdin.isTTY) {
    throw new ToolError('ABORTED', `${command} changes the database and needs a confirmation, but standard input is not a terminal; nothing was changed.`, {
      fix: command === 'apply' ? 'Pass --yes to confirm in scripts and pipelines, or --dry-run to see the SQL.' : 'Pass --yes to confirm in scripts and pipelines.',
    });
  }
  io.stderr.write(`${summary.map((line) => `  ${line}`).join('\n')}\n`);
  return askYesNo(io, question);
}

async function runApply(io: CliIo, flags: CommonFlags & Record<string, unknown>): Promise<number> {
  const settings = await settingsFor(io, flags);
  if (!settings.mode) {
    throw new ToolError('INVALID_OPTION', 'No mode given.', { fix: 'Pass --mode anonymize, --mode disable or --mode off (or set INSIGHTS_PRIVACY_MODE, or mode in the config file).' });
  }
  const mode = settings.mode;
  const json = Boolean(flags.json);
  const result = await withClient(settings, (client) =>
    applyEnforcement(client, {
      mode,
      scope: settings.scope,
      hmac: settings.hmac,
      rotate: settings.rotate,
      schema: settings.schema,
      profile: settings.profile,
      dryRun: Boolean(flags.dryRun),
      lock: {
        lockTimeoutMs: settings.lockTimeoutMs,
        retries: settings.lockRetries,
        onRetry: (attempt, reason) => io.stderr.write(`insights-privacy: attempt ${attempt} failed (${reason}); retrying\n`),
      },
      confirm: flags.yes || flags.dryRun ? undefined : (summary) => confirmWith(io, summary),
    }),
  );

  if (json) {
    io.stdout.write(`${JSON.stringify({ ...result, statements: result.outcome === 'dry-run' ? result.statements : undefined }, null, 2)}\n`);
  } else {
    io.stdout.write(formatApply(result, paint(io)));
    if (result.outcome === 'dry-run') io.stdout.write(formatStatements(result.statements, settings.lockTimeoutMs));
  }
  return ExitCode.ok;
}

async function runStatus(io: CliIo, flags: CommonFlags & Record<string, unknown>): Promise<number> {
  const settings = await settingsFor(io, flags);
  const report = await withClient(settings, (client) => readStatus(client, { schema: settings.schema, profile: settings.profile, counts: flags.counts !== false }));
  io.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report, paint(io)));
  return flags.check && !report.ok ? ExitCode.checkFailed : ExitCode.ok;
}

/** Builds the commander program; `run` receives each command's handler so that the caller owns exit codes. */
function buildProgram(io: CliIo, run: (handler: () => Promise<number>) => void): Command {
  const program = new Command('insights-privacy')
    .description("Makes PostgreSQL enforce privacy on an application's usage data: triggers that anonymize or drop per-user insights rows.")
    .version(toolVersion)
    .addHelpText('after', exitCodeHelp)
    .configureOutput({ writeOut: (text) => io.stdout.write(text), writeErr: (text) => io.stderr.write(text) })
    .exitOverride();

  addCommonOptions(program.command('apply'))
    .description('install, switch or remove enforcement, in one transaction')
    .addOption(new Option('--mode <mode>', 'anonymize, disable or off (env INSIGHTS_PRIVACY_MODE)'))
    .option('--scope <scope>', 'anonymize scope: source (all usage tables, default) or rollup (template_usage_stats only)')
    .option('--hmac <implementation>', "anonymize's HMAC-SHA256: auto (pgcrypto when the server offers it, else core), pgcrypto, or core (sha256(), no extension) (env INSIGHTS_PRIVACY_HMAC; default: auto)")
    .option('--rotate <policy>', 'key rotation: none (one key until rotate-key, default), daily, weekly, monthly or yearly (a key per UTC period; env INSIGHTS_PRIVACY_ROTATE)')
    .option('--dry-run', 'print the SQL and change nothing')
    .option('-y, --yes', 'apply without asking for confirmation')
    .option('--json', 'print the result as JSON')
    .option('--lock-timeout <ms>', 'maximum wait for one table lock, in milliseconds (default: 2000)')
    .option('--lock-retries <count>', 'retries when a lock wait times out (default: 5)')
    .addHelpText(
      'after',
      `
Examples:
  insights-privacy apply --mode anonymize --dry-run
  insights-privacy apply --mode anonymize --yes --database-url postgresql://coder@db/coder
  insights-privacy apply --mode disable --yes
  insights-privacy apply --mode off --yes`,
    )
    .action((flags) => run(() => runApply(io, flags)));

  addCommonOptions(program.command('status'))
    .description('show what is enforced, and check it against the recorded mode')
    .option('--json', 'print the report as JSON')
    .option('--check', 'exit 1 when enforcement is missing or drifted')
    .option('--no-counts', 'skip the row counts, which scan every usage table')
    .addHelpText(
      'after',
      `
Examples:
  insights-privacy status
  insights-privacy status --check --no-counts   # in a pipeline after each Coder upgrade
  insights-privacy status --json`,
    )
    .action((flags) => run(() => runStatus(io, flags)));

  addKeyCommands(program, { io, run, addCommonOptions, settingsFor, confirmWith });

  program
    .command('demo')
    .description("start an embedded PostgreSQL with Coder's tables, write traffic, apply anonymize and show the difference")
    .option('--column-set <year>', "Coder's 2025 or 2026 column set (default: 2026)")
    .option('--verbose', 'show stack traces of errors')
    .action((flags) =>
      run(async () => {
        const { runDemo } = await import('../commands/demo.js');
        return runDemo(io, { columnSet: flags.columnSet });
      }),
    );

  return program;
}

function reportError(io: CliIo, error: unknown, verbose: boolean): number {
  const chalk = paint({ ...io, colour: false });
  if (error instanceof ToolError) {
    io.stderr.write(`${chalk.red('error:')} ${error.message}\n`);
    if (error.fix) io.stderr.write(`fix: ${error.fix}\n`);
    if (verbose && error.cause instanceof Error) io.stderr.write(`${error.cause.stack}\n`);
    return error.exitCode;
  }
  const message = error instanceof Error ? error.message : String(error);
  io.stderr.write(`error: unexpected failure: ${message}\n`);
  io.stderr.write(verbose && error instanceof Error ? `${error.stack}\n` : 'Run again with --verbose for the stack trace, and report it as a bug.\n');
  return ExitCode.error;
}

/** Runs the command line and returns the exit code; never exits the process. */
export async function runCli(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  let pending: Promise<number> | undefined;
  const program = buildProgram(io, (handler) => {
    pending = handler();
  });
  const verbose = argv.includes('--verbose');

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return pending ? await pending : ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // commander reports help shown for a usage error (no command) with exit code 1.
      return error.exitCode === 0 ? ExitCode.ok : ExitCode.error;
    }
    return reportError(io, error, verbose);
  }
}
