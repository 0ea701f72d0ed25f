import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StatusReport } from '../src/commands/status.js';
import { ExitCode } from '../src/core/errors.js';
import type { Finding } from '../src/core/findings.js';
import { runCliCaptured, type CliRun } from './support/cli.js';
import { createCoderDatabase, privacySchema, pseudonymPattern, type CoderDatabase } from './support/coder.js';

// Each case breaks enforcement the way a person or an application upgrade
// could. It expects `status --check` to fail with a finding that names the
// object, and `apply` to repair it. Another program's trigger is the
// exception: the operator accepts or removes it.

let workDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-drift-'));
});

afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

const runTool = (argv: string[]): Promise<CliRun> => runCliCaptured(argv, { env: {}, cwd: workDir });

async function apply(url: string, mode: string, ...options: string[]): Promise<CliRun> {
  const run = await runTool(['apply', '--mode', mode, '--yes', '--database-url', url, ...options]);
  if (run.code !== ExitCode.ok) throw new Error(`apply --mode ${mode} ${options.join(' ')} exited with ${run.code}: ${run.stderr}`);
  return run;
}

async function check(url: string): Promise<{ code: number; report: StatusReport; errors: Finding[] }> {
  const run = await runTool(['status', '--check', '--json', '--no-counts', '--database-url', url]);
  if (run.code === ExitCode.error) throw new Error(`status exited with ${run.code}: ${run.stderr}`);
  const report = JSON.parse(run.stdout) as StatusReport;
  return { code: run.code, report, errors: report.findings.filter((finding) => finding.severity === 'error') };
}

/** Inserts one app session the way Coder does and returns the user_id that was stored. */
async function insertAppSession(coder: CoderDatabase): Promise<string> {
  const workspace = coder.population.workspaces[0];
  const { rows } = await coder.client.query<{ user_id: string }>(
    `INSERT INTO workspace_app_stats (user_id, workspace_id, agent_id, access_method, slug_or_port, session_id, session_started_at, session_ended_at, requests)
     VALUES ($1, $2, $3, 'path', 'code-server', $4, now(), now(), 1)
     RETURNING user_id`,
    [workspace.ownerId, workspace.id, workspace.agentId, randomUUID()],
  );
  return rows[0].user_id;
}

describe.each(['2025', '2026'] as const)('drift in Coder %s', (columnSet) => {
  let coder: CoderDatabase;

  beforeEach(async () => {
    coder = await createCoderDatabase(`drift_${columnSet}`, columnSet);
    await apply(coder.database.url, 'anonymize');
  });

  afterEach(async () => {
    await coder.close();
  });

  test('fresh apply passes the check', async () => {
    const { code, errors, report } = await check(coder.database.url);

    expect(errors).toEqual([]);
    expect(code).toBe(ExitCode.ok);
    expect(report.findings).toEqual([]);
  });

  test('dropped trigger is reported and repaired', async () => {
    await coder.client.query('DROP TRIGGER zz_insights_privacy ON workspace_app_stats');

    const drifted = await check(coder.database.url);
    await apply(coder.database.url, 'anonymize');
    const repaired = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    expect(drifted.errors).toContainEqual(expect.objectContaining({ code: 'trigger-changed', object: 'workspace_app_stats', fix: 'insights-privacy apply' }));
    expect(repaired.code).toBe(ExitCode.ok);
    expect(await insertAppSession(coder)).toMatch(pseudonymPattern);
  });

  test('disabled trigger is reported and repaired', async () => {
    await coder.client.query('ALTER TABLE workspace_agent_stats DISABLE TRIGGER zz_insights_privacy');

    const drifted = await check(coder.database.url);
    await apply(coder.database.url, 'anonymize');
    const repaired = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    const finding = drifted.errors.find((candidate) => candidate.object === 'workspace_agent_stats');
    expect(finding?.problem).toContain('disabled');
    expect(repaired.code).toBe(ExitCode.ok);
  });

  test('replaced trigger function is reported and repaired', async () => {
    await coder.client.query(`CREATE OR REPLACE FUNCTION ${privacySchema}.enforce_workspace_app_stats() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`);

    const drifted = await check(coder.database.url);
    const leaked = await insertAppSession(coder);
    await apply(coder.database.url, 'anonymize');
    const repaired = await check(coder.database.url);

    expect(leaked).toBe(coder.population.workspaces[0].ownerId);
    expect(drifted.code).toBe(ExitCode.checkFailed);
    expect(drifted.errors).toContainEqual(expect.objectContaining({ code: 'function-changed', object: `${privacySchema}.enforce_workspace_app_stats()` }));
    expect(repaired.code).toBe(ExitCode.ok);
    expect(await insertAppSession(coder)).toMatch(pseudonymPattern);
  });

  test('foreign key added back is reported and repaired', async () => {
    await coder.client.query('ALTER TABLE workspace_app_stats DROP CONSTRAINT workspace_app_stats_user_id_fkey');
    await coder.client.query('ALTER TABLE workspace_app_stats ADD CONSTRAINT workspace_app_stats_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id) NOT VALID');

    const drifted = await check(coder.database.url);
    await apply(coder.database.url, 'anonymize');
    const repaired = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    expect(drifted.errors).toContainEqual(expect.objectContaining({ code: 'foreign-key-restored', object: 'workspace_app_stats.workspace_app_stats_user_id_fkey' }));
    expect(repaired.code).toBe(ExitCode.ok);
    expect(await insertAppSession(coder)).toMatch(pseudonymPattern);
  });

  test('state edited by hand is reported and repaired', async () => {
    await coder.client.query(`UPDATE ${privacySchema}.state SET options = options || '{"rotate": "daily"}'::jsonb`);

    const drifted = await check(coder.database.url);
    await apply(coder.database.url, 'anonymize');
    const repaired = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    const finding = drifted.errors.find((candidate) => candidate.code === 'state-edited');
    expect(finding?.object).toBe(`${privacySchema}.state`);
    expect(finding?.fix).toContain('insights-privacy apply --mode anonymize --scope source');
    expect(repaired.code).toBe(ExitCode.ok);
  });

  test('mode changed by hand in state is reported', async () => {
    await coder.client.query(`UPDATE ${privacySchema}.state SET mode = 'disable', scope = NULL`);

    const drifted = await check(coder.database.url);
    await apply(coder.database.url, 'anonymize');
    const repaired = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    expect(drifted.errors.map((finding) => finding.code)).toContain('state-edited');
    expect(drifted.errors.find((finding) => finding.code === 'state-edited')?.problem).toContain('mode disable');
    expect(repaired.code).toBe(ExitCode.ok);
  });

  test('removed state digest function is reported', async () => {
    await coder.client.query(`DROP FUNCTION ${privacySchema}.state_digest`);

    const drifted = await check(coder.database.url);
    await apply(coder.database.url, 'anonymize');
    const repaired = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    expect(drifted.errors).toContainEqual(expect.objectContaining({ code: 'function-changed', object: `${privacySchema}.state_digest()`, problem: 'is missing' }));
    expect(repaired.code).toBe(ExitCode.ok);
  });

  test('table re-created is reported and repaired', async () => {
    await coder.client.query('ALTER TABLE workspace_app_stats RENAME TO workspace_app_stats_old');
    await coder.client.query('CREATE TABLE workspace_app_stats (LIKE workspace_app_stats_old INCLUDING ALL)');
    await coder.client.query('ALTER SEQUENCE workspace_app_stats_id_seq OWNED BY workspace_app_stats.id');
    await coder.client.query('DROP TABLE workspace_app_stats_old');

    const drifted = await check(coder.database.url);
    await apply(coder.database.url, 'anonymize');
    const repaired = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    const finding = drifted.errors.find((candidate) => candidate.code === 'table-recreated');
    expect(finding?.object).toBe('workspace_app_stats');
    expect(finding?.problem).toContain('dropped and re-created');
    expect(finding?.fix).toContain('backfill --existing pseudonymize');
    expect(repaired.code).toBe(ExitCode.ok);
    expect(await insertAppSession(coder)).toMatch(pseudonymPattern);
  });

  test('added uuid column is reported and recorded by apply', async () => {
    await coder.client.query('ALTER TABLE workspace_agent_stats ADD COLUMN owner_id uuid');

    const drifted = await check(coder.database.url);
    await apply(coder.database.url, 'anonymize');
    const repaired = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    const finding = drifted.errors.find((candidate) => candidate.code === 'table-altered');
    expect(finding?.object).toBe('workspace_agent_stats');
    expect(finding?.problem).toContain('owner_id uuid');
    expect(finding?.problem).toContain('the new uuid column(s) owner_id are not pseudonymized');
    expect(repaired.code).toBe(ExitCode.ok);
  });

  test('trigger firing before ours is reported until accepted', async () => {
    await coder.client.query('CREATE TABLE app_audit (user_id uuid)');
    await coder.client.query(
      `CREATE FUNCTION audit_app() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO app_audit VALUES (NEW.user_id); RETURN NEW; END $$`,
    );
    await coder.client.query('CREATE TRIGGER audit_app BEFORE INSERT ON workspace_app_stats FOR EACH ROW EXECUTE FUNCTION audit_app()');

    const drifted = await check(coder.database.url);
    const stored = await insertAppSession(coder);
    const { rows: audited } = await coder.client.query<{ user_id: string }>('SELECT user_id FROM app_audit');
    await apply(coder.database.url, 'anonymize');
    const afterPlainApply = await check(coder.database.url);
    const accepting = await apply(coder.database.url, 'anonymize', '--allow-trigger', 'workspace_app_stats.audit_app');
    const accepted = await check(coder.database.url);

    expect(stored).toMatch(pseudonymPattern);
    expect(audited.map((row) => row.user_id)).toEqual([coder.population.workspaces[0].ownerId]);
    expect(drifted.code).toBe(ExitCode.checkFailed);
    const finding = drifted.errors.find((candidate) => candidate.code === 'other-trigger');
    expect(finding?.object).toBe('workspace_app_stats.audit_app');
    expect(finding?.problem).toContain('fires before zz_insights_privacy');
    expect(finding?.fix).toContain('insights-privacy apply --allow-trigger workspace_app_stats.audit_app');
    expect(afterPlainApply.code).toBe(ExitCode.checkFailed);
    expect(accepting.stdout).toContain('Trigger workspace_app_stats.audit_app is accepted');
    expect(accepted.code).toBe(ExitCode.ok);
  });

  test('accepted trigger that changes is reported again', async () => {
    await coder.client.query(`CREATE FUNCTION touch_app() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`);
    await coder.client.query('CREATE TRIGGER touch_app BEFORE INSERT ON workspace_app_stats FOR EACH ROW EXECUTE FUNCTION touch_app()');
    await apply(coder.database.url, 'anonymize', '--allow-trigger', 'workspace_app_stats.touch_app');
    const accepted = await check(coder.database.url);

    await coder.client.query(`CREATE OR REPLACE FUNCTION touch_app() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('app', NEW.user_id::text); RETURN NEW; END $$`);
    const changed = await check(coder.database.url);

    expect(accepted.code).toBe(ExitCode.ok);
    expect(changed.code).toBe(ExitCode.checkFailed);
    expect(changed.errors.find((finding) => finding.code === 'other-trigger')?.problem).toContain('its definition or function changed since');
  });

  test('trigger firing after ours is reported', async () => {
    await coder.client.query(`CREATE FUNCTION restore_id() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`);
    await coder.client.query('CREATE TRIGGER zzz_restore BEFORE INSERT OR UPDATE ON workspace_agent_stats FOR EACH ROW EXECUTE FUNCTION restore_id()');

    const drifted = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    const finding = drifted.errors.find((candidate) => candidate.object === 'workspace_agent_stats.zzz_restore');
    expect(finding?.problem).toContain('fires after zz_insights_privacy');
  });

  test('AFTER trigger and disabled trigger are not reported', async () => {
    await coder.client.query(`CREATE FUNCTION count_app() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`);
    await coder.client.query('CREATE TRIGGER count_app AFTER INSERT ON workspace_app_stats FOR EACH ROW EXECUTE FUNCTION count_app()');
    await coder.client.query('CREATE TRIGGER audit_off BEFORE INSERT ON workspace_app_stats FOR EACH ROW EXECUTE FUNCTION count_app()');
    await coder.client.query('ALTER TABLE workspace_app_stats DISABLE TRIGGER audit_off');

    const { code, errors } = await check(coder.database.url);

    expect(errors).toEqual([]);
    expect(code).toBe(ExitCode.ok);
  });

  test('insert rule is reported', async () => {
    await coder.client.query('CREATE TABLE app_copy (user_id uuid)');
    await coder.client.query('CREATE RULE copy_app AS ON INSERT TO workspace_app_stats DO ALSO INSERT INTO app_copy VALUES (NEW.user_id)');

    const drifted = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    const finding = drifted.errors.find((candidate) => candidate.code === 'rule');
    expect(finding?.object).toBe('workspace_app_stats.copy_app');
    expect(finding?.fix).toContain('DROP RULE copy_app ON workspace_app_stats');
  });

  test('unknown --allow-trigger is rejected', async () => {
    const before = await check(coder.database.url);
    const run = await runTool(['apply', '--mode', 'anonymize', '--yes', '--database-url', coder.database.url, '--allow-trigger', 'workspace_app_stats.nothing']);
    const after = await check(coder.database.url);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('--allow-trigger workspace_app_stats.nothing: table workspace_app_stats has no trigger named nothing');
    expect(after.report.appliedAt).toBe(before.report.appliedAt);
  });

  test('malformed --allow-trigger is rejected', async () => {
    const run = await runTool(['apply', '--mode', 'anonymize', '--yes', '--database-url', coder.database.url, '--allow-trigger', 'audit_app']);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('--allow-trigger takes table.trigger names, got "audit_app"');
  });
});

describe('drift under disable', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('drift_disable', '2026');
    await apply(coder.database.url, 'disable');
  });

  afterAll(async () => {
    await coder.close();
  });

  test('trigger before ours receives dropped rows', async () => {
    await coder.client.query('CREATE TABLE agent_audit (user_id uuid)');
    await coder.client.query(`CREATE FUNCTION audit_agent() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO agent_audit VALUES (NEW.user_id); RETURN NEW; END $$`);
    await coder.client.query('CREATE TRIGGER audit_agent BEFORE INSERT ON workspace_agent_stats FOR EACH ROW EXECUTE FUNCTION audit_agent()');
    await coder.client.query('CREATE TRIGGER zzz_after BEFORE INSERT ON workspace_agent_stats FOR EACH ROW EXECUTE FUNCTION audit_agent()');

    const drifted = await check(coder.database.url);

    expect(drifted.code).toBe(ExitCode.checkFailed);
    const objects = drifted.errors.map((finding) => finding.object);
    expect(objects).toContain('workspace_agent_stats.audit_agent');
    // Under disable the tool's trigger drops the row, so a later trigger never sees it.
    expect(objects).not.toContain('workspace_agent_stats.zzz_after');
    expect(drifted.errors.find((finding) => finding.object === 'workspace_agent_stats.audit_agent')?.problem).toContain('before disable drops it');
  });
});

describe('simulated Coder upgrade', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('drift_upgrade', '2026');
    await apply(coder.database.url, 'anonymize');
  });

  afterAll(async () => {
    await coder.close();
  });

  test('changes that keep the trigger working', async () => {
    // An upgrade that renames a column the trigger does not read, rebuilds
    // an index and adds a column: writes stay pseudonymized, and status
    // reports the new column set for review.
    await coder.client.query('ALTER TABLE workspace_agent_stats RENAME COLUMN connection_median_latency_ms TO connection_latency_median_ms');
    await coder.client.query('DROP INDEX idx_agent_stats_user_id');
    await coder.client.query('CREATE INDEX idx_agent_stats_user_id ON workspace_agent_stats USING btree (user_id, created_at)');
    await coder.client.query('ALTER TABLE workspace_agent_stats ADD COLUMN session_count_jetbrains bigint DEFAULT 0 NOT NULL');
    const workspace = coder.population.workspaces[0];
    const { rows } = await coder.client.query<{ user_id: string }>(
      `INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, template_id) VALUES ($1, now(), $2, $3, $4, $5) RETURNING user_id`,
      [randomUUID(), workspace.ownerId, workspace.agentId, workspace.id, workspace.templateId],
    );

    const drifted = await check(coder.database.url);
    await apply(coder.database.url, 'anonymize');
    const repaired = await check(coder.database.url);

    expect(rows[0].user_id).toMatch(pseudonymPattern);
    expect(drifted.code).toBe(ExitCode.checkFailed);
    expect(drifted.errors.map((finding) => `${finding.code} ${finding.object}`)).toEqual(['table-altered workspace_agent_stats']);
    expect(drifted.errors[0].problem).toContain('connection_latency_median_ms double precision');
    expect(drifted.errors[0].problem).not.toContain('are not pseudonymized');
    expect(repaired.code).toBe(ExitCode.ok);
  });

  test('a protected table dropped and re-created by a migration', async () => {
    await coder.client.query('BEGIN');
    await coder.client.query('DROP TABLE workspace_app_stats');
    await coder.client.query(`
      CREATE TABLE workspace_app_stats (
        id bigserial PRIMARY KEY,
        user_id uuid NOT NULL REFERENCES users(id),
        workspace_id uuid NOT NULL REFERENCES workspaces(id),
        agent_id uuid NOT NULL REFERENCES workspace_agents(id),
        access_method text NOT NULL,
        slug_or_port text NOT NULL,
        session_id uuid NOT NULL,
        session_started_at timestamptz NOT NULL,
        session_ended_at timestamptz NOT NULL,
        requests integer NOT NULL,
        CONSTRAINT workspace_app_stats_user_id_agent_id_session_id_key UNIQUE (user_id, agent_id, session_id))`);
    await coder.client.query('COMMIT');
    const raw = await insertAppSession(coder);

    const drifted = await check(coder.database.url);
    await apply(coder.database.url, 'anonymize', '--existing', 'pseudonymize');
    const repaired = await check(coder.database.url);
    const { rows } = await coder.client.query<{ raw: string }>('SELECT count(*) AS raw FROM workspace_app_stats WHERE user_id IN (SELECT id FROM users)');

    expect(raw).toBe(coder.population.workspaces[0].ownerId);
    expect(drifted.code).toBe(ExitCode.checkFailed);
    const codes = drifted.errors.filter((finding) => finding.object.startsWith('workspace_app_stats')).map((finding) => finding.code);
    expect(codes).toEqual(expect.arrayContaining(['trigger-changed', 'table-recreated', 'foreign-key-restored']));
    expect(repaired.code).toBe(ExitCode.ok);
    expect(Number(rows[0].raw)).toBe(0);
    expect(await insertAppSession(coder)).toMatch(pseudonymPattern);
  });
});
