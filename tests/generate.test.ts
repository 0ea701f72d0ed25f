import { execFile, execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type pg from 'pg';
import { planEnforcement } from '../src/commands/apply.js';
import { planMigration, type GenerateResult } from '../src/commands/generate.js';
import { ExitCode } from '../src/core/errors.js';
import { inlineParameters } from '../src/core/inline-parameters.js';
import type { Enforcement, MigrationPlan, MigrationSettings } from '../src/core/migration.js';
import type { Statement } from '../src/core/sql.js';
import { splitStatements } from '../src/core/templates.js';
import { insertAgentStats, upsertAppStats, type FixtureWorkspace } from '../src/fixture/index.js';
import { enforcementSnapshot } from './support/catalog.js';
import { runCliCaptured, type CliRun } from './support/cli.js';
import { createCoderDatabase, privacySchema, pseudonymPattern, usageTables, type CoderDatabase } from './support/coder.js';
import { createTestDatabase, pgcryptoAvailable } from './support/database.js';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));
const nodePgMigrateBin = join(repositoryRoot, 'node_modules', 'node-pg-migrate', 'bin', 'node-pg-migrate.js');
const columnSet = '2026';
const tables = usageTables(columnSet).map((table) => `public.${table}`);
const foreignKeyName = 'workspace_app_stats_user_id_fkey';
const formats = ['node-pg-migrate', 'sql'] as const;
type Format = (typeof formats)[number];

let workDir: string;
let psql: string;
const databases: CoderDatabase[] = [];

/** Finds psql on the PATH; the SQL format tests need it and fail without it rather than skip. */
function findPsql(): string {
  try {
    return execFileSync('which', ['psql'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('psql was not found on the PATH: install the PostgreSQL client (Debian and Ubuntu: apt-get install postgresql-client) to run these tests');
  }
}

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-generate-'));
  psql = findPsql();
  if (!existsSync(nodePgMigrateBin)) throw new Error(`${nodePgMigrateBin} is missing: run "npm ci"`);
});

afterAll(async () => {
  for (const database of databases) await database.close();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

async function coderDatabase(prefix: string): Promise<CoderDatabase> {
  const database = await createCoderDatabase(prefix, columnSet);
  databases.push(database);
  return database;
}

async function newFolder(name: string): Promise<string> {
  const folder = join(workDir, `${name}-${randomUUID().slice(0, 8)}`);
  await mkdir(folder);
  return folder;
}

/**
 * Creates a project folder whose package.json declares a module type, and
 * its migrations folder, so that a test shows which type the generated file
 * works under.
 */
async function projectMigrationsFolder(name: string, type: 'commonjs' | 'module'): Promise<string> {
  const project = await newFolder(name);
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'coder-deployment', private: true, type }));
  const folder = join(project, 'migrations');
  await mkdir(folder);
  return folder;
}

/** Runs the command line in-process with no environment and no terminal on stdin. */
const runTool = (argv: string[]): Promise<CliRun> => runCliCaptured(argv, { cwd: workDir });

/** Runs `generate --json` and expects success. */
async function generate(url: string, mode: string, format: Format, folder: string, ...options: string[]): Promise<GenerateResult> {
  const run = await runTool(['generate', '--mode', mode, '--format', format, '--out', folder, '--json', '--database-url', url, ...options]);
  if (run.code !== ExitCode.ok) throw new Error(`generate --mode ${mode} exited with ${run.code}: ${run.stderr}`);
  return JSON.parse(run.stdout) as GenerateResult;
}

/** Runs `apply --yes` and expects success. */
async function apply(url: string, mode: string, ...options: string[]): Promise<void> {
  const run = await runTool(['apply', '--mode', mode, '--yes', '--database-url', url, ...options]);
  if (run.code !== ExitCode.ok) throw new Error(`apply --mode ${mode} exited with ${run.code}: ${run.stderr}`);
}

interface ProcessRun {
  code: number;
  output: string;
}

/** Runs a program with a minimal environment and returns its exit code and combined output. */
function runProcess(file: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<ProcessRun> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { PATH: process.env.PATH, ...env }, cwd, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      let code = 0;
      if (error) code = typeof error.code === 'number' ? error.code : -1;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

/**
 * Runs one direction of a generated migration the way its users run it:
 * node-pg-migrate's own command line, or psql in one transaction that stops
 * at the first error.
 */
async function migrate(format: Format, direction: 'up' | 'down', result: GenerateResult, url: string, ...options: string[]): Promise<ProcessRun> {
  const folder = join(result.files[0].path, '..');
  if (format === 'node-pg-migrate') {
    return runProcess(process.execPath, [nodePgMigrateBin, direction, '--migrations-dir', folder, ...options], { DATABASE_URL: url }, folder);
  }
  const file = result.files.find((candidate) => candidate.direction === direction);
  if (!file) throw new Error(`no ${direction} file in ${JSON.stringify(result.files)}`);
  return runProcess(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '-f', file.path, '-d', url, ...options], {}, folder);
}

async function expectMigrated(format: Format, direction: 'up' | 'down', result: GenerateResult, url: string, ...options: string[]): Promise<void> {
  const run = await migrate(format, direction, result, url, ...options);
  if (run.code !== 0) throw new Error(`${format} ${direction} exited with ${run.code}:\n${run.output}`);
}

/** Reads the statements of each direction from the files, or the error of a down migration that throws. */
async function fileStatements(format: Format, result: GenerateResult): Promise<{ up: string[]; down: string[] | Error }> {
  if (format === 'sql') {
    const read = async (direction: string) => splitStatements(await readFile(result.files.find((file) => file.direction === direction)?.path as string, 'utf8'));
    return { up: await read('up'), down: await read('down') };
  }
  const migration = (await import(pathToFileURL(result.files[0].path).href)) as { up(pgm: unknown): void; down(pgm: unknown): void };
  const record = (action: (pgm: unknown) => void): string[] => {
    const statements: string[] = [];
    action({ sql: (...args: unknown[]) => statements.push(...(args as string[])) });
    return statements;
  };
  const up = record(migration.up);
  try {
    return { up, down: record(migration.down) };
  } catch (error) {
    return { up, down: error as Error };
  }
}

async function fileTexts(result: GenerateResult): Promise<string[]> {
  return Promise.all(result.files.map((file) => readFile(file.path, 'utf8')));
}

function migrationSettings(mode: MigrationSettings['mode']): MigrationSettings {
  return { mode, scope: 'source', schema: privacySchema, profile: 'coder', hmac: 'auto', rotate: 'none', lockTimeoutMs: 2000 };
}

/** Plans what apply would run now for an enforcement, without the statements a migration adds around it. */
async function applyPlan(client: pg.ClientBase, enforcement: Enforcement): Promise<Statement[]> {
  const { statements } = await planEnforcement(client, {
    mode: enforcement.mode,
    scope: enforcement.scope ?? 'source',
    hmac: enforcement.hmac ?? 'auto',
    rotate: enforcement.rotate ?? 'none',
    schema: privacySchema,
    profile: 'coder',
    dryRun: true,
    lock: { lockTimeoutMs: 2000, retries: 0 },
  });
  return statements;
}

const withoutWrapping = (statements: readonly Statement[]) => statements.filter((statement) => !statement.template.startsWith('migration/'));

async function snapshot(database: CoderDatabase): Promise<Record<string, unknown>> {
  return enforcementSnapshot(database.client, privacySchema, tables);
}

async function scalar<T>(client: pg.ClientBase, sql: string, params: unknown[] = []): Promise<T> {
  const { rows } = await client.query<{ value: T }>(sql, params);
  return rows[0].value;
}

async function checkExitCode(url: string): Promise<number> {
  return (await runTool(['status', '--check', '--no-counts', '--database-url', url])).code;
}

/** Inserts one agent stats row of a workspace's owner, as Coder's agent reporter does, and returns its id. */
async function insertAgentRow(client: pg.ClientBase, workspace: FixtureWorkspace): Promise<string> {
  const id = randomUUID();
  await insertAgentStats(client, columnSet, [
    {
      id,
      createdAt: new Date(),
      userId: workspace.ownerId,
      agentId: workspace.agentId,
      workspaceId: workspace.id,
      templateId: workspace.templateId,
      connectionCount: 1,
      sessionCounts: { vscode: 1 },
    },
  ]);
  return id;
}

/** Upserts one app session of a workspace's owner, as Coder's app stats collector does. */
async function insertAppSession(client: pg.ClientBase, workspace: FixtureWorkspace): Promise<void> {
  const now = Date.now();
  await upsertAppStats(client, [
    {
      userId: workspace.ownerId,
      workspaceId: workspace.id,
      agentId: workspace.agentId,
      accessMethod: 'path',
      slugOrPort: 'code-server',
      sessionId: randomUUID(),
      sessionStartedAt: new Date(now - 10 * 60_000),
      sessionEndedAt: new Date(now),
      requests: 3,
    },
  ]);
}

async function foreignKey(client: pg.ClientBase): Promise<{ contype: string; convalidated: boolean }> {
  const { rows } = await client.query<{ contype: string; convalidated: boolean }>(
    "SELECT con.contype, con.convalidated FROM pg_catalog.pg_constraint AS con WHERE con.conrelid = 'public.workspace_app_stats'::regclass AND con.conname = $1",
    [foreignKeyName],
  );
  return rows[0];
}

describe.each(formats)('format %s', (format) => {
  test.each(['anonymize', 'disable'] as const)('%s up and down match apply', async (mode) => {
    const migrated = await coderDatabase(`gen_${mode}_m`);
    const applied = await coderDatabase(`gen_${mode}_a`);
    // The node-pg-migrate file loads in projects of either module type.
    const packageType = mode === 'anonymize' ? 'commonjs' : 'module';
    const folder = format === 'node-pg-migrate' ? await projectMigrationsFolder(`${format}-${mode}`, packageType) : await newFolder(`${format}-${mode}`);
    const plan: MigrationPlan = await planMigration(migrated.client, migrationSettings(mode));

    const result = await generate(migrated.database.url, mode, format, folder);

    expect(result.current.mode).toBe('off');
    expect(result.target.mode).toBe(mode);
    expect(result.irreversible).toBeNull();
    expect((await readdir(folder)).sort()).toEqual(result.files.map((file) => file.path.slice(folder.length + 1)).sort());
    const statements = await fileStatements(format, result);
    expect(statements.up).toEqual(plan.up.map(inlineParameters));
    expect(statements.down).toEqual(plan.down.map(inlineParameters));

    // Up, compared with apply on a twin database. node-pg-migrate runs the
    // disable migration on its own transaction (--no-single-transaction).
    const upOptions = format === 'node-pg-migrate' && mode === 'disable' ? ['--no-single-transaction'] : [];
    await expectMigrated(format, 'up', result, migrated.database.url, ...upOptions);
    await apply(applied.database.url, mode);
    expect(await snapshot(migrated)).toEqual(await snapshot(applied));
    expect(await checkExitCode(migrated.database.url)).toBe(ExitCode.ok);

    // The down migration is what apply would run on the database as the up migration left it.
    expect(withoutWrapping(plan.down)).toEqual(await applyPlan(migrated.client, plan.current));

    const workspace = migrated.population.workspaces[0];
    const rowId = await insertAgentRow(migrated.client, workspace);
    await insertAgentRow(applied.client, applied.population.workspaces[0]);
    const { rows } = await migrated.client.query<{ user_id: string }>('SELECT user_id FROM workspace_agent_stats WHERE id = $1', [rowId]);
    if (mode === 'anonymize') {
      expect(rows).toHaveLength(1);
      expect(rows[0].user_id).toMatch(pseudonymPattern);
      expect(rows[0].user_id).not.toBe(workspace.ownerId);
    } else {
      expect(rows).toHaveLength(0);
    }

    if (mode === 'anonymize') {
      const texts = (await fileTexts(result)).join('\n');
      const secrets = await migrated.client.query<{ key: Buffer; inner: Buffer; outer: Buffer }>(
        `SELECT key, inner_key_pad AS inner, outer_key_pad AS outer FROM ${privacySchema}.keys`,
      );
      expect(secrets.rows).toHaveLength(1);
      for (const value of Object.values(secrets.rows[0])) {
        for (const encoding of ['hex', 'base64'] as const) {
          expect(texts.toLowerCase()).not.toContain(value.toString(encoding).toLowerCase());
        }
      }
      expect(texts).not.toMatch(/\$\d/);
    }

    // Down, compared with apply --mode off: schema gone, foreign key back and validated.
    await expectMigrated(format, 'down', result, migrated.database.url);
    await apply(applied.database.url, 'off');
    expect(await snapshot(migrated)).toEqual(await snapshot(applied));
    expect(await scalar<boolean>(migrated.client, 'SELECT to_regnamespace($1) IS NULL AS value', [privacySchema])).toBe(true);
    expect(await foreignKey(migrated.client)).toEqual({ contype: 'f', convalidated: true });
  });

  test('anonymize to disable and back', async () => {
    const migrated = await coderDatabase('gen_switch_m');
    const applied = await coderDatabase('gen_switch_a');
    const folder = await newFolder(`${format}-switch`);
    for (const database of [migrated, applied]) {
      await apply(database.database.url, 'anonymize');
      await insertAppSession(database.client, database.population.workspaces[0]);
    }
    const fingerprints = `SELECT json_agg(fingerprint ORDER BY id)::text AS value FROM ${privacySchema}.keys`;
    const keysBefore = await scalar<string>(migrated.client, fingerprints);
    const plan = await planMigration(migrated.client, migrationSettings('disable'));

    const result = await generate(migrated.database.url, 'disable', format, folder);

    expect(result.current).toEqual({ mode: 'anonymize', scope: 'source', rotate: 'none', hmac: plan.current.hmac });
    expect(result.irreversible).toBeNull();
    await expectMigrated(format, 'up', result, migrated.database.url);
    await apply(applied.database.url, 'disable');
    expect(await snapshot(migrated)).toEqual(await snapshot(applied));
    // The pseudonymized app session refers to no user, so the restored key stays NOT VALID, as apply leaves it.
    expect(await foreignKey(migrated.client)).toEqual({ contype: 'f', convalidated: false });
    expect(await checkExitCode(migrated.database.url)).toBe(ExitCode.ok);
    expect(withoutWrapping(plan.down)).toEqual(await applyPlan(migrated.client, plan.current));

    await expectMigrated(format, 'down', result, migrated.database.url);
    await apply(applied.database.url, 'anonymize');
    expect(await snapshot(migrated)).toEqual(await snapshot(applied));
    expect(await scalar<string>(migrated.client, fingerprints)).toBe(keysBefore);
    expect(await checkExitCode(migrated.database.url)).toBe(ExitCode.ok);
  });

  test('off over anonymize is irreversible', async () => {
    const migrated = await coderDatabase('gen_off');
    const folder = await newFolder(`${format}-off`);
    await apply(migrated.database.url, 'anonymize');

    const humanFolder = await newFolder(`${format}-off-human`);
    const human = await runTool(['generate', '--mode', 'off', '--format', format, '--out', humanFolder, '--database-url', migrated.database.url]);

    expect(human.code).toBe(ExitCode.ok);
    expect(human.stdout).toContain(`Wrote a ${format} migration for ${migrated.database.name} (Coder (2026 column set)): anonymize (scope source) -> off, in schema insights_privacy.`);
    const written = await readdir(humanFolder);
    expect(written).toHaveLength(format === 'sql' ? 2 : 1);
    for (const name of written) expect(human.stdout).toContain(join(humanFolder, name));
    expect(human.stdout).toContain('The down migration is irreversible and fails without changing anything: the up migration drops schema insights_privacy');
    const result = await generate(migrated.database.url, 'off', format, folder);
    expect(result.irreversible).toMatch(/^the up migration drops schema insights_privacy with the pseudonym key\(s\)/);
    for (const text of await fileTexts(result)) expect(text).toContain('Down: IRREVERSIBLE, it fails without changing anything');

    await expectMigrated(format, 'up', result, migrated.database.url);
    expect(await scalar<boolean>(migrated.client, 'SELECT to_regnamespace($1) IS NULL AS value', [privacySchema])).toBe(true);
    const before = await snapshot(migrated);

    const down = await migrate(format, 'down', result, migrated.database.url);

    expect(down.code).not.toBe(0);
    expect(down.output).toContain('insights-privacy: this migration cannot be undone: the up migration drops schema insights_privacy');
    expect(await snapshot(migrated)).toEqual(before);
  });
});

describe('down migration after other switches', () => {
  interface Switch {
    name: string;
    /** Arguments of the apply that sets up the recorded enforcement. */
    initial: string[];
    target: Partial<MigrationSettings> & Pick<MigrationSettings, 'mode'>;
    /** Arguments of generate that request `target`. */
    args: string[];
    needsPgcrypto?: boolean;
  }

  const switches: Switch[] = [
    { name: 'pgcrypto to core', initial: ['anonymize', '--hmac', 'pgcrypto'], target: { mode: 'anonymize', hmac: 'core' }, args: ['--hmac', 'core'], needsPgcrypto: true },
    { name: 'core to pgcrypto', initial: ['anonymize', '--hmac', 'core'], target: { mode: 'anonymize', hmac: 'pgcrypto' }, args: ['--hmac', 'pgcrypto'], needsPgcrypto: true },
    { name: 'scope source to rollup', initial: ['anonymize'], target: { mode: 'anonymize', scope: 'rollup' }, args: ['--scope', 'rollup'] },
    { name: 'rotation none to monthly', initial: ['anonymize'], target: { mode: 'anonymize', rotate: 'monthly' }, args: ['--rotate', 'monthly'] },
    { name: 'disable to anonymize', initial: ['disable'], target: { mode: 'anonymize' }, args: [] },
    { name: 'disable to off', initial: ['disable'], target: { mode: 'off' }, args: [] },
  ];

  test.each(switches)('$name', async ({ initial, target, args, needsPgcrypto }) => {
    if (needsPgcrypto && !pgcryptoAvailable()) return;
    const migrated = await coderDatabase('gen_switches_m');
    const applied = await coderDatabase('gen_switches_a');
    const folder = await newFolder('switches');
    for (const database of [migrated, applied]) await apply(database.database.url, initial[0], ...initial.slice(1));
    const plan = await planMigration(migrated.client, { ...migrationSettings(target.mode), ...target });

    const result = await generate(migrated.database.url, target.mode, 'sql', folder, ...args);
    await expectMigrated('sql', 'up', result, migrated.database.url);
    await apply(applied.database.url, target.mode, ...args);

    expect(result.irreversible).toBeNull();
    expect(await fileStatements('sql', result)).toEqual({ up: plan.up.map(inlineParameters), down: plan.down.map(inlineParameters) });
    expect(await snapshot(migrated)).toEqual(await snapshot(applied));
    expect(withoutWrapping(plan.down)).toEqual(await applyPlan(migrated.client, plan.current));

    await expectMigrated('sql', 'down', result, migrated.database.url);
    await apply(applied.database.url, initial[0], ...initial.slice(1));
    expect(await snapshot(migrated)).toEqual(await snapshot(applied));
    expect(await checkExitCode(migrated.database.url)).toBe(ExitCode.ok);
  });
});

describe('accepted triggers', () => {
  test('migration records --allow-trigger', async () => {
    const coder = await coderDatabase('gen_allow');
    await coder.client.query(`CREATE FUNCTION touch_app() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`);
    await coder.client.query('CREATE TRIGGER touch_app BEFORE INSERT ON workspace_app_stats FOR EACH ROW EXECUTE FUNCTION touch_app()');
    const folder = await newFolder('allow');
    const accepted = await generate(coder.database.url, 'anonymize', 'sql', folder, '--allow-trigger', 'workspace_app_stats.touch_app');

    await expectMigrated('sql', 'up', accepted, coder.database.url);
    const afterUp = await checkExitCode(coder.database.url);
    await coder.client.query(`CREATE OR REPLACE FUNCTION touch_app() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.requests := 0; RETURN NEW; END $$`);
    const afterChange = await checkExitCode(coder.database.url);

    expect(afterUp).toBe(ExitCode.ok);
    expect(afterChange).toBe(ExitCode.checkFailed);
  });
});

describe('safety checks in the migration', () => {
  test('other enforcement than planned', async () => {
    const coder = await coderDatabase('gen_guard');
    const folder = await newFolder('guard');
    const result = await generate(coder.database.url, 'anonymize', 'sql', folder);
    await apply(coder.database.url, 'disable');
    const before = await snapshot(coder);

    const run = await migrate('sql', 'up', result, coder.database.url);

    expect(run.code).toBe(3);
    expect(run.output).toContain('insights-privacy: this migration was generated for a database with enforcement off, but this database has disable');
    expect(await snapshot(coder)).toEqual(before);
  });

  test('statements outside a transaction', async () => {
    const coder = await coderDatabase('gen_autocommit');
    const folder = await newFolder('autocommit');
    const result = await generate(coder.database.url, 'disable', 'sql', folder);
    const before = await snapshot(coder);
    const up = result.files.find((file) => file.direction === 'up')?.path as string;

    const run = await runProcess(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', up, '-d', coder.database.url], {}, folder);

    expect(run.code).toBe(3);
    expect(run.output).toContain('insights-privacy: this migration must run in one transaction');
    expect(await snapshot(coder)).toEqual(before);
  });

  test('lock timeout and advisory lock', async () => {
    const coder = await coderDatabase('gen_lock');
    const folder = await newFolder('lock');
    const result = await generate(coder.database.url, 'disable', 'sql', folder, '--lock-timeout', '300');
    const [text] = await fileTexts(result);
    expect(text).toContain("SET LOCAL lock_timeout = '300ms';");
    expect(text).toContain('SELECT pg_advisory_xact_lock(1768977014, 1);');
    expect(text).not.toMatch(/^\s*(BEGIN|START TRANSACTION|COMMIT)\s*;/im);

    // Another insights-privacy run holds the advisory lock: the migration fails after lock_timeout and changes nothing.
    const holder = await coder.database.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT pg_advisory_xact_lock(1768977014, 1)');
      const run = await migrate('sql', 'up', result, coder.database.url);
      expect(run.code).toBe(3);
      expect(run.output).toContain('canceling statement due to lock timeout');
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
    expect(await scalar<boolean>(coder.client, 'SELECT to_regnamespace($1) IS NULL AS value', [privacySchema])).toBe(true);
  });
});

describe('files', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await coderDatabase('gen_files');
  });

  test('headers', async () => {
    const folder = await newFolder('headers');
    const result = await generate(coder.database.url, 'anonymize', 'sql', folder, '--migration-version', '20260501120000', '--hmac', 'core');
    expect(result.files.map((file) => file.path.slice(folder.length + 1))).toEqual([
      'V20260501120000__insights_privacy_anonymize.sql',
      'U20260501120000__insights_privacy_anonymize.sql',
    ]);
    const [up, down] = await fileTexts(result);
    for (const text of [up, down]) {
      const header = text.slice(0, text.indexOf('\n\n'));
      expect(header.split('\n').every((line) => line.startsWith('--'))).toBe(true);
      expect(header).toMatch(/^-- (Undo migration|Migration) generated by insights-privacy \d+\.\d+\.\d+\S* at \d{4}-\d\d-\d\dT/);
      expect(header).toContain('Command: insights-privacy generate --mode anonymize --scope source --hmac core --rotate none --schema insights_privacy --profile coder --lock-timeout 2000 --format sql');
      expect(header).toContain(`Database: "${coder.database.name}", detected as Coder (2026 column set) by profile coder; enforcement recorded at generation: off.`);
      expect(header).toContain('This file contains no secret');
      expect(header).toContain('psql -v ON_ERROR_STOP=1 --single-transaction -f FILE');
      expect(header).toContain('insights-privacy backfill --existing pseudonymize');
      expect(header).toContain('status --check');
      expect(text).not.toContain(coder.database.url);
    }
    expect(up).toContain('Up: installs anonymize (scope source, HMAC-SHA256 from core sha256(), key rotation none)');
    expect(down).toContain('Down: returns to off with the statements');
    expect(up).not.toContain('${');
  });

  test('node-pg-migrate file name and header', async () => {
    const folder = await newFolder('npm-name');
    const started = Date.now();
    const result = await generate(coder.database.url, 'disable', 'node-pg-migrate', folder);
    const [name] = (await readdir(folder)).filter((file) => !file.startsWith('.'));
    const match = /^(\d{13})_insights-privacy-disable\.mjs$/.exec(name);
    expect(match).not.toBeNull();
    expect(Number(match?.[1])).toBeGreaterThanOrEqual(started);
    const [text] = await fileTexts(result);
    expect(text.split('\n')[0]).toMatch(/^\/\/ Migration generated by insights-privacy /);
    expect(text).toContain('--no-single-transaction');
    expect(text).toContain('export const up = (pgm) =>');
    expect(text).toContain('export const down = (pgm) =>');
  });

  test('backfill setting is not part of the migration', async () => {
    const folder = await newFolder('existing');
    const run = await runCliCaptured(['generate', '--mode', 'disable', '--format', 'sql', '--out', folder, '--database-url', coder.database.url], {
      cwd: workDir,
      env: { INSIGHTS_PRIVACY_EXISTING: 'purge' },
    });
    expect(run.code).toBe(ExitCode.ok);
    expect(run.stderr).toContain('the migration does not run the backfill of existing rows (existing = purge); run "insights-privacy backfill --existing purge" after it.');
    expect(await readdir(folder)).toHaveLength(2);
  });

  test('--force replaces the files', async () => {
    const folder = await newFolder('force');
    await generate(coder.database.url, 'disable', 'sql', folder, '--migration-version', '7');
    const up = join(folder, 'V7__insights_privacy_disable.sql');
    await writeFile(up, 'edited');

    const again = await runTool(['generate', '--mode', 'disable', '--format', 'sql', '--out', folder, '--migration-version', '7', '--database-url', coder.database.url]);
    expect(again.code).toBe(ExitCode.error);
    expect(again.stderr).toContain(`Migration file(s) ${up}, ${join(folder, 'U7__insights_privacy_disable.sql')} exist`);
    expect(await readFile(up, 'utf8')).toBe('edited');

    await generate(coder.database.url, 'disable', 'sql', folder, '--migration-version', '7', '--force');
    expect(await readFile(up, 'utf8')).toMatch(/^-- Migration generated by insights-privacy/);
    expect((await readdir(folder)).sort()).toEqual(['U7__insights_privacy_disable.sql', 'V7__insights_privacy_disable.sql']);
  });
});

describe('bad input', () => {
  let coder: CoderDatabase;
  let emptyUrl: string;
  let dropEmpty: () => Promise<void>;

  beforeAll(async () => {
    coder = await coderDatabase('gen_bad');
    const empty = await createTestDatabase('gen_empty');
    emptyUrl = empty.url;
    dropEmpty = () => empty.drop();
  });

  afterAll(async () => {
    await dropEmpty?.();
  });

  interface BadCase {
    name: string;
    args: (folder: string) => string[];
    message: string;
    fix: string;
    /** Files in the folder before the run, which must stay as they are. */
    existing?: string[];
    database?: 'coder' | 'empty';
  }

  const cases: BadCase[] = [
    { name: 'unknown format', args: (folder) => ['--mode', 'anonymize', '--format', 'flyway', '--out', folder], message: 'Unknown --format "flyway".', fix: 'Pass --format node-pg-migrate or --format sql.' },
    { name: 'missing format', args: (folder) => ['--mode', 'anonymize', '--out', folder], message: 'No --format given.', fix: 'Pass --format node-pg-migrate or --format sql.' },
    { name: 'missing out', args: () => ['--mode', 'anonymize', '--format', 'sql'], message: 'No --out given.', fix: 'Pass --out DIR' },
    {
      name: 'out is a file',
      args: (folder) => ['--mode', 'anonymize', '--format', 'sql', '--out', join(folder, 'notes.txt')],
      message: 'notes.txt (--out) is a file, not a folder.',
      fix: 'Pass the folder to write the migration files into.',
      existing: ['notes.txt'],
    },
    {
      name: 'missing folder',
      args: (folder) => ['--mode', 'anonymize', '--format', 'sql', '--out', join(folder, 'migrations')],
      message: 'migrations (--out) does not exist.',
      fix: 'Create it first (mkdir -p ',
    },
    {
      name: 'invalid version for sql',
      args: (folder) => ['--mode', 'anonymize', '--format', 'sql', '--out', folder, '--migration-version', 'v1'],
      message: 'Invalid --migration-version "v1" for format sql.',
      fix: 'Pass digits, optionally separated by dots or underscores',
    },
    {
      name: 'invalid version for node-pg-migrate',
      args: (folder) => ['--mode', 'anonymize', '--format', 'node-pg-migrate', '--out', folder, '--migration-version', '1.2'],
      message: 'Invalid --migration-version "1.2" for format node-pg-migrate.',
      fix: 'Pass digits only',
    },
    {
      name: 'file exists',
      args: (folder) => ['--mode', 'anonymize', '--format', 'sql', '--out', folder, '--migration-version', '3'],
      message: 'V3__insights_privacy_anonymize.sql exist; generate does not overwrite them.',
      fix: 'Pass another --migration-version, or --force',
      existing: ['V3__insights_privacy_anonymize.sql'],
    },
    { name: 'missing mode', args: (folder) => ['--format', 'sql', '--out', folder], message: 'No mode given.', fix: 'Pass --mode anonymize, --mode disable or --mode off' },
    {
      name: 'invalid mode',
      args: (folder) => ['--mode', 'anonymise', '--format', 'sql', '--out', folder],
      message: '--mode must be one of anonymize, disable, off, got "anonymise"',
      fix: 'Correct the values named above',
    },
    {
      name: 'not a Coder database',
      args: (folder) => ['--mode', 'anonymize', '--format', 'sql', '--out', folder],
      message: 'is not a Coder database: table(s) users, workspace_agent_stats, workspace_app_stats not found',
      fix: 'Point --database-url at the database that coder server uses',
      database: 'empty',
    },
    {
      name: 'nothing to change',
      args: (folder) => ['--mode', 'off', '--format', 'sql', '--out', folder],
      message: 'already has enforcement off as requested, so a migration would change nothing.',
      fix: 'Generate the migration against a database in the state the migration will run on',
    },
  ];

  test.each(cases)('$name', async ({ args, message, fix, existing = [], database = 'coder' }) => {
    const folder = await newFolder('bad');
    for (const name of existing) await writeFile(join(folder, name), 'kept');
    const url = database === 'coder' ? coder.database.url : emptyUrl;
    const before = await snapshot(coder);

    const run = await runTool(['generate', ...args(folder), '--database-url', url]);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain(message);
    expect(run.stderr).toContain(`fix: ${fix}`);
    expect((await readdir(folder)).sort()).toEqual([...existing].sort());
    for (const name of existing) expect(await readFile(join(folder, name), 'utf8')).toBe('kept');
    expect(await snapshot(coder)).toEqual(before);
  });

  test('help lists the options and examples', async () => {
    const run = await runTool(['generate', '--help']);
    expect(run.code).toBe(ExitCode.ok);
    for (const text of ['--format <format>', '--out <dir>', '--migration-version <version>', '--force', '--lock-timeout <ms>', '--mode <mode>', '--scope <scope>', '--hmac', '--rotate', 'Examples:', 'docs/migrations.md']) {
      expect(run.stdout).toContain(text);
    }
  });
});
