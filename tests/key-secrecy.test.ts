import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { ApplyResult } from '../src/commands/apply.js';
import { readStatus } from '../src/commands/status.js';
import { upsertAppStats, type AppStatSession } from '../src/fixture/index.js';
import { serverLogPath } from './support/database.js';
import {
  applyMode,
  createCoderDatabase,
  createLoginRole,
  grantOnUsageTables,
  privacySchema,
  pseudonymsOf,
  readNewestKey,
  type CoderDatabase,
  type TestRole,
} from './support/coder.js';

// The key must never leave the database. These tests read it as the
// superuser only to search for it, and never print it: an assertion on text
// that could contain it reports a boolean or the names of the objects found.

/** Returns the forms in which a key could appear in text: hex, base64 and base64url. */
function keyForms(key: Buffer): string[] {
  return [key.toString('hex'), key.toString('base64'), key.toString('base64url')];
}

/** Returns whether text or bytes contain the raw key or one of its forms, with hex compared case-insensitively. */
function containsKey(key: Buffer, content: string | Buffer): boolean {
  if (Buffer.isBuffer(content)) {
    if (content.includes(key)) return true;
    content = content.toString('latin1');
  }
  const lower = content.toLowerCase();
  const [hex, ...others] = keyForms(key);
  return lower.includes(hex) || others.some((form) => content.includes(form));
}

/** Runs a query and returns the SQLSTATE it failed with, or 'succeeded'. */
async function sqlStateOf(client: pg.ClientBase, sql: string, params: unknown[] = []): Promise<string> {
  try {
    await client.query(sql, params);
    return 'succeeded';
  } catch (error) {
    return (error as { code?: string }).code ?? 'no SQLSTATE';
  }
}

/**
 * Waits until the server log contains `marker`, because the server's output
 * reaches the file through a stream in the jest process and may lag behind.
 */
async function readLogThrough(logPath: string, marker: string): Promise<Buffer> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const content = await readFile(logPath);
    if (content.includes(marker)) return content;
    if (Date.now() > deadline) throw new Error(`Marker ${marker} did not reach the server log ${logPath} within 15 s`);
    await sleep(100);
  }
}

describe('key secrecy under anonymize', () => {
  let coder: CoderDatabase;
  let applied: ApplyResult;
  let app: TestRole;
  let appClient: pg.Client;

  beforeAll(async () => {
    coder = await createCoderDatabase('secrecy', '2026');
    applied = await applyMode(coder.client, 'anonymize');
    app = await createLoginRole('coder_app', coder.database);
    await grantOnUsageTables(coder.client, '2026', app.name, ['INSERT', 'SELECT', 'UPDATE']);
    appClient = await app.connect();
  });

  afterAll(async () => {
    await appClient?.end();
    // The role owns objects and has privileges in this database only, so it
    // can be dropped once the database is gone.
    await coder?.close();
    await app?.drop();
  });

  function appSession(userId: string): AppStatSession {
    const workspace = coder.population.workspaces[0];
    return {
      userId,
      workspaceId: workspace.id,
      agentId: workspace.agentId,
      accessMethod: 'path',
      slugOrPort: 'code-server',
      sessionId: randomUUID(),
      sessionStartedAt: new Date('2025-03-03T10:00:00Z'),
      sessionEndedAt: new Date('2025-03-03T10:05:00Z'),
      requests: 3,
    };
  }

  /** Inserts one agent report as `client` and returns the user id stored for it. */
  async function writeAgentStat(client: pg.ClientBase, userId: string): Promise<string> {
    const workspace = coder.population.workspaces[0];
    const id = randomUUID();
    await client.query(
      `INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, template_id, connection_count, session_counts)
       VALUES ($1, now(), $2, $3, $4, $5, 1, '{"ssh": 1}')`,
      [id, userId, workspace.agentId, workspace.id, workspace.templateId],
    );
    const { rows } = await coder.client.query<{ user_id: string }>('SELECT user_id::text FROM workspace_agent_stats WHERE id = $1', [id]);
    return rows[0].user_id;
  }

  test('app role has no privilege on the schema', async () => {
    const { rows } = await coder.client.query<{ usage: boolean; create: boolean }>(
      "SELECT has_schema_privilege($1, $2, 'USAGE') AS usage, has_schema_privilege($1, $2, 'CREATE') AS create",
      [app.name, privacySchema],
    );

    expect(rows[0]).toEqual({ usage: false, create: false });
  });

  test('app role cannot read keys', async () => {
    expect(await sqlStateOf(appClient, `SELECT key FROM ${privacySchema}.keys`)).toBe('42501');
  });

  test('app role cannot read state', async () => {
    expect(await sqlStateOf(appClient, `SELECT * FROM ${privacySchema}.state`)).toBe('42501');
  });

  test('app role cannot call pseudonym', async () => {
    expect(await sqlStateOf(appClient, `SELECT ${privacySchema}.pseudonym($1)`, [randomUUID()])).toBe('42501');
  });

  test('app role cannot call is_pseudonym', async () => {
    expect(await sqlStateOf(appClient, `SELECT ${privacySchema}.is_pseudonym($1)`, [randomUUID()])).toBe('42501');
  });

  test('app role cannot call trigger functions', async () => {
    const { rows } = await coder.client.query<{ name: string }>(
      "SELECT proname AS name FROM pg_proc WHERE pronamespace = $1::regnamespace AND prorettype = 'trigger'::regtype ORDER BY proname",
      [privacySchema],
    );
    expect(rows.map((row) => row.name)).toEqual([
      'enforce_template_usage_stats',
      'enforce_template_usage_stats_session_apps',
      'enforce_workspace_agent_stats',
      'enforce_workspace_app_stats',
    ]);

    for (const { name } of rows) {
      expect({ name, sqlState: await sqlStateOf(appClient, `SELECT ${privacySchema}.${name}()`) }).toEqual({ name, sqlState: '42501' });
    }
  });

  test('schema USAGE alone opens nothing', async () => {
    // Tables grant nothing to PUBLIC, and the functions have EXECUTE revoked
    // from PUBLIC, so a role granted USAGE on the schema by mistake still
    // can neither read the key nor compute a pseudonym.
    const reader = await createLoginRole('schema_user', coder.database);
    await coder.client.query(`GRANT USAGE ON SCHEMA ${privacySchema} TO "${reader.name}"`);
    const client = await reader.connect();
    try {
      expect(await sqlStateOf(client, `SELECT key FROM ${privacySchema}.keys`)).toBe('42501');
      expect(await sqlStateOf(client, `SELECT * FROM ${privacySchema}.state`)).toBe('42501');
      expect(await sqlStateOf(client, `SELECT ${privacySchema}.pseudonym($1)`, [randomUUID()])).toBe('42501');
      expect(await sqlStateOf(client, `SELECT ${privacySchema}.is_pseudonym($1)`, [randomUUID()])).toBe('42501');
    } finally {
      await client.end();
      await coder.client.query(`REVOKE USAGE ON SCHEMA ${privacySchema} FROM "${reader.name}"`);
      await reader.drop();
    }
  });

  test('app role writes pseudonyms', async () => {
    const userId = coder.population.users[0].id;

    const stored = await writeAgentStat(appClient, userId);

    expect(stored).toBe((await pseudonymsOf(coder.client, [userId]))[0]);
  });

  test('shadow objects on search_path are ignored', async () => {
    // Coder's role usually has CREATE on its database, because coder server
    // runs its own migrations. The shadow objects copy the names of the
    // functions, operators, types and tables that the enforcement functions
    // use, and the search path puts them before pg_catalog. The trigger
    // functions run with the writer's search path and name every object
    // with its schema; the other functions fix their own search path.
    await coder.client.query(`GRANT CREATE ON DATABASE "${coder.database.name}" TO "${app.name}"`);
    const attacker = await app.connect();
    const shadowKey = `\\x${'00'.repeat(32)}`;
    const shadowPseudonym = '00000000-0000-8000-8000-000000000000';
    try {
      await attacker.query(`
        CREATE SCHEMA shadow;
        CREATE TABLE shadow.keys (id integer, key bytea, fingerprint text, created_at timestamptz);
        INSERT INTO shadow.keys VALUES (1, '${shadowKey}', 'shadow', now());
        CREATE FUNCTION shadow.hmac(bytea, bytea, text) RETURNS bytea LANGUAGE sql AS $$ SELECT '${shadowKey}'::pg_catalog.bytea $$;
        CREATE FUNCTION shadow.pseudonym(uuid) RETURNS uuid LANGUAGE sql AS $$ SELECT '${shadowPseudonym}'::uuid $$;
        CREATE FUNCTION shadow.is_pseudonym(uuid) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
        CREATE FUNCTION shadow.uuid_send(uuid) RETURNS bytea LANGUAGE sql AS $$ SELECT '${shadowKey}'::pg_catalog.bytea $$;
        CREATE FUNCTION shadow.encode(bytea, text) RETURNS text LANGUAGE sql AS $$ SELECT replace('${shadowPseudonym}', '-', '') $$;
        CREATE FUNCTION shadow.decode(text, text) RETURNS bytea LANGUAGE sql AS $$ SELECT '${shadowKey}'::pg_catalog.bytea $$;
        CREATE FUNCTION shadow.get_byte(bytea, integer) RETURNS integer LANGUAGE sql AS $$ SELECT 128 $$;
        CREATE FUNCTION shadow.set_byte(bytea, integer, integer) RETURNS bytea LANGUAGE sql AS $$ SELECT '${shadowKey}'::pg_catalog.bytea $$;
        CREATE FUNCTION shadow.substr(bytea, integer, integer) RETURNS bytea LANGUAGE sql AS $$ SELECT '${shadowKey}'::pg_catalog.bytea $$;
        CREATE FUNCTION shadow.eight(integer, integer) RETURNS integer LANGUAGE sql AS $$ SELECT 8 $$;
        CREATE FUNCTION shadow.always(integer, integer) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
        CREATE FUNCTION shadow.never(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
        CREATE FUNCTION shadow.zeros(bytea, bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT '${shadowKey}'::pg_catalog.bytea $$;
        CREATE OPERATOR shadow.>> (LEFTARG = integer, RIGHTARG = integer, FUNCTION = shadow.eight);
        CREATE OPERATOR shadow.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = shadow.always);
        CREATE OPERATOR shadow.<> (LEFTARG = integer, RIGHTARG = integer, FUNCTION = shadow.always);
        CREATE OPERATOR shadow.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = shadow.never);
        CREATE OPERATOR shadow.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = shadow.never);
        CREATE OPERATOR shadow.|| (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = shadow.zeros);
        CREATE TEMP TABLE keys (id integer, key bytea, fingerprint text, created_at timestamptz);
        INSERT INTO pg_temp.keys VALUES (1, '${shadowKey}', 'shadow', now());
        CREATE FUNCTION pg_temp.is_pseudonym(uuid) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
        CREATE FUNCTION pg_temp.hmac(bytea, bytea, text) RETURNS bytea LANGUAGE sql AS $$ SELECT '${shadowKey}'::pg_catalog.bytea $$;
        CREATE DOMAIN pg_temp.bytea AS text;
        SET search_path = shadow, pg_temp, pg_catalog, public;
      `);
      const { rows: resolved } = await attacker.query<{ pseudonym: string }>('SELECT pseudonym($1)::text AS pseudonym', [randomUUID()]);
      const { rows: versionTest } = await attacker.query<{ passes: boolean }>('SELECT get_byte(uuid_send($1::pg_catalog.uuid), 6) >> 4 = 8 AS passes', [randomUUID()]);
      expect(resolved[0].pseudonym).toBe(shadowPseudonym);
      expect(versionTest[0].passes).toBe(true);
      const agentUser = coder.population.users[1].id;
      const appUser = coder.population.users[2].id;

      const storedAgent = await writeAgentStat(attacker, agentUser);
      const session = appSession(appUser);
      const upserted = await upsertAppStats(attacker, [session]);

      const [agentPseudonym, appPseudonym] = await pseudonymsOf(coder.client, [agentUser, appUser]);
      expect(storedAgent).toBe(agentPseudonym);
      expect(upserted.rows).toBe(1);
      const { rows } = await coder.client.query<{ user_id: string }>('SELECT user_id::text FROM workspace_app_stats WHERE session_id = $1', [session.sessionId]);
      expect(rows).toEqual([{ user_id: appPseudonym }]);
    } finally {
      await attacker.end();
    }
  });

  test('key in no setting', async () => {
    const key = await readNewestKey(coder.client);
    const fresh = await coder.database.connect();
    try {
      // NOTE: a custom (placeholder) setting made with SET or set_config is
      // hidden from pg_settings, and no catalog lists it. Such a setting is
      // caught only when its value appears in a statement, by the log test.
      const sessions = { apply: coder.client, fresh };
      for (const [session, client] of Object.entries(sessions)) {
        const { rows } = await client.query<{ name: string; setting: string | null }>('SELECT name, setting FROM pg_settings');
        expect({ session, settings: rows.length > 100 }).toEqual({ session, settings: true });
        expect({ session, leaking: rows.filter((row) => row.setting !== null && containsKey(key, row.setting)).map((row) => row.name) }).toEqual({ session, leaking: [] });
      }
      const { rows: stored } = await coder.client.query<{ setconfig: string[] | null }>('SELECT setconfig FROM pg_db_role_setting');
      const { rows: files } = await coder.client.query<{ name: string; setting: string | null }>('SELECT name, setting FROM pg_file_settings');

      expect(stored.some((row) => (row.setconfig ?? []).some((entry) => containsKey(key, entry)))).toBe(false);
      expect(files.filter((row) => row.setting !== null && containsKey(key, row.setting)).map((row) => row.name)).toEqual([]);
    } finally {
      await fresh.end();
    }
  });

  test('key in no function body', async () => {
    const key = await readNewestKey(coder.client);

    const { rows } = await coder.client.query<{ name: string; source: string | null; config: string[] | null }>(
      'SELECT oid::regprocedure::text AS name, prosrc AS source, proconfig AS config FROM pg_proc',
    );

    expect(rows.some((row) => row.name.startsWith(`${privacySchema}.pseudonym(`))).toBe(true);
    expect(rows.filter((row) => containsKey(key, row.source ?? '')).map((row) => row.name)).toEqual([]);
    expect(rows.filter((row) => (row.config ?? []).some((entry) => containsKey(key, entry))).map((row) => row.name)).toEqual([]);
  });

  test('key in no comment or trigger argument', async () => {
    const key = await readNewestKey(coder.client);

    const { rows: comments } = await coder.client.query<{ description: string }>('SELECT description FROM pg_description');
    const { rows: triggers } = await coder.client.query<{ name: string; args: Buffer }>('SELECT tgname AS name, tgargs AS args FROM pg_trigger');

    expect(comments.some((row) => containsKey(key, row.description))).toBe(false);
    expect(triggers.filter((row) => containsKey(key, row.args)).map((row) => row.name)).toEqual([]);
  });

  test('key in no applied statement', async () => {
    const key = await readNewestKey(coder.client);

    expect(applied.statements.length).toBeGreaterThan(0);
    expect(applied.statements.filter((statement) => containsKey(key, statement.sql + JSON.stringify(statement.params))).map((statement) => statement.template)).toEqual([]);
  });

  test('key in no column statistics', async () => {
    // The key table has one row per key and the newest is in use, so a
    // second key is a state the schema provides for. ANALYZE, run by hand or
    // by maintenance jobs, samples column values into pg_statistic.
    const { rows: added } = await coder.client.query<{ id: number }>(
      `INSERT INTO ${privacySchema}.keys (key, fingerprint)
       VALUES (decode(md5(random()::text) || md5(random()::text), 'hex'), 'second test key')
       RETURNING id`,
    );
    try {
      const { rows: keys } = await coder.client.query<{ key: Buffer }>(`SELECT key FROM ${privacySchema}.keys`);
      await coder.client.query(`ANALYZE ${privacySchema}.keys`);

      const { rows } = await coder.client.query<{ statistics: string }>(
        `SELECT concat_ws(' ', s.stavalues1, s.stavalues2, s.stavalues3, s.stavalues4, s.stavalues5) AS statistics
         FROM pg_statistic AS s
         WHERE s.starelid = $1::regclass`,
        [`${privacySchema}.keys`],
      );

      expect(keys).toHaveLength(2);
      expect(rows.length).toBeGreaterThan(0);
      expect(keys.some(({ key }) => rows.some((row) => containsKey(key, row.statistics)))).toBe(false);
    } finally {
      await coder.client.query(`DELETE FROM ${privacySchema}.keys WHERE id = $1`, [added[0].id]);
      await coder.client.query(`ANALYZE ${privacySchema}.keys`);
    }
  });

  const logPath = serverLogPath();
  const logTest = logPath ? test : test.skip;
  const logTestName = logPath ? 'key in no server log line' : 'key in no server log line (skipped: DATABASE_URL is set, so the tests have no server log file to read)';

  logTest(logTestName, async () => {
    // Exercise what touches the key after apply: writes through the
    // triggers, pseudonyms computed directly, and status with its fingerprint.
    await writeAgentStat(appClient, coder.population.users[3].id);
    await upsertAppStats(appClient, [appSession(coder.population.users[3].id)]);
    await pseudonymsOf(coder.client, [randomUUID()]);
    const status = await readStatus(coder.client, { schema: privacySchema, profile: 'coder', counts: true });
    expect(status.keys).toHaveLength(1);
    const marker = `insights-privacy log marker ${randomBytes(8).toString('hex')}`;
    await coder.client.query(`SELECT '${marker}' AS marker`);
    const key = await readNewestKey(coder.client);

    const log = await readLogThrough(logPath as string, marker);

    expect(log.includes(Buffer.from(`${coder.database.name}`))).toBe(true);
    expect(containsKey(key, log)).toBe(false);
  });
});
