import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { StatusReport } from '../src/commands/status.js';
import { ExitCode } from '../src/core/errors.js';
import { createCoderDatabase, type CoderDatabase } from './support/coder.js';
import { runCliCaptured, type CliRun, closedPort, type CliRunOptions } from './support/cli.js';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));
const binaryPath = join(repositoryRoot, 'bin', 'insights-privacy.js');
const packageVersion = (JSON.parse(readFileSync(join(repositoryRoot, 'package.json'), 'utf8')) as { version: string }).version;
const ansiEscape = '\u001b[';

/** Output and exit code of one run of the command line. */

let workDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-cli-'));
});

afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/** Runs the command line in-process with an explicit environment. */
const runTool = (argv: string[], options: Omit<CliRunOptions, 'cwd'> = {}): Promise<CliRun> => runCliCaptured(argv, { ...options, cwd: workDir });

/**
 * Runs the built binary with `node` and an explicit environment, so that a
 * DATABASE_URL of the test run never reaches it. Its stdin is closed.
 */
async function runBinary(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  if (!existsSync(join(repositoryRoot, 'dist', 'cli', 'main.js'))) {
    throw new Error('dist/cli/main.js is missing: run "npm run build" before the tests');
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [binaryPath, ...args], {
      cwd: workDir,
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}


describe('usage', () => {
  test('--help', async () => {
    const run = await runTool(['--help']);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).toContain('Usage: insights-privacy');
    expect(run.stdout).toContain('apply [options]');
    expect(run.stdout).toContain('status [options]');
    expect(run.stdout).toContain('3  aborted');
  });

  test('apply --help', async () => {
    const run = await runTool(['apply', '--help']);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).toContain('--mode <mode>');
    expect(run.stdout).toContain('--dry-run');
    expect(run.stdout).toContain('--lock-timeout <ms>');
    expect(run.stdout).toContain('insights-privacy apply --mode anonymize --dry-run');
  });

  test('help status', async () => {
    const run = await runTool(['help', 'status']);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).toContain('--check');
    expect(run.stdout).toContain('--no-counts');
  });

  test('--version', async () => {
    const run = await runTool(['--version']);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).toBe(`${packageVersion}\n`);
  });

  test('no command', async () => {
    const run = await runTool([]);

    expect(run.stderr).toContain('Usage: insights-privacy');
    expect(run.code).toBe(ExitCode.error);
  });

  test.each([
    { case: 'unknown command', argv: ['anonymize'], message: "unknown command 'anonymize'" },
    { case: 'unknown option', argv: ['apply', '--mode', 'anonymize', '--force'], message: "unknown option '--force'" },
    { case: 'option without value', argv: ['apply', '--mode'], message: "option '--mode <mode>' argument missing" },
    { case: 'extra argument', argv: ['status', 'now'], message: "too many arguments for 'status'" },
  ])('$case', async ({ argv, message }) => {
    const run = await runTool(argv);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain(`error: ${message}`);
  });

  test('no stack trace without --verbose', async () => {
    const run = await runTool(['status', '--database-url', `postgresql://coder@127.0.0.1:${await closedPort()}/coder`]);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('ECONNREFUSED');
    expect(run.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('against a Coder database', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('cli', '2026');
  });

  afterAll(async () => {
    await coder?.close();
  });

  async function schemaPresent(): Promise<boolean> {
    const { rows } = await coder.client.query<{ present: boolean }>("SELECT to_regnamespace('insights_privacy') IS NOT NULL AS present");
    return rows[0].present;
  }

  test('status without --check exits 0', async () => {
    const run = await runTool(['status', '--database-url', coder.database.url]);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).toContain('Mode:         off');
    expect(run.stdout).toContain('error: schema insights_privacy is missing');
  });

  test.each([
    { case: 'declined', typed: 'n\n' },
    { case: 'empty answer', typed: '\n' },
  ])('confirmation $case aborts', async ({ typed }) => {
    const run = await runTool(['apply', '--mode', 'anonymize', '--database-url', coder.database.url], { typed });

    expect(run.code).toBe(ExitCode.aborted);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('Mode: off -> anonymize (scope source), in schema insights_privacy.');
    expect(run.stderr).toContain('Apply these changes? [y/N]');
    expect(run.stderr).toContain('Aborted: nothing was changed.');
    expect(await schemaPresent()).toBe(false);
  });

  // End of input at the prompt (Ctrl-D) must count as "no". If the run
  // hangs instead, its connection is terminated so that jest can exit.
  test('confirmation at end of input aborts', async () => {
    const pending = runTool(['apply', '--mode', 'anonymize', '--database-url', coder.database.url], { typed: '' });
    const outcome = await Promise.race([pending, sleep(5000, null, { ref: false })]);
    if (outcome === null) {
      await coder.client.query(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE datname = current_database() AND application_name = 'insights-privacy'",
      );
    }

    expect(outcome === null ? 'no exit within 5 seconds' : outcome.code).toBe(ExitCode.aborted);
    expect(outcome?.stderr).toContain('Aborted: nothing was changed.');
    expect(await schemaPresent()).toBe(false);
  });

  test('confirmation accepted', async () => {
    const run = await runTool(['apply', '--mode', 'anonymize', '--database-url', coder.database.url], { typed: 'yes\n' });

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stderr).toContain('Apply these changes? [y/N]');
    expect(run.stdout).toContain('Applied mode anonymize (scope source)');
    expect(await schemaPresent()).toBe(true);
  });

  test('unchanged apply asks nothing', async () => {
    const run = await runTool(['apply', '--mode', 'anonymize', '--database-url', coder.database.url]);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stderr).toBe('');
    expect(run.stdout).toContain('nothing changed');
  });

  test('plain output by default', async () => {
    const run = await runTool(['status', '--database-url', coder.database.url]);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).not.toContain(ansiEscape);
  });

  test('colour on a terminal', async () => {
    const run = await runTool(['status', '--database-url', coder.database.url], { colour: true });

    expect(run.stdout).toContain(ansiEscape);
  });

  test('NO_COLOR on a terminal', async () => {
    const run = await runTool(['status', '--database-url', coder.database.url], { colour: true, env: { NO_COLOR: '1' } });

    expect(run.stdout).not.toContain(ansiEscape);
  });

  test('FORCE_COLOR without a terminal', async () => {
    const run = await runTool(['status', '--database-url', coder.database.url], { env: { FORCE_COLOR: '1' } });

    expect(run.stdout).toContain(ansiEscape);
  });

  test('JSON output has no colour', async () => {
    const run = await runTool(['status', '--json', '--database-url', coder.database.url], { colour: true, env: { FORCE_COLOR: '1' } });

    expect(run.stdout).not.toContain(ansiEscape);
    expect((JSON.parse(run.stdout) as StatusReport).mode).toBe('anonymize');
  });
});

describe('built binary', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('cli_binary', '2025');
  });

  afterAll(async () => {
    await coder?.close();
  });

  test('--version', async () => {
    const run = await runBinary(['--version']);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).toBe(`${packageVersion}\n`);
  });

  test('check, apply, check, off', async () => {
    const env = { DATABASE_URL: coder.database.url };

    const before = await runBinary(['status', '--check', '--no-counts'], env);
    const unconfirmed = await runBinary(['apply', '--mode', 'anonymize'], env);
    const applied = await runBinary(['apply', '--mode', 'anonymize', '--yes'], env);
    const after = await runBinary(['status', '--check', '--json'], env);
    const off = await runBinary(['apply', '--mode', 'off', '--yes', '--json', '--database-url', coder.database.url]);

    expect(before.code).toBe(ExitCode.checkFailed);
    expect(before.stdout).toContain('error: schema insights_privacy is missing');
    expect(unconfirmed.code).toBe(ExitCode.aborted);
    expect(unconfirmed.stderr).toContain('--yes');
    expect(applied.code).toBe(ExitCode.ok);
    expect(applied.stdout).toContain(`Applied mode anonymize (scope source) to ${coder.database.name} (Coder (2025 column set)).`);
    expect(applied.stderr).toBe('');
    expect(after.code).toBe(ExitCode.ok);
    expect((JSON.parse(after.stdout) as StatusReport).ok).toBe(true);
    expect(off.code).toBe(ExitCode.ok);
    expect((JSON.parse(off.stdout) as { outcome: string }).outcome).toBe('applied');
  });

  test('--verbose shows the cause', async () => {
    const url = `postgresql://coder@127.0.0.1:${await closedPort()}/coder`;

    const run = await runBinary(['status', '--verbose', '--database-url', url]);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('error: Could not connect to');
    expect(run.stderr).toMatch(/\nError: connect ECONNREFUSED .*\n\s+at /);
  });

  test('unreachable server', async () => {
    const run = await runBinary(['status', '--check'], { DATABASE_URL: `postgresql://coder@127.0.0.1:${await closedPort()}/coder` });

    expect(run.code).toBe(ExitCode.error);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('error: Could not connect to postgresql://coder@127.0.0.1:');
  });

  test('invalid option', async () => {
    const run = await runBinary(['apply', '--mode', 'delete', '--yes'], { DATABASE_URL: coder.database.url });

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('--mode must be one of anonymize, disable, off, got "delete"');
  });
});
