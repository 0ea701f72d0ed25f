import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import type { ApplyResult } from '../src/commands/apply.js';
import type { StatusReport } from '../src/commands/status.js';
import { ExitCode } from '../src/core/errors.js';
import { columnSets, insertAgentStats, upsertAppStats, type AgentStatRow, type AppStatSession, type ColumnSet, type FixtureWorkspace } from '../src/fixture/index.js';
import { createCoderDatabase, createLoginRole, grantOnUsageTables, pseudonymPattern, usageTables, type CoderDatabase, type TestRole } from './support/coder.js';
import { runCliCaptured, type CliRun, closedPort } from './support/cli.js';
import { pgcryptoAvailable } from './support/database.js';

const foreignKeyName = 'workspace_app_stats_user_id_fkey';
const triggerName = 'zz_insights_privacy';
const minuteMs = 60_000;
const hourMs = 60 * minuteMs;


let workDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-lifecycle-'));
});

afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/** Runs the command line in-process with no environment and no terminal on stdin. */
const runTool = (argv: string[]): Promise<CliRun> => runCliCaptured(argv, { cwd: workDir });

/** Runs `apply --yes --json` with the given mode and options, and expects success. */
async function apply(url: string, mode: string, ...options: string[]): Promise<ApplyResult> {
  const run = await runTool(['apply', '--mode', mode, '--yes', '--json', '--database-url', url, ...options]);
  if (run.code !== ExitCode.ok) throw new Error(`apply --mode ${mode} exited with ${run.code}: ${run.stderr}`);
  return JSON.parse(run.stdout) as ApplyResult;
}

/** Runs `status --json` and returns the report and the exit code. */
async function status(url: string, ...options: string[]): Promise<{ code: number; report: StatusReport }> {
  const run = await runTool(['status', '--json', '--database-url', url, ...options]);
  if (run.code === ExitCode.error) throw new Error(`status exited with ${run.code}: ${run.stderr}`);
  return { code: run.code, report: JSON.parse(run.stdout) as StatusReport };
}


function agentRow(workspace: FixtureWorkspace, createdAt: Date): AgentStatRow {
  return {
    id: randomUUID(),
    createdAt,
    userId: workspace.ownerId,
    agentId: workspace.agentId,
    workspaceId: workspace.id,
    templateId: workspace.templateId,
    connectionCount: 1,
    sessionCounts: { vscode: 1 },
  };
}

function appSession(workspace: FixtureWorkspace, endedAt: Date): AppStatSession {
  return {
    userId: workspace.ownerId,
    workspaceId: workspace.id,
    agentId: workspace.agentId,
    accessMethod: 'path',
    slugOrPort: 'code-server',
    sessionId: randomUUID(),
    sessionStartedAt: new Date(endedAt.getTime() - 10 * minuteMs),
    sessionEndedAt: endedAt,
    requests: 3,
  };
}

/** Inserts one rollup row of a workspace's owner, with one child row in the 2026 column set. */
async function insertUsageRow(client: pg.ClientBase, columnSet: ColumnSet, workspace: FixtureWorkspace, startTime: Date): Promise<void> {
  const values = [startTime, new Date(startTime.getTime() + 30 * minuteMs), workspace.templateId, workspace.ownerId];
  if (columnSet === '2025') {
    await client.query(
      `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, ssh_mins, sftp_mins, reconnecting_pty_mins, vscode_mins, jetbrains_mins)
       VALUES ($1, $2, $3, $4, 5, 0, 0, 0, 5, 0)`,
      values,
    );
    return;
  }
  await client.query('INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins) VALUES ($1, $2, $3, $4, 5)', values);
  await client.query("INSERT INTO template_usage_stats_session_apps (start_time, template_id, user_id, app_name, usage_mins) VALUES ($1, $2, $3, 'vscode', 5)", [
    startTime,
    workspace.templateId,
    workspace.ownerId,
  ]);
}

/** Returns the start of the half-hour bucket that contains `time`, as Coder's rollup buckets start. */
function bucketStart(time: number): Date {
  return new Date(Math.floor(time / (30 * minuteMs)) * 30 * minuteMs);
}

async function scalar<T>(client: pg.ClientBase, sql: string, params: unknown[] = []): Promise<T> {
  const { rows } = await client.query<{ value: T }>(sql, params);
  return rows[0].value;
}

/** Reads the constraint named like the foreign key: its type, validation, definition and comment. */
async function foreignKeyConstraint(client: pg.ClientBase): Promise<{ contype: string; convalidated: boolean; definition: string; comment: string | null }[]> {
  const { rows } = await client.query<{ contype: string; convalidated: boolean; definition: string; comment: string | null }>(
    `SELECT con.contype, con.convalidated, pg_catalog.pg_get_constraintdef(con.oid) AS definition, pg_catalog.obj_description(con.oid, 'pg_constraint') AS comment
     FROM pg_catalog.pg_constraint AS con
     WHERE con.conrelid = 'public.workspace_app_stats'::regclass AND con.conname = $1`,
    [foreignKeyName],
  );
  return rows;
}

/** Lists the tables that have the tool's trigger, in name order. */
async function triggeredTables(client: pg.ClientBase): Promise<string[]> {
  const { rows } = await client.query<{ table: string }>(
    'SELECT c.relname AS table FROM pg_catalog.pg_trigger AS t JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid WHERE t.tgname = $1 ORDER BY c.relname',
    [triggerName],
  );
  return rows.map((row) => row.table);
}

/** Reads the definition of the tool's trigger on one table. */
async function triggerDefinition(client: pg.ClientBase, table: string): Promise<string> {
  return scalar<string>(client, 'SELECT pg_catalog.pg_get_triggerdef(t.oid) AS value FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = $1::regclass AND t.tgname = $2', [
    `public.${table}`,
    triggerName,
  ]);
}

// The tool's installation as the catalog stores it, including the oid and
// xmin of every row, so that a statement that rewrote an object with the same
// content still changes the snapshot.
const installationSnapshotSql = `
SELECT json_build_object(
  'functions', (SELECT json_agg(json_build_array(p.oid, p.xmin::text, p.proname, p.prosrc, p.proconfig, p.prosecdef, p.proacl::text) ORDER BY p.proname, p.oid)
                FROM pg_catalog.pg_proc AS p WHERE p.pronamespace = 'insights_privacy'::regnamespace),
  'triggers', (SELECT json_agg(json_build_array(t.oid, t.xmin::text, t.tgrelid::regclass::text, t.tgenabled, t.tgtype, t.tgfoid::regprocedure::text, t.tgattr::text, pg_catalog.pg_get_triggerdef(t.oid))
                               ORDER BY t.tgrelid::regclass::text)
               FROM pg_catalog.pg_trigger AS t WHERE t.tgname = 'zz_insights_privacy'),
  'constraint', (SELECT json_agg(json_build_array(con.oid, con.xmin::text, con.contype, con.convalidated, pg_catalog.pg_get_constraintdef(con.oid), pg_catalog.obj_description(con.oid, 'pg_constraint')))
                 FROM pg_catalog.pg_constraint AS con WHERE con.conname = 'workspace_app_stats_user_id_fkey'),
  'state', (SELECT json_agg(json_build_array(s.xmin::text, s.mode, s.scope, s.options, s.tool_version, s.applied_at, s.applied_by)) FROM insights_privacy.state AS s),
  'keys', (SELECT json_agg(json_build_array(k.id, k.xmin::text, k.fingerprint, k.created_at) ORDER BY k.id) FROM insights_privacy.keys AS k)
)::text AS value`;

// Everything in the database apart from the tool's own schema, for checks
// that a command changed nothing: schemas, extensions, triggers, constraints
// of public tables and functions outside the system schemas.
const databaseSnapshotSql = `
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
)::text AS value`;

/** Reads every row of the usage tables, as sorted JSON text. */
async function usageRows(client: pg.ClientBase, columnSet: ColumnSet): Promise<string> {
  const parts: string[] = [];
  for (const table of usageTables(columnSet)) {
    const rows = await scalar<string>(client, `SELECT coalesce(json_agg(t ORDER BY t::text), '[]')::text AS value FROM public.${table} AS t`);
    parts.push(`${table}: ${rows}`);
  }
  return parts.join('\n');
}

describe.each(columnSets)('column set %s', (columnSet) => {
  describe('idempotence', () => {
    let coder: CoderDatabase;

    beforeAll(async () => {
      coder = await createCoderDatabase(`lifecycle_idem_${columnSet}`, columnSet);
    });

    afterAll(async () => {
      await coder?.close();
    });

    test('dry run changes nothing', async () => {
      const before = await scalar<string>(coder.client, databaseSnapshotSql);

      const run = await runTool(['apply', '--mode', 'anonymize', '--dry-run', '--database-url', coder.database.url]);

      expect(run.code).toBe(ExitCode.ok);
      expect(run.stdout).toContain('Dry run on');
      expect(run.stdout).toMatch(/\nBEGIN;\n/);
      expect(run.stdout).toMatch(/\nCOMMIT;\n$/);
      expect(run.stdout.indexOf('BEGIN;')).toBeLessThan(run.stdout.indexOf('CREATE TRIGGER'));
      expect(run.stdout.indexOf('CREATE TRIGGER')).toBeLessThan(run.stdout.indexOf('COMMIT;'));
      for (const table of usageTables(columnSet)) expect(run.stdout).toContain(`ON "public"."${table}"`);
      expect(run.stdout).toContain(`ALTER TABLE "public"."workspace_app_stats" DROP CONSTRAINT "${foreignKeyName}"`);
      expect(await scalar<string>(coder.client, databaseSnapshotSql)).toBe(before);
      expect(await scalar<boolean>(coder.client, "SELECT to_regnamespace('insights_privacy') IS NULL AS value")).toBe(true);
    });

    test('dry run as JSON', async () => {
      const run = await runTool(['apply', '--mode', 'anonymize', '--dry-run', '--json', '--database-url', coder.database.url]);
      const result = JSON.parse(run.stdout) as ApplyResult;

      expect(run.code).toBe(ExitCode.ok);
      expect(result.outcome).toBe('dry-run');
      expect(result.statements.some((statement) => statement.sql.startsWith('CREATE TRIGGER'))).toBe(true);
      expect(await scalar<boolean>(coder.client, "SELECT to_regnamespace('insights_privacy') IS NULL AS value")).toBe(true);
    });

    test('second apply changes nothing', async () => {
      const first = await apply(coder.database.url, 'anonymize');
      const installed = await scalar<string>(coder.client, installationSnapshotSql);

      const second = await apply(coder.database.url, 'anonymize');
      const text = await runTool(['apply', '--mode', 'anonymize', '--yes', '--database-url', coder.database.url]);

      expect(first.outcome).toBe('applied');
      expect(second.outcome).toBe('unchanged');
      expect(text.code).toBe(ExitCode.ok);
      expect(text.stdout).toContain('nothing changed');
      expect(await scalar<string>(coder.client, installationSnapshotSql)).toBe(installed);
    });

    test('scope source is the default', async () => {
      const installed = await scalar<string>(coder.client, installationSnapshotSql);

      const again = await apply(coder.database.url, 'anonymize', '--scope', 'source');

      expect(again.outcome).toBe('unchanged');
      expect(await scalar<string>(coder.client, installationSnapshotSql)).toBe(installed);
    });

    test('dry run on an installation changes nothing', async () => {
      const installed = await scalar<string>(coder.client, installationSnapshotSql);

      const run = await runTool(['apply', '--mode', 'disable', '--dry-run', '--database-url', coder.database.url]);

      expect(run.code).toBe(ExitCode.ok);
      expect(run.stdout).toContain('RETURN NULL');
      expect(await scalar<string>(coder.client, installationSnapshotSql)).toBe(installed);
    });

    test('second off changes nothing', async () => {
      const first = await apply(coder.database.url, 'off');
      const before = await scalar<string>(coder.client, databaseSnapshotSql);

      const second = await apply(coder.database.url, 'off');

      expect(first.outcome).toBe('applied');
      expect(second.outcome).toBe('unchanged');
      expect(await scalar<string>(coder.client, databaseSnapshotSql)).toBe(before);
    });
  });

  describe('disable idempotence', () => {
    let coder: CoderDatabase;

    beforeAll(async () => {
      coder = await createCoderDatabase(`lifecycle_disable_${columnSet}`, columnSet);
    });

    afterAll(async () => {
      await coder?.close();
    });

    test('second disable changes nothing', async () => {
      const first = await apply(coder.database.url, 'disable');
      const installed = await scalar<string>(coder.client, installationSnapshotSql);

      const second = await apply(coder.database.url, 'disable');

      expect(first.outcome).toBe('applied');
      expect(second.outcome).toBe('unchanged');
      expect(await scalar<string>(coder.client, installationSnapshotSql)).toBe(installed);
      expect(await triggeredTables(coder.client)).toEqual([...usageTables(columnSet)].sort());
      expect((await foreignKeyConstraint(coder.client))[0].contype).toBe('f');
    });
  });

  describe('mode switch', () => {
    let coder: CoderDatabase;

    beforeAll(async () => {
      coder = await createCoderDatabase(`lifecycle_switch_${columnSet}`, columnSet);
    });

    afterAll(async () => {
      await coder?.close();
    });

    test('anonymize, disable, anonymize', async () => {
      const [workspace] = coder.population.workspaces;
      const client = coder.client;
      const agentCount = () => scalar<number>(client, 'SELECT count(*)::int AS value FROM workspace_agent_stats');

      await apply(coder.database.url, 'anonymize');
      await insertAgentStats(client, columnSet, [agentRow(workspace, new Date())]);
      await upsertAppStats(client, [appSession(workspace, new Date())]);
      const before = await scalar<string>(client, 'SELECT user_id::text AS value FROM workspace_agent_stats');
      const fingerprint = (await status(coder.database.url)).report.keys[0].fingerprint;

      const disabled = await apply(coder.database.url, 'disable');
      await insertAgentStats(client, columnSet, [agentRow(workspace, new Date())]);
      await upsertAppStats(client, [appSession(workspace, new Date())]);
      const disabledStatus = await status(coder.database.url, '--check', '--no-counts');

      expect(disabled.outcome).toBe('applied');
      expect(await triggerDefinition(client, 'workspace_agent_stats')).toContain('BEFORE INSERT ON public.workspace_agent_stats');
      expect(disabledStatus.code).toBe(ExitCode.ok);
      expect(disabledStatus.report.mode).toBe('disable');
      expect(disabledStatus.report.tables.map((table) => table.functionMatches)).toEqual(usageTables(columnSet).map(() => true));
      expect(await agentCount()).toBe(1);
      expect(await scalar<number>(client, 'SELECT count(*)::int AS value FROM workspace_app_stats')).toBe(1);
      expect(await triggeredTables(client)).toEqual([...usageTables(columnSet)].sort());
      expect((await foreignKeyConstraint(client))[0].contype).toBe('f');

      const again = await apply(coder.database.url, 'anonymize');
      await client.query('DELETE FROM workspace_agent_stats');
      await insertAgentStats(client, columnSet, [agentRow(workspace, new Date())]);
      const after = await scalar<string>(client, 'SELECT user_id::text AS value FROM workspace_agent_stats');

      expect(again.outcome).toBe('applied');
      expect(await triggerDefinition(client, 'workspace_agent_stats')).toContain('BEFORE INSERT OR UPDATE OF user_id ON public.workspace_agent_stats');
      expect(before).toMatch(pseudonymPattern);
      expect(after).toBe(before);
      expect((await status(coder.database.url)).report.keys.map((key) => key.fingerprint)).toEqual([fingerprint]);
      expect((await foreignKeyConstraint(client))[0].contype).toBe('c');
    });
  });

  describe('scope rollup', () => {
    let coder: CoderDatabase;

    beforeEach(async () => {
      coder = await createCoderDatabase(`lifecycle_scope_${columnSet}`, columnSet);
    });

    afterEach(async () => {
      await coder?.close();
    });

    test('rejected with raw pseudonyms in window', async () => {
      const [workspace] = coder.population.workspaces;
      await apply(coder.database.url, 'anonymize');
      await insertAgentStats(coder.client, columnSet, [agentRow(workspace, new Date())]);
      const installed = await scalar<string>(coder.client, installationSnapshotSql);

      const run = await runTool(['apply', '--mode', 'anonymize', '--scope', 'rollup', '--yes', '--database-url', coder.database.url]);

      expect(run.code).toBe(ExitCode.error);
      expect(run.stdout).toBe('');
      expect(run.stderr).toContain('Scope rollup cannot start yet: 1 pseudonymized row(s)');
      expect(run.stderr).toMatch(/\nfix: .*two hours/);
      expect(await scalar<string>(coder.client, installationSnapshotSql)).toBe(installed);
    });

    test('accepted without raw pseudonyms in window', async () => {
      const [first, second] = coder.population.workspaces;
      const now = Date.now();
      await apply(coder.database.url, 'anonymize');
      // The rollup window starts an hour before the newest rollup bucket, so
      // raw rows of six hours ago are outside it.
      await insertAgentStats(coder.client, columnSet, [agentRow(first, new Date(now - 6 * hourMs))]);
      await upsertAppStats(coder.client, [appSession(first, new Date(now - 6 * hourMs))]);
      await insertUsageRow(coder.client, columnSet, first, bucketStart(now - 30 * minuteMs));

      const result = await apply(coder.database.url, 'anonymize', '--scope', 'rollup');
      await insertAgentStats(coder.client, columnSet, [agentRow(second, new Date())]);
      await insertUsageRow(coder.client, columnSet, second, bucketStart(now));

      expect(result.outcome).toBe('applied');
      expect(result.scope).toBe('rollup');
      expect(result.restoredForeignKeys).toEqual([{ name: foreignKeyName, validated: false }]);
      const rollupTables = usageTables(columnSet).filter((table) => table.startsWith('template_usage_stats'));
      expect(await triggeredTables(coder.client)).toEqual(rollupTables);
      expect(await scalar<string>(coder.client, 'SELECT user_id::text AS value FROM workspace_agent_stats WHERE workspace_id = $1', [second.id])).toBe(second.ownerId);
      expect(await scalar<string>(coder.client, 'SELECT user_id::text AS value FROM template_usage_stats WHERE template_id = $1 AND start_time = $2', [second.templateId, bucketStart(now)])).toMatch(
        pseudonymPattern,
      );
      const { code, report } = await status(coder.database.url, '--check');
      expect(code).toBe(ExitCode.ok);
      expect(report.scope).toBe('rollup');
      expect(report.tables.filter((table) => table.protected).map((table) => table.table)).toEqual(rollupTables);
      expect(report.foreignKeys).toEqual([{ table: 'workspace_app_stats', name: foreignKeyName, state: 'enforced, NOT VALID' }]);
    });
  });

  describe('foreign key', () => {
    let coder: CoderDatabase;
    let originalDefinition: string;

    beforeEach(async () => {
      coder = await createCoderDatabase(`lifecycle_fk_${columnSet}`, columnSet);
      originalDefinition = (await foreignKeyConstraint(coder.client))[0].definition;
    });

    afterEach(async () => {
      await coder?.close();
    });

    test('replaced by placeholder', async () => {
      await apply(coder.database.url, 'anonymize');

      const constraints = await foreignKeyConstraint(coder.client);
      const { report } = await status(coder.database.url);

      expect(constraints).toHaveLength(1);
      expect(constraints[0].contype).toBe('c');
      expect(constraints[0].convalidated).toBe(false);
      expect(constraints[0].comment).toMatch(/^insights-privacy placeholder for foreign key \{/);
      expect(report.foreignKeys).toEqual([{ table: 'workspace_app_stats', name: foreignKeyName, state: 'replaced by placeholder' }]);
    });

    test('Coder migration drops placeholder', async () => {
      await apply(coder.database.url, 'anonymize');

      await coder.client.query(`ALTER TABLE workspace_app_stats DROP CONSTRAINT ${foreignKeyName}`);
      const { code, report } = await status(coder.database.url, '--check');

      expect(await foreignKeyConstraint(coder.client)).toEqual([]);
      expect(code).toBe(ExitCode.ok);
      expect(report.foreignKeys[0].state).toBe('absent');
    });

    test('off restores NOT VALID with pseudonyms', async () => {
      const [workspace] = coder.population.workspaces;
      await apply(coder.database.url, 'anonymize');
      await upsertAppStats(coder.client, [appSession(workspace, new Date())]);

      const result = await apply(coder.database.url, 'off');
      const [constraint] = await foreignKeyConstraint(coder.client);
      const { report } = await status(coder.database.url);

      expect(result.restoredForeignKeys).toEqual([{ name: foreignKeyName, validated: false }]);
      expect(constraint.contype).toBe('f');
      expect(constraint.convalidated).toBe(false);
      expect(constraint.definition).toBe(`${originalDefinition} NOT VALID`);
      expect(report.foreignKeys[0].state).toBe('enforced, NOT VALID');
    });

    test('off validates without pseudonyms', async () => {
      const [workspace] = coder.population.workspaces;
      await apply(coder.database.url, 'anonymize');
      await coder.client.query('ALTER TABLE workspace_app_stats DISABLE TRIGGER zz_insights_privacy');
      await upsertAppStats(coder.client, [appSession(workspace, new Date())]);

      const result = await apply(coder.database.url, 'off');
      const [constraint] = await foreignKeyConstraint(coder.client);
      const { report } = await status(coder.database.url);

      expect(result.restoredForeignKeys).toEqual([{ name: foreignKeyName, validated: true }]);
      expect(constraint.contype).toBe('f');
      expect(constraint.convalidated).toBe(true);
      expect(constraint.definition).toBe(originalDefinition);
      expect(report.foreignKeys[0].state).toBe('enforced');
    });

    test('re-added by hand, then repaired', async () => {
      await apply(coder.database.url, 'anonymize');
      await coder.client.query(`ALTER TABLE workspace_app_stats DROP CONSTRAINT ${foreignKeyName}`);
      await coder.client.query(`ALTER TABLE workspace_app_stats ADD CONSTRAINT ${foreignKeyName} FOREIGN KEY (user_id) REFERENCES users (id)`);

      const check = await runTool(['status', '--check', '--no-counts', '--database-url', coder.database.url]);
      const drifted = await status(coder.database.url, '--check');
      const repaired = await apply(coder.database.url, 'anonymize');
      const after = await status(coder.database.url, '--check');

      expect(check.code).toBe(ExitCode.checkFailed);
      expect(check.stdout).toContain(`error: workspace_app_stats.${foreignKeyName} the foreign key to users is back`);
      expect(drifted.report.foreignKeys[0].state).toBe('enforced');
      expect(drifted.report.findings.map((finding) => finding.object)).toEqual([`workspace_app_stats.${foreignKeyName}`]);
      expect(repaired.outcome).toBe('applied');
      expect((await foreignKeyConstraint(coder.client))[0].contype).toBe('c');
      expect(after.code).toBe(ExitCode.ok);
    });
  });

  describe('off', () => {
    let coder: CoderDatabase;

    beforeEach(async () => {
      coder = await createCoderDatabase(`lifecycle_off_${columnSet}`, columnSet);
    });

    afterEach(async () => {
      await coder?.close();
    });

    test('leaves only the data', async () => {
      const [first, second] = coder.population.workspaces;
      const before = await scalar<string>(coder.client, databaseSnapshotSql);
      await apply(coder.database.url, 'anonymize');
      await insertAgentStats(coder.client, columnSet, [agentRow(first, new Date()), agentRow(second, new Date())]);
      await upsertAppStats(coder.client, [appSession(first, new Date())]);
      await insertUsageRow(coder.client, columnSet, second, bucketStart(Date.now()));
      const rows = await usageRows(coder.client, columnSet);

      const result = await apply(coder.database.url, 'off');

      expect(result.outcome).toBe('applied');
      expect(await usageRows(coder.client, columnSet)).toBe(rows);
      expect(await scalar<boolean>(coder.client, "SELECT to_regnamespace('insights_privacy') IS NULL AS value")).toBe(true);
      expect(await triggeredTables(coder.client)).toEqual([]);
      expect(await scalar<number>(coder.client, "SELECT count(*)::int AS value FROM pg_catalog.pg_extension WHERE extname = 'pgcrypto'")).toBe(0);
      // Constraints are compared apart: the foreign key comes back NOT VALID
      // because a pseudonymized app session remains.
      const [constraint] = await foreignKeyConstraint(coder.client);
      expect(constraint.contype).toBe('f');
      expect(constraint.convalidated).toBe(false);
      const expected = JSON.parse(before) as Record<string, unknown[]>;
      const actual = JSON.parse(await scalar<string>(coder.client, databaseSnapshotSql)) as Record<string, unknown[]>;
      expect(actual.schemas).toEqual(expected.schemas);
      expect(actual.extensions).toEqual(expected.extensions);
      expect(actual.triggers).toEqual(expected.triggers);
      expect(actual.functions).toEqual(expected.functions);
    });

    const pgcryptoTest = pgcryptoAvailable() ? test : test.skip;
    const pgcryptoTestName = pgcryptoAvailable() ? 'keeps pgcrypto it did not create' : 'keeps pgcrypto it did not create (skipped: the server offers no pgcrypto)';

    pgcryptoTest(pgcryptoTestName, async () => {
      await coder.client.query('CREATE EXTENSION pgcrypto SCHEMA public');
      await apply(coder.database.url, 'anonymize');
      const { report } = await status(coder.database.url);

      await apply(coder.database.url, 'off');

      expect(report.hmac).toBe('pgcrypto (schema public)');
      expect(await scalar<string>(coder.client, "SELECT extnamespace::regnamespace::text AS value FROM pg_catalog.pg_extension WHERE extname = 'pgcrypto'")).toBe('public');
      expect(await scalar<boolean>(coder.client, "SELECT to_regnamespace('insights_privacy') IS NULL AS value")).toBe(true);
    });
  });

  describe('status', () => {
    let coder: CoderDatabase;
    let owner: TestRole;
    let prober: TestRole;
    let superuser: string;
    const now = Date.now();
    const old = new Date(now - 3 * 24 * hourMs);

    // Written before apply: three agent reports and two app sessions from
    // three days ago stay identifiable, while the rollup row inside the
    // rollup window is converted. Written after apply: two agent reports and
    // one app session, which the triggers pseudonymize.
    beforeAll(async () => {
      coder = await createCoderDatabase(`lifecycle_status_${columnSet}`, columnSet);
      owner = await createLoginRole('lifecycle_owner', coder.database);
      prober = await createLoginRole('lifecycle_prober', coder.database);
      superuser = await scalar<string>(coder.client, 'SELECT current_user AS value');
      const tables = await coder.client.query<{ name: string }>("SELECT tablename AS name FROM pg_catalog.pg_tables WHERE schemaname = 'public'");
      for (const { name } of tables.rows) await coder.client.query(`ALTER TABLE public."${name}" OWNER TO "${owner.name}"`);
      await coder.client.query(`GRANT CREATE ON DATABASE "${coder.database.name}" TO "${owner.name}"`);
      await grantOnUsageTables(coder.client, columnSet, prober.name, ['INSERT', 'SELECT']);

      const [first, second, third] = coder.population.workspaces;
      await insertAgentStats(coder.client, columnSet, [agentRow(first, old), agentRow(second, old), agentRow(third, old)]);
      await upsertAppStats(coder.client, [appSession(first, old), appSession(second, old)]);
      await insertUsageRow(coder.client, columnSet, first, bucketStart(now - 40 * minuteMs));

      await apply(owner.url, 'anonymize');
      await insertAgentStats(coder.client, columnSet, [agentRow(first, new Date()), agentRow(second, new Date())]);
      await upsertAppStats(coder.client, [appSession(third, new Date())]);
    });

    afterAll(async () => {
      await coder?.close();
      await owner?.drop();
      await prober?.drop();
    });

    test('JSON report', async () => {
      const run = await runTool(['status', '--json', '--database-url', owner.url]);
      const report = JSON.parse(run.stdout) as StatusReport;

      expect(run.code).toBe(ExitCode.ok);
      expect(report.formatVersion).toBe(1);
      expect(report.database).toBe(coder.database.name);
      expect(report.application).toBe(`Coder (${columnSet} column set)`);
      expect(report.mode).toBe('anonymize');
      expect(report.scope).toBe('source');
      expect(report.schema).toBe('insights_privacy');
      expect(report.appliedBy).toBe(owner.name);
      expect(report.hmac).toBe(pgcryptoAvailable() ? 'pgcrypto (schema insights_privacy)' : 'core sha256()');
      expect(report.findings).toEqual([]);
      expect(report.ok).toBe(true);
      expect(report.foreignKeys).toEqual([{ table: 'workspace_app_stats', name: foreignKeyName, state: 'replaced by placeholder' }]);
      expect(report.tables.map((table) => table.table)).toEqual(usageTables(columnSet));
      for (const table of report.tables) {
        expect(table.protected).toBe(true);
        expect(table.trigger).toBe('present');
        expect(table.enabledAlways).toBe(true);
        expect(table.functionMatches).toBe(true);
      }
    });

    test('row counts', async () => {
      const { report } = await status(owner.url);
      const counts = Object.fromEntries(report.tables.map((table) => [table.table, table.rows]));

      expect(counts.workspace_agent_stats).toEqual({ total: 5, identifiable: 3, pseudonymized: 2 });
      expect(counts.workspace_app_stats).toEqual({ total: 3, identifiable: 2, pseudonymized: 1 });
      expect(counts.template_usage_stats).toEqual({ total: 1, identifiable: 0, pseudonymized: 1 });
      if (columnSet === '2026') expect(counts.template_usage_stats_session_apps).toEqual({ total: 1, identifiable: 0, pseudonymized: 1 });
    });

    test('no counts', async () => {
      const { report } = await status(owner.url, '--no-counts');

      expect(report.tables.map((table) => table.rows)).toEqual(usageTables(columnSet).map(() => null));
    });

    test('key fingerprint, never the key', async () => {
      const run = await runTool(['status', '--json', '--database-url', owner.url]);
      const text = await runTool(['status', '--database-url', owner.url]);
      const report = JSON.parse(run.stdout) as StatusReport;
      const { rows } = await coder.client.query<{ key: Buffer; fingerprint: string }>(
        "SELECT key, encode(substr(sha256(convert_to('insights-privacy key fingerprint', 'UTF8') || key), 1, 8), 'hex') AS fingerprint FROM insights_privacy.keys",
      );
      const [{ key, fingerprint }] = rows;
      const output = run.stdout + run.stderr + text.stdout + text.stderr;

      expect(report.keys).toHaveLength(1);
      expect(report.keys[0].fingerprint).toBe(fingerprint);
      expect(text.stdout).toContain(`fingerprint ${fingerprint}`);
      // Plain booleans, so that a failure cannot print the key.
      expect(output.toLowerCase().includes(key.toString('hex'))).toBe(false);
      expect(output.includes(key.toString('base64'))).toBe(false);
      expect(output.includes(key.toString('base64url'))).toBe(false);
    });

    test('roles that bypass or probe', async () => {
      const { report } = await status(owner.url);

      for (const table of report.tables) {
        expect(table.canBypass).toContainEqual({ role: superuser, reason: 'superuser', canBypass: true });
        expect(table.canBypass).toContainEqual({ role: owner.name, reason: 'table owner', canBypass: true });
        expect(table.canProbe).toContainEqual({ role: prober.name, reason: 'INSERT and SELECT', canBypass: false });
        expect(table.canBypass.map((role) => role.role)).not.toContain(prober.name);
      }
    });

    test('table output', async () => {
      const run = await runTool(['status', '--database-url', owner.url]);

      expect(run.code).toBe(ExitCode.ok);
      expect(run.stdout).toContain('Mode:         anonymize (scope source)');
      expect(run.stdout).toContain(`by ${owner.name}`);
      expect(run.stdout).toMatch(/│ workspace_agent_stats\s+│ yes\s+│ present\s+│ yes\s+│ matches\s+│ 3\s+│ 2\s+│ 5\s+│/);
      expect(run.stdout).toMatch(/│ workspace_app_stats\s+│ yes\s+│ present\s+│ yes\s+│ matches\s+│ 2\s+│ 1\s+│ 3\s+│/);
      expect(run.stdout).toContain(`Foreign key workspace_app_stats.${foreignKeyName}: replaced by placeholder`);
      expect(run.stdout).toContain(`${superuser} (superuser)`);
      expect(run.stdout).toContain(`${owner.name} (table owner)`);
      expect(run.stdout).toMatch(new RegExp(`compute the pseudonym of a chosen id: .*${prober.name}`));
      expect(run.stdout).toContain('Enforcement matches the recorded mode.');
    });

    test('off as the owner', async () => {
      const result = await apply(owner.url, 'off');

      expect(result.outcome).toBe('applied');
      expect(result.restoredForeignKeys).toEqual([{ name: foreignKeyName, validated: false }]);
      expect(await scalar<boolean>(coder.client, "SELECT to_regnamespace('insights_privacy') IS NULL AS value")).toBe(true);
      expect(await scalar<number>(coder.client, "SELECT count(*)::int AS value FROM pg_catalog.pg_extension WHERE extname = 'pgcrypto'")).toBe(0);
    });
  });

  describe('status --check', () => {
    let coder: CoderDatabase;
    /** The installation right after the first apply, which every repair must restore. */
    let installed: string;

    beforeAll(async () => {
      coder = await createCoderDatabase(`lifecycle_check_${columnSet}`, columnSet);
    });

    afterAll(async () => {
      await coder?.close();
    });

    test('fails when not applied', async () => {
      const run = await runTool(['status', '--check', '--database-url', coder.database.url]);

      expect(run.code).toBe(ExitCode.checkFailed);
      expect(run.stdout).toContain('error: schema insights_privacy is missing');
    });

    test('passes after apply', async () => {
      await apply(coder.database.url, 'anonymize');
      installed = await scalar<string>(coder.client, installationSnapshotSql);

      const run = await runTool(['status', '--check', '--database-url', coder.database.url]);

      expect(run.code).toBe(ExitCode.ok);
      expect(run.stdout).not.toContain('Findings:');
    });

    const drifts = [
      { name: 'dropped trigger', sql: `DROP TRIGGER ${triggerName} ON workspace_agent_stats`, object: 'workspace_agent_stats', problem: 'has no insights-privacy trigger' },
      { name: 'disabled trigger', sql: `ALTER TABLE workspace_app_stats DISABLE TRIGGER ${triggerName}`, object: 'workspace_app_stats', problem: 'disabled, not ENABLE ALWAYS' },
      {
        name: 'ENABLE REPLICA trigger',
        sql: `ALTER TABLE template_usage_stats ENABLE REPLICA TRIGGER ${triggerName}`,
        object: 'template_usage_stats',
        problem: 'enabled only for replicas, not ENABLE ALWAYS',
      },
      {
        name: 'ENABLE (origin only) trigger',
        sql: `ALTER TABLE workspace_agent_stats ENABLE TRIGGER ${triggerName}`,
        object: 'workspace_agent_stats',
        problem: 'not ENABLE ALWAYS',
      },
      {
        name: 'replaced trigger function',
        sql: `CREATE OR REPLACE FUNCTION insights_privacy.enforce_workspace_agent_stats() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`,
        object: 'insights_privacy.enforce_workspace_agent_stats()',
        problem: 'has a body that differs',
      },
      {
        name: 'replaced pseudonym function',
        sql: `CREATE OR REPLACE FUNCTION insights_privacy.pseudonym(id uuid, row_time timestamptz DEFAULT now()) RETURNS uuid LANGUAGE sql AS $$ SELECT id $$`,
        object: 'insights_privacy.pseudonym()',
        problem: 'has a body that differs',
      },
      {
        name: 'trigger without UPDATE',
        sql: `DROP TRIGGER ${triggerName} ON workspace_app_stats;
              CREATE TRIGGER ${triggerName} BEFORE INSERT ON workspace_app_stats FOR EACH ROW EXECUTE FUNCTION insights_privacy.enforce_workspace_app_stats();
              ALTER TABLE workspace_app_stats ENABLE ALWAYS TRIGGER ${triggerName}`,
        object: 'workspace_app_stats',
        problem: 'with the wrong events',
      },
      {
        name: 'trigger calling another function',
        sql: `DROP TRIGGER ${triggerName} ON workspace_app_stats;
              CREATE TRIGGER ${triggerName} BEFORE INSERT OR UPDATE OF user_id ON workspace_app_stats FOR EACH ROW EXECUTE FUNCTION insights_privacy.enforce_workspace_agent_stats();
              ALTER TABLE workspace_app_stats ENABLE ALWAYS TRIGGER ${triggerName}`,
        object: 'workspace_app_stats',
        problem: 'calls insights_privacy.enforce_workspace_agent_stats instead of insights_privacy.enforce_workspace_app_stats',
      },
      {
        name: 'function without search_path',
        sql: 'ALTER FUNCTION insights_privacy.pseudonym(uuid, timestamptz) RESET search_path',
        object: 'insights_privacy.pseudonym()',
        problem: 'runs with "no fixed search_path" instead of "search_path=pg_catalog, pg_temp"',
      },
      // The trigger functions run with the writer's search_path on purpose
      // (see trigger-function-anonymize.sql), so a fixed one is drift too.
      {
        name: 'trigger function with search_path',
        sql: 'ALTER FUNCTION insights_privacy.enforce_workspace_app_stats() SET search_path = public, pg_temp',
        object: 'insights_privacy.enforce_workspace_app_stats()',
        problem: 'runs with "search_path=public, pg_temp" instead of "no fixed search_path"',
      },
      {
        name: 'function executable by PUBLIC',
        sql: 'GRANT EXECUTE ON FUNCTION insights_privacy.pseudonym(uuid, timestamptz) TO PUBLIC',
        object: 'insights_privacy.pseudonym()',
        problem: 'is executable by PUBLIC',
      },
      // Writers without EXECUTE on pseudonym() fail once the trigger function
      // no longer runs as its owner.
      {
        name: 'trigger function SECURITY INVOKER',
        sql: 'ALTER FUNCTION insights_privacy.enforce_workspace_app_stats() SECURITY INVOKER',
        object: 'insights_privacy.enforce_workspace_app_stats()',
        problem: 'SECURITY DEFINER',
      },
      {
        name: 'dropped pgcrypto',
        sql: 'DROP EXTENSION pgcrypto',
        object: 'extension pgcrypto',
        problem: 'is missing',
      },
      {
        name: 'deleted key',
        sql: 'DELETE FROM insights_privacy.keys',
        object: 'insights_privacy.keys',
        problem: 'holds no key',
      },
      ...(columnSet === '2026'
        ? [
            {
              name: 'dropped child trigger',
              sql: `DROP TRIGGER ${triggerName} ON template_usage_stats_session_apps`,
              object: 'template_usage_stats_session_apps',
              problem: 'has no insights-privacy trigger',
            },
          ]
        : []),
    ];

    // Without pgcrypto on the server, anonymize uses core sha256() and there
    // is no extension to drop.
    const dropsPgcrypto = (drift: { sql: string }) => drift.sql === 'DROP EXTENSION pgcrypto';
    if (!pgcryptoAvailable()) test.skip('detects and repairs dropped pgcrypto (skipped: the server offers no pgcrypto)', () => undefined);

    test.each(drifts.filter((drift) => pgcryptoAvailable() || !dropsPgcrypto(drift)))('detects and repairs $name', async (drift) => {
      await coder.client.query(drift.sql);

      const run = await runTool(['status', '--check', '--no-counts', '--database-url', coder.database.url]);
      const { report } = await status(coder.database.url, '--check', '--no-counts');
      const repaired = await apply(coder.database.url, 'anonymize');
      const after = await runTool(['status', '--check', '--no-counts', '--database-url', coder.database.url]);

      expect(run.code).toBe(ExitCode.checkFailed);
      expect(run.stdout).toContain(`error: ${drift.object} `);
      expect(run.stdout).toContain(drift.problem);
      expect(report.ok).toBe(false);
      expect(report.findings.map((finding) => finding.object)).toContain(drift.object);
      expect(repaired.outcome).toBe('applied');
      expect(after.code).toBe(ExitCode.ok);
      const repairedSnapshot = JSON.parse(await scalar<string>(coder.client, installationSnapshotSql)) as { functions: unknown[][]; triggers: unknown[][] };
      const installedSnapshot = JSON.parse(installed) as { functions: unknown[][]; triggers: unknown[][] };
      // Compare contents only: the repair rewrites catalog rows, so oid and xmin change.
      const contents = (rows: unknown[][]) => rows.map((row) => row.slice(2));
      expect(contents(repairedSnapshot.functions)).toEqual(contents(installedSnapshot.functions));
      expect(contents(repairedSnapshot.triggers)).toEqual(contents(installedSnapshot.triggers));
    });

    test('connection error exits 2', async () => {
      const run = await runTool(['status', '--check', '--database-url', `postgresql://coder@127.0.0.1:${await closedPort()}/coder`]);

      expect(run.code).toBe(ExitCode.error);
      expect(run.stdout).toBe('');
      expect(run.stderr).toContain('Could not connect');
    });
  });
});

describe('second schema', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('lifecycle_schema', '2026');
    await apply(coder.database.url, 'anonymize');
  });

  afterAll(async () => {
    await coder.close();
  });

  test.each(['anonymize', 'disable', 'off'])('apply --mode %s with another schema is rejected', async (mode) => {
    const run = await runTool(['apply', '--mode', mode, '--yes', '--schema', 'other_privacy', '--database-url', coder.database.url]);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('enforced by insights-privacy in schema insights_privacy, not in schema other_privacy');
    expect(run.stderr).toContain('--schema insights_privacy');
    const { rows } = await coder.client.query<{ count: string }>("SELECT count(*) FROM pg_namespace WHERE nspname = 'other_privacy'");
    expect(Number(rows[0].count)).toBe(0);
    const triggers = await coder.client.query<{ count: string }>(
      "SELECT count(*) FROM pg_trigger AS t JOIN pg_proc AS p ON p.oid = t.tgfoid JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE t.tgname = $1 AND n.nspname = 'insights_privacy'",
      [triggerName],
    );
    expect(Number(triggers.rows[0].count)).toBe(4);
  });
});
