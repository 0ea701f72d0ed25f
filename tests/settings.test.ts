import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { loadConfig, resolveSettings, type FlagValues, type LoadedConfig, type Settings } from '../src/cli/settings.js';
import { ExitCode, ToolError } from '../src/core/errors.js';
import { createCoderDatabase, type CoderDatabase } from './support/coder.js';
import { runCliCaptured, type CliRun, closedPort } from './support/cli.js';


/** Runs the command line in-process with an explicit environment and no terminal on stdin. */
const runTool = (argv: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<CliRun> => runCliCaptured(argv, { env, cwd });


/** Returns the ToolError that `action` throws, or fails the test. */
async function toolErrorOf(action: () => unknown): Promise<ToolError> {
  try {
    await action();
  } catch (error) {
    if (error instanceof ToolError) return error;
    throw error;
  }
  throw new Error('expected a ToolError, but nothing was thrown');
}

const noConfig: LoadedConfig = { path: null, values: {} };
const configPath = '/etc/insights-privacy/config.json';

let workDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-settings-'));
});

afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/** Creates an empty folder below the test's work folder. */
async function freshFolder(name: string): Promise<string> {
  const folder = join(workDir, name);
  await mkdir(folder);
  return folder;
}

describe('resolveSettings', () => {
  test('defaults', () => {
    const settings = resolveSettings({}, {}, noConfig);

    expect(settings.databaseUrl).toBeUndefined();
    expect(settings.mode).toBeUndefined();
    expect(settings.scope).toBe('source');
    expect(settings.hmac).toBe('auto');
    expect(settings.profile).toBe('coder');
    expect(settings.schema).toBe('insights_privacy');
    expect(settings.lockTimeoutMs).toBe(2000);
    expect(settings.lockRetries).toBe(5);
    expect(settings.connectTimeoutSeconds).toBe(10);
  });

  // Each value differs from the one of the next lower source, so the
  // result shows which source won.
  const sources: {
    key: keyof Settings & keyof FlagValues;
    variable: string;
    flag: string;
    env: string;
    file: string | number;
    fallback: unknown;
    expected: { flag: unknown; env: unknown; file: unknown };
  }[] = [
    { key: 'mode', variable: 'INSIGHTS_PRIVACY_MODE', flag: 'disable', env: 'off', file: 'anonymize', fallback: undefined, expected: { flag: 'disable', env: 'off', file: 'anonymize' } },
    { key: 'scope', variable: 'INSIGHTS_PRIVACY_SCOPE', flag: 'source', env: 'rollup', file: 'source', fallback: 'source', expected: { flag: 'source', env: 'rollup', file: 'source' } },
    { key: 'hmac', variable: 'INSIGHTS_PRIVACY_HMAC', flag: 'core', env: 'pgcrypto', file: 'core', fallback: 'auto', expected: { flag: 'core', env: 'pgcrypto', file: 'core' } },
    { key: 'schema', variable: 'INSIGHTS_PRIVACY_SCHEMA', flag: 'from_flag', env: 'from_env', file: 'from_file', fallback: 'insights_privacy', expected: { flag: 'from_flag', env: 'from_env', file: 'from_file' } },
    { key: 'profile', variable: 'INSIGHTS_PRIVACY_PROFILE', flag: 'flag_profile', env: 'env_profile', file: 'file_profile', fallback: 'coder', expected: { flag: 'flag_profile', env: 'env_profile', file: 'file_profile' } },
    { key: 'lockTimeoutMs', variable: 'INSIGHTS_PRIVACY_LOCK_TIMEOUT_MS', flag: '100', env: '200', file: 300, fallback: 2000, expected: { flag: 100, env: 200, file: 300 } },
    { key: 'lockRetries', variable: 'INSIGHTS_PRIVACY_LOCK_RETRIES', flag: '0', env: '1', file: 2, fallback: 5, expected: { flag: 0, env: 1, file: 2 } },
    { key: 'connectTimeoutSeconds', variable: 'INSIGHTS_PRIVACY_CONNECT_TIMEOUT_SECONDS', flag: '3', env: '4', file: 5, fallback: 10, expected: { flag: 3, env: 4, file: 5 } },
  ];
  const levels = ['flag', 'env', 'file', 'default'] as const;
  const precedenceCases = sources.flatMap((source) => levels.map((level) => ({ ...source, level })));

  test.each(precedenceCases)('$key from $level', (row) => {
    const rank = levels.indexOf(row.level);
    const flags: FlagValues = rank <= 0 ? { [row.key]: row.flag } : {};
    const env: NodeJS.ProcessEnv = rank <= 1 ? { [row.variable]: row.env } : {};
    const config: LoadedConfig = rank <= 2 ? { path: configPath, values: { [row.key]: row.file } } : noConfig;

    const settings = resolveSettings(flags, env, config);

    const expected = row.level === 'default' ? row.fallback : row.expected[row.level];
    expect(settings[row.key]).toBe(expected);
  });

  test('empty variable falls through', () => {
    const settings = resolveSettings({}, { INSIGHTS_PRIVACY_MODE: '', INSIGHTS_PRIVACY_SCHEMA: '' }, { path: configPath, values: { mode: 'disable' } });

    expect(settings.mode).toBe('disable');
    expect(settings.schema).toBe('insights_privacy');
  });

  const urls = {
    flag: 'postgresql://flag@host/db',
    privacy: 'postgresql://privacy@host/db',
    generic: 'postgresql://generic@host/db',
    file: 'postgresql://file@host/db',
  };
  const urlCases: { level: string; flags: FlagValues; env: NodeJS.ProcessEnv; config: LoadedConfig; expected: string | undefined }[] = [
    {
      level: 'flag',
      flags: { databaseUrl: urls.flag },
      env: { INSIGHTS_PRIVACY_DATABASE_URL: urls.privacy, DATABASE_URL: urls.generic },
      config: { path: configPath, values: { databaseUrl: urls.file } },
      expected: urls.flag,
    },
    {
      level: 'INSIGHTS_PRIVACY_DATABASE_URL',
      flags: {},
      env: { INSIGHTS_PRIVACY_DATABASE_URL: urls.privacy, DATABASE_URL: urls.generic },
      config: { path: configPath, values: { databaseUrl: urls.file } },
      expected: urls.privacy,
    },
    { level: 'DATABASE_URL', flags: {}, env: { DATABASE_URL: urls.generic }, config: { path: configPath, values: { databaseUrl: urls.file } }, expected: urls.generic },
    { level: 'config file', flags: {}, env: {}, config: { path: configPath, values: { databaseUrl: urls.file } }, expected: urls.file },
    { level: 'PG* variables', flags: {}, env: { PGHOST: 'db.example.com' }, config: noConfig, expected: undefined },
  ];

  test.each(urlCases)('database URL from $level', (row) => {
    expect(resolveSettings(row.flags, row.env, row.config).databaseUrl).toBe(row.expected);
  });

  test('empty INSIGHTS_PRIVACY_DATABASE_URL', () => {
    const settings = resolveSettings({}, { INSIGHTS_PRIVACY_DATABASE_URL: '', DATABASE_URL: urls.generic }, noConfig);

    expect(settings.databaseUrl).toBe(urls.generic);
  });

  test.each([
    { raw: '250', expected: 250 },
    { raw: '1', expected: 1 },
    { raw: '600000', expected: 600000 },
  ])('lock timeout $raw accepted', ({ raw, expected }) => {
    expect(resolveSettings({ lockTimeoutMs: raw }, {}, noConfig).lockTimeoutMs).toBe(expected);
  });

  test.each(['0', '600001', '2.5', '1e3', '-5', '0x10', 'fast', ''])('lock timeout "%s" rejected', async (raw) => {
    const error = await toolErrorOf(() => resolveSettings({ lockTimeoutMs: raw }, {}, noConfig));

    expect(error.code).toBe('INVALID_OPTION');
    expect(error.message).toContain(`--lock-timeout must be an integer from 1 to 600000, got "${raw}"`);
  });

  test('all problems at once', async () => {
    const flags: FlagValues = { mode: 'anonymise', lockTimeoutMs: 'soon' };
    const env = { INSIGHTS_PRIVACY_SCOPE: 'everything', INSIGHTS_PRIVACY_LOCK_RETRIES: 'many' };
    const config: LoadedConfig = { path: configPath, values: { connectTimeoutSeconds: 0 } };

    const error = await toolErrorOf(() => resolveSettings(flags, env, config));

    expect(error.code).toBe('INVALID_OPTION');
    expect(error.exitCode).toBe(ExitCode.error);
    expect(error.message).toContain('--mode must be one of anonymize, disable, off, got "anonymise"');
    expect(error.message).toContain('--lock-timeout must be an integer from 1 to 600000, got "soon"');
    expect(error.message).toContain('INSIGHTS_PRIVACY_SCOPE must be one of source, rollup, got "everything"');
    expect(error.message).toContain('INSIGHTS_PRIVACY_LOCK_RETRIES must be an integer from 0 to 100, got "many"');
    expect(error.message).toContain(`${configPath} key connectTimeoutSeconds must be an integer from 1 to 600, got "0"`);
    expect(error.fix).toBeDefined();
  });

  test('password absent from problems', async () => {
    const secret = 'resolve-secret-4f2a';
    const flags: FlagValues = { databaseUrl: `postgresql://coder:${secret}@db/coder`, mode: 'everything' };

    const error = await toolErrorOf(() => resolveSettings(flags, { DATABASE_URL: `postgresql://coder:${secret}@other/coder` }, noConfig));

    expect(error.message).not.toContain(secret);
    expect(error.fix).not.toContain(secret);
  });
});

describe('loadConfig', () => {
  test('finds .insights-privacyrc.json in cwd', async () => {
    const folder = await freshFolder('rc-json');
    await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify({ mode: 'disable', lockTimeoutMs: 750 }));

    const config = await loadConfig(undefined, folder);

    expect(config.path).toBe(join(folder, '.insights-privacyrc.json'));
    expect(config.values).toEqual({ mode: 'disable', lockTimeoutMs: 750 });
  });

  test('finds YAML .insights-privacyrc in cwd', async () => {
    const folder = await freshFolder('rc-yaml');
    await writeFile(join(folder, '.insights-privacyrc'), 'mode: anonymize\nscope: rollup\n');

    const config = await loadConfig(undefined, folder);

    expect(config.values).toEqual({ mode: 'anonymize', scope: 'rollup' });
  });

  test('finds package.json key', async () => {
    const folder = await freshFolder('package-json');
    await writeFile(join(folder, 'package.json'), JSON.stringify({ name: 'ops', 'insights-privacy': { schema: 'privacy_ops' } }));

    const config = await loadConfig(undefined, folder);

    expect(config.path).toBe(join(folder, 'package.json'));
    expect(config.values).toEqual({ schema: 'privacy_ops' });
  });

  test('no file in cwd', async () => {
    const folder = await freshFolder('nothing');

    const config = await loadConfig(undefined, folder);

    expect(config).toEqual({ path: null, values: {} });
  });

  test('explicit path wins over cwd', async () => {
    const folder = await freshFolder('explicit');
    await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify({ mode: 'disable' }));
    await writeFile(join(folder, 'chosen.json'), JSON.stringify({ mode: 'off' }));

    const config = await loadConfig(join(folder, 'chosen.json'), folder);

    expect(config.path).toBe(join(folder, 'chosen.json'));
    expect(config.values).toEqual({ mode: 'off' });
  });

  test('relative path against cwd', async () => {
    const folder = await freshFolder('relative');
    await writeFile(join(folder, 'relative.json'), JSON.stringify({ mode: 'off' }));

    const config = await loadConfig('relative.json', folder);

    expect(config.values).toEqual({ mode: 'off' });
  });

  test('empty file', async () => {
    const folder = await freshFolder('empty-file');
    await writeFile(join(folder, '.insights-privacyrc.json'), '');

    const config = await loadConfig(undefined, folder);

    expect(config.values).toEqual({});
  });

  test('all problems at once', async () => {
    const folder = await freshFolder('problems');
    const path = join(folder, 'problems.json');
    await writeFile(path, JSON.stringify({ mode: 'fast', lockRetries: -1, scope: 7, colour: true }));

    const error = await toolErrorOf(() => loadConfig(path, folder));

    expect(error.code).toBe('INVALID_CONFIG');
    expect(error.message).toContain(path);
    expect(error.message).toContain('mode: ');
    expect(error.message).toContain('(got "fast")');
    expect(error.message).toContain('lockRetries: ');
    expect(error.message).toContain('(got -1)');
    expect(error.message).toContain('scope: ');
    expect(error.message).toContain('(got 7)');
    expect(error.message).toContain('unknown key(s) colour');
    expect(error.fix).toContain('lockTimeoutMs');
  });

  test('not an object', async () => {
    const folder = await freshFolder('array');
    const path = join(folder, 'array.json');
    await writeFile(path, '["anonymize"]');

    const error = await toolErrorOf(() => loadConfig(path, folder));

    expect(error.code).toBe('INVALID_CONFIG');
    expect(error.message).toContain('one object of settings');
  });

  test('invalid databaseUrl not repeated', async () => {
    const secret = 'config-secret-8a1d';
    const folder = await freshFolder('url-type');
    const path = join(folder, 'url.json');
    await writeFile(path, JSON.stringify({ databaseUrl: { url: `postgresql://coder:${secret}@db/coder` } }));

    const error = await toolErrorOf(() => loadConfig(path, folder));

    expect(error.message).toContain('databaseUrl');
    expect(error.message).not.toContain(secret);
  });

  test('unparseable file hides its text', async () => {
    const secret = 'config-secret-b3c9';
    const folder = await freshFolder('unparseable');
    const path = join(folder, 'broken.json');
    await writeFile(path, `{\n  "databaseUrl": "postgresql://coder:${secret}@db/coder",\n  "mode": "anonymize",,\n}\n`);

    const error = await toolErrorOf(() => loadConfig(path, folder));

    expect(error.code).toBe('INVALID_CONFIG');
    expect(error.message).toContain(path);
    expect(error.message).not.toContain(secret);
    expect(error.fix).not.toContain(secret);
  });
});

describe('command line settings', () => {
  let coder: CoderDatabase;
  let unreachableUrl: string;

  beforeAll(async () => {
    coder = await createCoderDatabase('settings', '2025');
    unreachableUrl = `postgresql://coder:unreachable-secret-61ce@127.0.0.1:${await closedPort()}/coder`;
  });

  afterAll(async () => {
    await coder?.close();
  });

  /** Runs `apply --dry-run --json` and returns the parsed result. */
  async function dryRun(args: string[], env: NodeJS.ProcessEnv, cwd = workDir): Promise<{ run: CliRun; result: Record<string, unknown> | null }> {
    const run = await runTool(['apply', '--dry-run', '--json', ...args], env, cwd);
    return { run, result: run.code === ExitCode.ok ? (JSON.parse(run.stdout) as Record<string, unknown>) : null };
  }

  test('scope and schema from flags', async () => {
    const folder = await freshFolder('cli-flags');
    await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify({ scope: 'source', schema: 'file_schema' }));
    const env = { INSIGHTS_PRIVACY_SCOPE: 'source', INSIGHTS_PRIVACY_SCHEMA: 'env_schema' };

    const { run, result } = await dryRun(['--mode', 'anonymize', '--scope', 'rollup', '--schema', 'flag_schema', '--database-url', coder.database.url], env, folder);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.scope).toBe('rollup');
    expect(result?.schema).toBe('flag_schema');
  });

  test('scope and schema from environment', async () => {
    const folder = await freshFolder('cli-env');
    await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify({ scope: 'source', schema: 'file_schema' }));
    const env = { INSIGHTS_PRIVACY_SCOPE: 'rollup', INSIGHTS_PRIVACY_SCHEMA: 'env_schema' };

    const { run, result } = await dryRun(['--mode', 'anonymize', '--database-url', coder.database.url], env, folder);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.scope).toBe('rollup');
    expect(result?.schema).toBe('env_schema');
  });

  test('scope and schema from config file', async () => {
    const folder = await freshFolder('cli-file');
    await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify({ scope: 'rollup', schema: 'file_schema' }));

    const { run, result } = await dryRun(['--mode', 'anonymize', '--database-url', coder.database.url], {}, folder);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.scope).toBe('rollup');
    expect(result?.schema).toBe('file_schema');
  });

  test('scope and schema defaults', async () => {
    const { run, result } = await dryRun(['--mode', 'anonymize', '--database-url', coder.database.url], {}, await freshFolder('cli-defaults'));

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.scope).toBe('source');
    expect(result?.schema).toBe('insights_privacy');
  });

  test.each([
    { level: 'flag', args: ['--mode', 'disable'], env: { INSIGHTS_PRIVACY_MODE: 'anonymize' }, file: { mode: 'anonymize' }, expected: 'disable' },
    { level: 'environment', args: [], env: { INSIGHTS_PRIVACY_MODE: 'disable' }, file: { mode: 'anonymize' }, expected: 'disable' },
    { level: 'config file', args: [], env: {}, file: { mode: 'disable' }, expected: 'disable' },
  ])('mode from $level', async (row) => {
    const folder = await freshFolder(`cli-mode-${row.level.replace(' ', '-')}`);
    await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify(row.file));

    const { run, result } = await dryRun([...row.args, '--database-url', coder.database.url], row.env, folder);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.mode).toBe(row.expected);
    expect(result?.outcome).toBe('dry-run');
  });

  test('mode has no default', async () => {
    const { run } = await dryRun(['--database-url', coder.database.url], {}, await freshFolder('cli-no-mode'));

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('No mode given');
  });

  test('config from --config', async () => {
    const folder = await freshFolder('cli-config-flag');
    await writeFile(join(folder, 'chosen.json'), JSON.stringify({ mode: 'disable', schema: 'chosen_schema' }));
    const env = { INSIGHTS_PRIVACY_CONFIG: join(folder, 'ignored.json') };
    await writeFile(env.INSIGHTS_PRIVACY_CONFIG, JSON.stringify({ mode: 'anonymize', schema: 'ignored_schema' }));

    const { run, result } = await dryRun(['--config', join(folder, 'chosen.json'), '--database-url', coder.database.url], env, folder);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.schema).toBe('chosen_schema');
  });

  test('config from INSIGHTS_PRIVACY_CONFIG', async () => {
    const folder = await freshFolder('cli-config-env');
    await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify({ mode: 'disable', schema: 'cwd_schema' }));
    const env = { INSIGHTS_PRIVACY_CONFIG: join(folder, 'named.json') };
    await writeFile(env.INSIGHTS_PRIVACY_CONFIG, JSON.stringify({ mode: 'disable', schema: 'named_schema' }));

    const { run, result } = await dryRun(['--database-url', coder.database.url], env, folder);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.schema).toBe('named_schema');
  });

  test('relative --config from cwd', async () => {
    const folder = await freshFolder('cli-config-relative');
    await writeFile(join(folder, 'relative.json'), JSON.stringify({ mode: 'disable', schema: 'relative_schema' }));

    const { run, result } = await dryRun(['--config', 'relative.json', '--database-url', coder.database.url], {}, folder);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.schema).toBe('relative_schema');
  });

  test('DATABASE_URL without other URL', async () => {
    const { run, result } = await dryRun(['--mode', 'disable'], { DATABASE_URL: coder.database.url });

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.database).toBe(coder.database.name);
  });

  test('INSIGHTS_PRIVACY_DATABASE_URL over DATABASE_URL', async () => {
    const env = { INSIGHTS_PRIVACY_DATABASE_URL: coder.database.url, DATABASE_URL: unreachableUrl };

    const { run, result } = await dryRun(['--mode', 'disable'], env);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.database).toBe(coder.database.name);
  });

  test('--database-url over environment', async () => {
    const env = { INSIGHTS_PRIVACY_DATABASE_URL: unreachableUrl, DATABASE_URL: unreachableUrl };

    const { run, result } = await dryRun(['--mode', 'disable', '--database-url', coder.database.url], env);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.database).toBe(coder.database.name);
  });

  test('config databaseUrl without environment', async () => {
    const folder = await freshFolder('cli-config-url');
    await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify({ databaseUrl: coder.database.url }));

    const { run, result } = await dryRun(['--mode', 'disable'], {}, folder);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.database).toBe(coder.database.name);
  });

  test('DATABASE_URL over config databaseUrl', async () => {
    const folder = await freshFolder('cli-env-over-config-url');
    await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify({ databaseUrl: coder.database.url }));

    const { run } = await dryRun(['--mode', 'disable'], { DATABASE_URL: unreachableUrl }, folder);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain(new URL(unreachableUrl).host);
  });

  test('PG* variables from the environment', async () => {
    const url = new URL(coder.database.url);
    const env = {
      PGHOST: url.hostname,
      PGPORT: url.port,
      PGUSER: decodeURIComponent(url.username),
      PGPASSWORD: decodeURIComponent(url.password),
      PGDATABASE: coder.database.name,
    };

    const { run, result } = await dryRun(['--mode', 'disable'], env);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.database).toBe(coder.database.name);
  });

  test('all problems at once', async () => {
    const env = { INSIGHTS_PRIVACY_LOCK_RETRIES: 'many' };

    const run = await runTool(['apply', '--mode', 'anonymise', '--scope', 'all', '--lock-timeout', 'soon', '--database-url', unreachableUrl], env, workDir);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('--mode must be one of anonymize, disable, off, got "anonymise"');
    expect(run.stderr).toContain('--scope must be one of source, rollup, got "all"');
    expect(run.stderr).toContain('--lock-timeout must be an integer from 1 to 600000, got "soon"');
    expect(run.stderr).toContain('INSIGHTS_PRIVACY_LOCK_RETRIES must be an integer from 0 to 100, got "many"');
    expect(run.stderr).not.toContain('Could not connect');
  });

  test('password absent with --verbose', async () => {
    const secret = 'verbose-secret-0d4e';
    const urls = [`postgresql://coder:${secret}@127.0.0.1:${new URL(unreachableUrl).port}/coder`, `postgresql://coder:${secret}@localhost:99999/coder`];

    for (const url of urls) {
      const run = await runTool(['status', '--verbose', '--database-url', url], {}, workDir);

      expect(run.code).toBe(ExitCode.error);
      expect(run.stderr).not.toContain(secret);
    }
  });

  describe('lock timeout', () => {
    let holder: pg.Client;

    // A transaction that holds an ACCESS EXCLUSIVE lock on one usage table
    // makes every apply attempt wait for the whole lock timeout.
    beforeAll(async () => {
      holder = await coder.database.connect();
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE public.workspace_app_stats IN ACCESS EXCLUSIVE MODE');
    });

    afterAll(async () => {
      await holder?.query('ROLLBACK');
      await holder?.end();
    });

    test.each([
      { level: 'flag', args: ['--lock-timeout', '150'], env: { INSIGHTS_PRIVACY_LOCK_TIMEOUT_MS: '250' }, file: { lockTimeoutMs: 350 }, expected: 150 },
      { level: 'environment', args: [], env: { INSIGHTS_PRIVACY_LOCK_TIMEOUT_MS: '250' }, file: { lockTimeoutMs: 350 }, expected: 250 },
      { level: 'config file', args: [], env: {}, file: { lockTimeoutMs: 350 }, expected: 350 },
      { level: 'default', args: [], env: {}, file: {}, expected: 2000 },
    ])('from $level', async (row) => {
      const folder = await freshFolder(`cli-lock-${row.level.replace(' ', '-')}`);
      await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify(row.file));
      const args = ['apply', '--mode', 'disable', '--yes', '--lock-retries', '0', '--database-url', coder.database.url, ...row.args];

      const started = Date.now();
      const run = await runTool(args, row.env, folder);
      const elapsed = Date.now() - started;

      expect(run.code).toBe(ExitCode.error);
      expect(run.stderr).toContain(`a lock was not granted within ${row.expected} ms`);
      expect(elapsed).toBeGreaterThanOrEqual(row.expected);
    });
  });
});
