import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ExitCode } from '../src/core/errors.js';
import { createCoderDatabase, createLoginRole, grantOnUsageTables, type CoderDatabase, type TestRole } from './support/coder.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';
import { runCliCaptured, type CliRun, closedPort } from './support/cli.js';

const { escapeIdentifier } = pg;


/** Runs the command line in-process with an explicit environment and no terminal on stdin. */
const runTool = (argv: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<CliRun> => runCliCaptured(argv, { env, cwd });


// Everything apply could touch, as one JSON text: schemas, extensions,
// triggers, constraints of public tables and functions outside the system
// schemas. Row counts are added by catalogSnapshot.
const catalogSnapshotSql = `
SELECT json_build_object(
  'schemas', (SELECT json_agg(n.nspname ORDER BY n.nspname) FROM pg_catalog.pg_namespace AS n WHERE n.nspname NOT LIKE 'pg\\_%'),
  'extensions', (SELECT json_agg(e.extname || ' in ' || e.extnamespace::regnamespace::text ORDER BY e.extname) FROM pg_catalog.pg_extension AS e),
  'triggers', (SELECT json_agg(json_build_array(t.tgrelid::regclass::text, t.tgname, t.tgenabled, t.tgfoid::regprocedure::text) ORDER BY t.tgrelid::regclass::text, t.tgname)
               FROM pg_catalog.pg_trigger AS t WHERE NOT t.tgisinternal),
  'constraints', (SELECT json_agg(json_build_array(con.conrelid::regclass::text, con.conname, con.contype, con.convalidated, pg_catalog.pg_get_constraintdef(con.oid))
                                  ORDER BY con.conrelid::regclass::text, con.conname)
                  FROM pg_catalog.pg_constraint AS con WHERE con.connamespace = 'public'::regnamespace),
  'functions', (SELECT json_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text)
                FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
)::text AS snapshot`;

async function catalogSnapshot(client: pg.ClientBase): Promise<string> {
  const { rows } = await client.query<{ snapshot: string }>(catalogSnapshotSql);
  const tables = await client.query<{ name: string }>(
    "SELECT c.relname AS name FROM pg_catalog.pg_class AS c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY c.relname",
  );
  const counts: string[] = [];
  for (const { name } of tables.rows) {
    const counted = await client.query<{ count: string }>(`SELECT count(*) AS count FROM public.${escapeIdentifier(name)}`);
    counts.push(`${name}=${counted.rows[0].count}`);
  }
  return `${rows[0].snapshot} rows: ${counts.join(', ')}`;
}

/** What a test row can build its arguments from. */
interface Context {
  coderUrl: string;
  emptyUrl: string;
  /** The password of the test server's superuser, which no message may contain. */
  serverPassword: string;
  wrongPasswordUrl: string;
  unreachableUrl: string;
  nonOwner: TestRole;
  configDir: string;
}

interface BadInputCase {
  name: string;
  args: (context: Context) => string[];
  env?: (context: Context) => NodeJS.ProcessEnv;
  code: number;
  /** Texts stderr must contain: the offending value and the fix. */
  mentions: (context: Context) => string[];
  /** Texts neither stdout nor stderr may contain. */
  secrets?: (context: Context) => string[];
}

const closedPortSecret = 'closed-port-secret-5b1c';
const mysqlSecret = 'mysql-secret-77f0';
const badPortSecret = 'bad-port-secret-1e9d';
const wrongPassword = 'wrong-password-2c4a';
const configFileSecret = 'config-file-secret-90ab';
const brokenConfigSecret = 'broken-config-secret-3d7e';

const cases: BadInputCase[] = [
  {
    name: 'not a URL',
    args: () => ['apply', '--mode', 'anonymize', '--yes', '--database-url', 'not a url'],
    code: ExitCode.error,
    mentions: () => ['not a url', 'postgresql://USER:PASSWORD@HOST:PORT/DATABASE'],
  },
  {
    name: 'unparseable URL with a password',
    args: () => ['apply', '--mode', 'anonymize', '--yes', '--database-url', `postgresql://coder:${badPortSecret}@localhost:99999/coder`],
    code: ExitCode.error,
    mentions: () => ['99999', 'postgresql://USER:PASSWORD@HOST:PORT/DATABASE'],
    secrets: () => [badPortSecret],
  },
  {
    name: 'empty URL',
    args: () => ['apply', '--mode', 'anonymize', '--yes', '--database-url', ''],
    code: ExitCode.error,
    mentions: () => ['error: Invalid database URL', '--database-url'],
  },
  {
    name: 'mysql scheme',
    args: () => ['apply', '--mode', 'anonymize', '--yes', '--database-url', `mysql://coder:${mysqlSecret}@localhost/coder`],
    code: ExitCode.error,
    mentions: () => ['mysql://', 'postgresql://'],
    secrets: () => [mysqlSecret],
  },
  {
    name: 'unreachable server',
    args: (context) => ['apply', '--mode', 'anonymize', '--yes', '--database-url', context.unreachableUrl],
    code: ExitCode.error,
    mentions: (context) => [new URL(context.unreachableUrl).host, 'ECONNREFUSED', 'Check the host, port'],
    secrets: () => [closedPortSecret],
  },
  {
    name: 'unreachable server from DATABASE_URL',
    args: () => ['status', '--check'],
    env: (context) => ({ DATABASE_URL: context.unreachableUrl }),
    code: ExitCode.error,
    mentions: (context) => [new URL(context.unreachableUrl).host, 'ECONNREFUSED'],
    secrets: () => [closedPortSecret],
  },
  {
    name: 'wrong password',
    args: (context) => ['apply', '--mode', 'anonymize', '--yes', '--database-url', context.wrongPasswordUrl],
    code: ExitCode.error,
    mentions: () => ['password authentication failed', 'credentials'],
    secrets: (context) => [wrongPassword, context.serverPassword],
  },
  {
    name: 'not a Coder database',
    args: (context) => ['apply', '--mode', 'anonymize', '--yes', '--database-url', context.emptyUrl],
    code: ExitCode.error,
    mentions: (context) => [new URL(context.emptyUrl).pathname.slice(1), 'not a Coder database', 'workspace_app_stats', 'CODER_PG_CONNECTION_URL'],
    secrets: (context) => [context.serverPassword],
  },
  {
    name: 'unknown mode',
    args: (context) => ['apply', '--mode', 'anonymise', '--yes', '--database-url', context.coderUrl],
    code: ExitCode.error,
    mentions: () => ['--mode', '"anonymise"', 'anonymize, disable, off'],
    secrets: (context) => [context.serverPassword],
  },
  {
    name: 'unknown mode from environment',
    args: (context) => ['apply', '--yes', '--database-url', context.coderUrl],
    env: () => ({ INSIGHTS_PRIVACY_MODE: 'anonymise' }),
    code: ExitCode.error,
    mentions: () => ['INSIGHTS_PRIVACY_MODE', '"anonymise"', 'anonymize, disable, off'],
  },
  {
    name: 'missing mode',
    args: (context) => ['apply', '--yes', '--database-url', context.coderUrl],
    code: ExitCode.error,
    mentions: () => ['--mode anonymize'],
  },
  {
    name: 'unknown scope',
    args: (context) => ['apply', '--mode', 'anonymize', '--scope', 'everything', '--yes', '--database-url', context.coderUrl],
    code: ExitCode.error,
    mentions: () => ['--scope', '"everything"', 'source, rollup'],
  },
  {
    name: 'unknown profile',
    args: (context) => ['apply', '--mode', 'anonymize', '--profile', 'gitlab', '--yes', '--database-url', context.coderUrl],
    code: ExitCode.error,
    mentions: () => ['"gitlab"', 'coder'],
  },
  {
    name: 'unknown profile on status',
    args: (context) => ['status', '--profile', 'gitlab', '--database-url', context.coderUrl],
    code: ExitCode.error,
    mentions: () => ['"gitlab"', 'coder'],
  },
  {
    name: 'upper-case schema name',
    args: (context) => ['apply', '--mode', 'anonymize', '--schema', 'Privacy', '--yes', '--database-url', context.coderUrl],
    code: ExitCode.error,
    mentions: () => ['"Privacy"', 'lower-case'],
  },
  {
    name: 'schema public',
    args: (context) => ['apply', '--mode', 'disable', '--schema', 'public', '--yes', '--database-url', context.coderUrl],
    code: ExitCode.error,
    mentions: () => ['"public"', 'insights_privacy'],
  },
  {
    name: 'schema pg_ prefix',
    args: (context) => ['apply', '--mode', 'disable', '--schema', 'pg_privacy', '--yes', '--database-url', context.coderUrl],
    code: ExitCode.error,
    mentions: () => ['"pg_privacy"', 'pg_*'],
  },
  {
    name: 'schema name of 64 bytes',
    args: (context) => ['apply', '--mode', 'disable', '--schema', 'p'.repeat(64), '--yes', '--database-url', context.coderUrl],
    code: ExitCode.error,
    mentions: () => [`"${'p'.repeat(64)}"`, '63'],
  },
  {
    name: 'invalid lock timeout',
    args: (context) => ['apply', '--mode', 'disable', '--lock-timeout', '2s', '--yes', '--database-url', context.coderUrl],
    code: ExitCode.error,
    mentions: () => ['--lock-timeout', '"2s"', 'integer'],
  },
  {
    name: 'missing privilege',
    args: (context) => ['apply', '--mode', 'anonymize', '--yes', '--database-url', context.nonOwner.url],
    code: ExitCode.error,
    mentions: (context) => [context.nonOwner.name, 'workspace_app_stats is owned by', 'CREATE privilege', 'owns the application tables'],
    secrets: (context) => [new URL(context.nonOwner.url).password],
  },
  {
    name: 'unparseable config file',
    args: (context) => ['apply', '--yes', '--config', join(context.configDir, 'broken.json')],
    code: ExitCode.error,
    mentions: (context) => [join(context.configDir, 'broken.json'), 'valid JSON'],
    secrets: () => [brokenConfigSecret],
  },
  {
    name: 'config syntax error location',
    args: (context) => ['apply', '--yes', '--config', join(context.configDir, 'broken.json')],
    code: ExitCode.error,
    mentions: () => ['line 3'],
    secrets: () => [brokenConfigSecret],
  },
  {
    name: 'unknown config key',
    args: (context) => ['apply', '--yes', '--database-url', context.coderUrl, '--config', join(context.configDir, 'unknown-key.json')],
    code: ExitCode.error,
    mentions: (context) => [join(context.configDir, 'unknown-key.json'), 'unknown key(s) lockTimeout', 'lockTimeoutMs'],
  },
  {
    name: 'wrong config type',
    args: (context) => ['apply', '--yes', '--config', join(context.configDir, 'wrong-type.json')],
    code: ExitCode.error,
    mentions: () => ['lockRetries', '(got "three")', 'databaseUrl', 'mode'],
    secrets: () => [configFileSecret],
  },
  {
    name: 'config file not found',
    args: (context) => ['apply', '--yes', '--config', join(context.configDir, 'absent.json')],
    code: ExitCode.error,
    mentions: (context) => [join(context.configDir, 'absent.json'), 'exists'],
  },
  {
    name: 'config from INSIGHTS_PRIVACY_CONFIG',
    args: (context) => ['apply', '--yes', '--database-url', context.coderUrl],
    env: (context) => ({ INSIGHTS_PRIVACY_CONFIG: join(context.configDir, 'unknown-key.json') }),
    code: ExitCode.error,
    mentions: (context) => [join(context.configDir, 'unknown-key.json'), 'lockTimeout'],
  },
  {
    name: 'confirmation without a terminal',
    args: (context) => ['apply', '--mode', 'anonymize', '--database-url', context.coderUrl],
    code: ExitCode.aborted,
    mentions: () => ['not a terminal', '--yes', '--dry-run'],
    secrets: (context) => [context.serverPassword],
  },
];

describe('bad input', () => {
  let coder: CoderDatabase;
  let empty: TestDatabase;
  let emptyClient: pg.Client;
  let nonOwner: TestRole;
  let context: Context;
  let workDir: string;

  beforeAll(async () => {
    coder = await createCoderDatabase('bad_input', '2026');
    empty = await createTestDatabase('bad_input_empty');
    emptyClient = await empty.connect();
    nonOwner = await createLoginRole('bad_input_reader', coder.database);
    await grantOnUsageTables(coder.client, '2026', nonOwner.name, ['SELECT', 'INSERT']);

    workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-bad-input-'));
    const configDir = join(workDir, 'config');
    await mkdir(configDir);
    // The syntax error is on line 3. The password on line 2 is part of the
    // code frame that a JSON parser prints with its error.
    await writeFile(
      join(configDir, 'broken.json'),
      `{\n  "databaseUrl": "postgresql://coder:${brokenConfigSecret}@db.example.com/coder",\n  "mode": anonymize\n}\n`,
    );
    await writeFile(join(configDir, 'unknown-key.json'), JSON.stringify({ mode: 'disable', lockTimeout: 500 }));
    await writeFile(join(configDir, 'wrong-type.json'), JSON.stringify({ mode: 1, lockRetries: 'three', databaseUrl: [`postgresql://coder:${configFileSecret}@db/coder`] }));

    const wrongPasswordUrl = new URL(coder.database.url);
    const serverPassword = decodeURIComponent(wrongPasswordUrl.password);
    wrongPasswordUrl.password = wrongPassword;

    context = {
      coderUrl: coder.database.url,
      emptyUrl: empty.url,
      serverPassword,
      wrongPasswordUrl: wrongPasswordUrl.toString(),
      unreachableUrl: `postgresql://coder:${closedPortSecret}@127.0.0.1:${await closedPort()}/coder`,
      nonOwner,
      configDir,
    };
  });

  afterAll(async () => {
    await emptyClient?.end();
    await empty?.drop();
    await coder?.close();
    await nonOwner?.drop();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  test.each(cases)('$name', async (row) => {
    const coderBefore = await catalogSnapshot(coder.client);
    const emptyBefore = await catalogSnapshot(emptyClient);

    const run = await runTool(row.args(context), row.env?.(context) ?? {}, workDir);

    expect(run.code).toBe(row.code);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^error: /);
    expect(run.stderr).toMatch(/\nfix: \S/);
    for (const text of row.mentions(context)) expect(run.stderr).toContain(text);
    for (const secret of row.secrets?.(context) ?? []) {
      expect(run.stdout).not.toContain(secret);
      expect(run.stderr).not.toContain(secret);
    }

    expect(await catalogSnapshot(coder.client)).toBe(coderBefore);
    expect(await catalogSnapshot(emptyClient)).toBe(emptyBefore);
    const { rows } = await coder.client.query<{ schema: boolean; triggers: number; contype: string }>(
      `SELECT to_regnamespace('insights_privacy') IS NOT NULL AS schema,
              (SELECT count(*)::int FROM pg_catalog.pg_trigger WHERE tgname = 'zz_insights_privacy') AS triggers,
              (SELECT contype FROM pg_catalog.pg_constraint WHERE conname = 'workspace_app_stats_user_id_fkey') AS contype`,
    );
    expect(rows[0].schema).toBe(false);
    expect(rows[0].triggers).toBe(0);
    expect(rows[0].contype).toBe('f');
  });
});

describe('status without ownership', () => {
  let coder: CoderDatabase;
  let reader: TestRole;
  let workDir: string;

  beforeAll(async () => {
    coder = await createCoderDatabase('bad_input_status', '2025');
    reader = await createLoginRole('bad_input_status_reader', coder.database);
    await grantOnUsageTables(coder.client, '2025', reader.name, ['SELECT']);
    // The identifiable-row counts join users.
    await coder.client.query(`GRANT SELECT ON public.users TO "${reader.name}"`);
    workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-status-'));
  });

  afterAll(async () => {
    await coder?.close();
    await reader?.drop();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  test('reads a database without enforcement', async () => {
    const run = await runTool(['status', '--json', '--database-url', reader.url], {}, workDir);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stderr).toBe('');
    const report = JSON.parse(run.stdout) as { mode: string; ok: boolean };
    expect(report.mode).toBe('off');
    expect(report.ok).toBe(false);
  });

  test('fails clearly on the private schema', async () => {
    const applied = await runTool(['apply', '--mode', 'anonymize', '--yes', '--database-url', coder.database.url], {}, workDir);
    expect(applied.code).toBe(ExitCode.ok);

    const run = await runTool(['status', '--check', '--database-url', reader.url], {}, workDir);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('permission denied for schema insights_privacy');
    expect(run.stderr).toContain('SQLSTATE 42501');
    expect(run.stderr).toContain('fix: Run insights-privacy as the role that owns the application tables');
    expect(run.stderr).not.toContain(new URL(reader.url).password);
  });
});
