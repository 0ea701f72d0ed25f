import { Command, CommanderError, Option } from 'commander';
import { applyEnforcement } from '../commands/apply.js';
import { runBackfill } from '../commands/backfill.js';
import { checkOutput, generateMigration } from '../commands/generate.js';
import { readStatus } from '../commands/status.js';
import { withClient } from '../core/connection.js';
import { ExitCode, ToolError } from '../core/errors.js';
import type { Mode } from '../core/enforcement.js';
import { toolVersion } from '../core/version.js';
import { formatApply, formatBackfill, formatGenerate, formatStatements, formatStatus } from './format.js';
import { addKeyCommands } from './key-commands.js';
import { askYesNo, paint, processIo, type CliIo } from './io.js';
import { progressDisplay, type ProgressDisplay } from './progress.js';
import { loadConfig, resolveSettings, type FlagValues, type Settings } from './settings.js';

const exitCodeHelp = `
Exit codes:
  0  success; for status --check, enforcement matches the recorded mode
  1  status --check: enforcement is missing or drifted
  2  error: invalid input, connection failure, missing privilege or SQL error. The failed
     transaction changed nothing, but a backfill keeps the batches it committed before,
     and apply keeps the mode it committed when only its --existing backfill failed
  3  aborted: the confirmation was declined, or was impossible without --yes;
     or Ctrl-C stopped a backfill after its current batch (run it again to continue)`;

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

/** Adds the options that choose an enforcement, shared by apply and generate. */
function addEnforcementOptions(command: Command): Command {
  return command
    .addOption(new Option('--mode <mode>', 'anonymize, disable or off (env INSIGHTS_PRIVACY_MODE)'))
    .option('--scope <scope>', 'anonymize scope: source (all usage tables, default) or rollup (template_usage_stats only)')
    .option('--hmac <implementation>', "anonymize's HMAC-SHA256: auto (pgcrypto when the server offers it, else core), pgcrypto, or core (sha256(), no extension) (env INSIGHTS_PRIVACY_HMAC; default: auto)")
    .option('--rotate <policy>', 'key rotation: none (one key until rotate-key, default), daily, weekly, monthly or yearly (a key per UTC period; env INSIGHTS_PRIVACY_ROTATE)')
    .option(
      '--allow-trigger <table.trigger>',
      'accept another trigger on a protected table after review, so status does not report it; repeat for more (env INSIGHTS_PRIVACY_ALLOW_TRIGGERS, comma-separated)',
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    );
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
    existing: flags.existing as string | undefined,
    batchSize: flags.batchSize as string | undefined,
    allowTriggers: Array.isArray(flags.allowTrigger) ? flags.allowTrigger.join(',') : undefined,
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

/**
 * Turns the first Ctrl-C (SIGINT) into an abort signal that stops a backfill
 * after its current batch. A second Ctrl-C ends the process at once, and the
 * server rolls back the batch in flight.
 */
function stopOnInterrupt(io: CliIo, display: ProgressDisplay): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onInterrupt = () => {
    if (controller.signal.aborted) {
      process.off('SIGINT', onInterrupt);
      process.kill(process.pid, 'SIGINT');
      return;
    }
    controller.abort();
    display.stop();
    io.stderr.write('insights-privacy: interrupted; stopping after the current batch (Ctrl-C again stops at once)\n');
  };
  process.on('SIGINT', onInterrupt);
  return { signal: controller.signal, dispose: () => process.off('SIGINT', onInterrupt) };
}

/** Tells a --json run's reader on stderr how to continue; the human output says so on stdout already. */
function interruptedMessage(io: CliIo, action: string, json: boolean): void {
  if (!json) return;
  io.stderr.write(`insights-privacy: stopped after the last committed batch; "insights-privacy backfill --existing ${action}" continues where it stopped.\n`);
}

/** Returns the mode that apply and generate need, or raises when no flag, variable or config key gave one. */
function requireMode(settings: Settings): Mode {
  if (!settings.mode) {
    throw new ToolError('INVALID_OPTION', 'No mode given.', { fix: 'Pass --mode anonymize, --mode disable or --mode off (or set INSIGHTS_PRIVACY_MODE, or mode in the config file).' });
  }
  return settings.mode;
}

async function runApply(io: CliIo, flags: CommonFlags & Record<string, unknown>): Promise<number> {
  const settings = await settingsFor(io, flags);
  const mode = requireMode(settings);
  const json = Boolean(flags.json);
  const display = progressDisplay(io);
  const interrupt = settings.existing && settings.existing !== 'keep' && !flags.dryRun ? stopOnInterrupt(io, display) : null;
  try {
    const result = await withClient(settings, (client) =>
      applyEnforcement(client, {
        mode,
        scope: settings.scope,
        hmac: settings.hmac,
        rotate: settings.rotate,
        schema: settings.schema,
        profile: settings.profile,
        dryRun: Boolean(flags.dryRun),
        lock: lockPolicy(io, settings),
        confirm: flags.yes || flags.dryRun ? undefined : (summary) => confirmWith(io, summary),
        existing: settings.existing,
        batchSize: settings.batchSize,
        allowTriggers: settings.allowTriggers,
        signal: interrupt?.signal,
        onBackfillProgress: (progress) => display.update(progress),
      }),
    );
    display.stop();

    if (json) {
      io.stdout.write(`${JSON.stringify({ ...result, statements: result.outcome === 'dry-run' ? result.statements : undefined }, null, 2)}\n`);
    } else {
      io.stdout.write(formatApply(result, paint(io)));
      if (result.outcome === 'dry-run') io.stdout.write(formatStatements(result.statements, settings.lockTimeoutMs));
    }
    if (result.backfill?.outcome === 'interrupted') {
      interruptedMessage(io, result.backfill.action, json);
      return ExitCode.aborted;
    }
    return ExitCode.ok;
  } finally {
    display.stop();
    interrupt?.dispose();
  }
}

function lockPolicy(io: CliIo, settings: Settings) {
  return {
    lockTimeoutMs: settings.lockTimeoutMs,
    retries: settings.lockRetries,
    onRetry: (attempt: number, reason: string) => io.stderr.write(`insights-privacy: attempt ${attempt} failed (${reason}); retrying\n`),
  };
}

async function runBackfillCommand(io: CliIo, flags: CommonFlags & Record<string, unknown>): Promise<number> {
  const settings = await settingsFor(io, flags);
  if (!settings.existing) {
    throw new ToolError('INVALID_OPTION', 'No --existing given: backfill needs to know what to do with the rows stored before enforcement.', {
      fix: 'Pass --existing pseudonymize or --existing purge (or set INSIGHTS_PRIVACY_EXISTING, or existing in the config file).',
    });
  }
  const existing = settings.existing;
  const display = progressDisplay(io);
  const interrupt = stopOnInterrupt(io, display);
  try {
    const result = await withClient(settings, (client) =>
      runBackfill(client, {
        existing,
        schema: settings.schema,
        profile: settings.profile,
        batchSize: settings.batchSize,
        lock: lockPolicy(io, settings),
        confirm: flags.yes ? undefined : (summary) => confirmWith(io, summary, 'backfill', 'Run this backfill?'),
        signal: interrupt.signal,
        onProgress: (progress) => display.update(progress),
      }),
    );
    display.stop();

    io.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : formatBackfill(result, paint(io)));
    if (result.outcome === 'interrupted') {
      interruptedMessage(io, result.action, Boolean(flags.json));
      return ExitCode.aborted;
    }
    return ExitCode.ok;
  } finally {
    display.stop();
    interrupt.dispose();
  }
}

async function runGenerate(io: CliIo, flags: CommonFlags & Record<string, unknown>): Promise<number> {
  const output = {
    format: flags.format as string | undefined,
    out: flags.out as string | undefined,
    cwd: io.cwd,
    version: flags.migrationVersion as string | undefined,
    force: Boolean(flags.force),
  };
  const settings = await settingsFor(io, flags);
  const mode = requireMode(settings);
  // The output options are checked before connecting, so that a mistake in them is reported as such.
  await checkOutput(output);
  const result = await withClient(settings, (client) =>
    generateMigration(client, {
      mode,
      scope: settings.scope,
      hmac: settings.hmac,
      rotate: settings.rotate,
      schema: settings.schema,
      profile: settings.profile,
      lockTimeoutMs: settings.lockTimeoutMs,
      allowTriggers: settings.allowTriggers,
      output,
    }),
  );
  io.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : formatGenerate(result, paint(io)));
  if (settings.existing && settings.existing !== 'keep') {
    io.stderr.write(`insights-privacy: the migration does not run the backfill of existing rows (existing = ${settings.existing}); run "insights-privacy backfill --existing ${settings.existing}" after it.\n`);
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

  addEnforcementOptions(addCommonOptions(program.command('apply')))
    .description('install, switch or remove enforcement, in one transaction')
    .option('--dry-run', 'print the SQL and change nothing')
    .option('-y, --yes', 'apply without asking for confirmation')
    .option('--json', 'print the result as JSON')
    .option('--lock-timeout <ms>', 'how long to try for the table locks before a retry, in milliseconds; writers wait behind apply for at most a quarter of it, up to 500 ms (default: 2000)')
    .option('--lock-retries <count>', 'retries when a lock wait times out (default: 5)')
    .option('--existing <choice>', 'rows stored before enforcement: keep (default), pseudonymize or purge, after the switch commits (env INSIGHTS_PRIVACY_EXISTING)')
    .option('--batch-size <rows>', 'rows per batch and transaction of the cut-over conversion and of the pseudonymize or purge backfill (default: 5000)')
    .addHelpText(
      'after',
      `
Examples:
  insights-privacy apply --mode anonymize --dry-run
  insights-privacy apply --mode anonymize --yes --database-url postgresql://coder@db/coder
  insights-privacy apply --mode anonymize --existing pseudonymize   # also pseudonymize older rows
  insights-privacy apply --mode disable --existing purge --yes        # drop new rows, delete older ones
  insights-privacy apply --mode off --yes`,
    )
    .action((flags) => run(() => runApply(io, flags)));

  addCommonOptions(program.command('backfill'))
    .description('pseudonymize or purge the rows stored before enforcement, in batches; resumes where a run stopped')
    .addOption(new Option('--existing <choice>', 'pseudonymize (replace real user ids with pseudonyms; needs mode anonymize) or purge (delete those rows)'))
    .option('--batch-size <rows>', 'rows per batch; each batch is its own transaction (default: 5000)')
    .option('-y, --yes', 'run without asking for confirmation')
    .option('--json', 'print the result as JSON; the progress bar goes to stderr and only on a terminal')
    .option('--lock-timeout <ms>', 'maximum wait for one lock, in milliseconds, before a batch is retried (default: 2000)')
    .option('--lock-retries <count>', 'retries of a batch whose lock wait timed out (default: 5)')
    .addHelpText(
      'after',
      `
Examples:
  insights-privacy backfill --existing pseudonymize
  insights-privacy backfill --existing purge --yes --batch-size 2000
  insights-privacy backfill --existing pseudonymize --yes --json > backfill.json

Ctrl-C stops after the current batch; running the same command again continues
where it stopped. "insights-privacy status" shows each table's backfill.`,
    )
    .action((flags) => run(() => runBackfillCommand(io, flags)));

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

  addEnforcementOptions(addCommonOptions(program.command('generate')))
    .description('write migration files (node-pg-migrate or plain SQL) with the SQL that apply would run, for deployment pipelines')
    .option('--format <format>', 'node-pg-migrate (one .mjs file with up and down) or sql (Flyway-named V and U files for psql, Flyway or Liquibase)')
    .option('--out <dir>', 'the existing folder to write the files into, for example the migrations folder')
    .option('--migration-version <version>', 'version in the file names (default: the generation time; node-pg-migrate: milliseconds, sql: UTC yyyymmddHHMMSS)')
    .option('--force', 'replace files of the same name')
    .option('--lock-timeout <ms>', 'lock_timeout of the migration: maximum wait for one lock, in milliseconds (default: 2000)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
Examples:
  insights-privacy generate --mode anonymize --format node-pg-migrate --out migrations
  insights-privacy generate --mode disable --format sql --out db/migration --migration-version 20260501120000

Run the files with:
  npx node-pg-migrate up --migrations-dir migrations             # reads DATABASE_URL
  psql -v ON_ERROR_STOP=1 --single-transaction -f db/migration/V20260501120000__insights_privacy_disable.sql

The files contain the SQL that apply would run on this database now, with apply's
advisory lock and lock_timeout, and a down migration back to the enforcement
recorded now. They contain no key. Generate them again after a Coder upgrade and
after upgrading insights-privacy; see docs/migrations.md.`,
    )
    .action((flags) => run(() => runGenerate(io, flags)));

  addKeyCommands(program, { io, run, addCommonOptions, settingsFor, confirmWith });

  program
    .command('demo')
    .description("start an embedded PostgreSQL with Coder's tables, write traffic, apply anonymize and show the difference")
    .option('--column-set <year>', "Coder's 2025 or 2026 column set (default: 2026)")
    .option('--verbose', 'show stack traces of errors')
    .addHelpText(
      'after',
      `
Examples:
  insights-privacy demo
  insights-privacy demo --column-set 2025   # Coder's tables before the 2026 changes

It needs no database: the embedded server and its data are deleted at the end.`,
    )
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
