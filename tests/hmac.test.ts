import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import type { ApplyResult } from '../src/commands/apply.js';
import type { StatusReport } from '../src/commands/status.js';
import { pseudonymFunctions } from '../src/core/enforcement.js';
import { ExitCode } from '../src/core/errors.js';
import { insertAgentStats, type AgentStatRow, type FixtureWorkspace } from '../src/fixture/index.js';
import { runCliCaptured, type CliRun } from './support/cli.js';
import { createCoderDatabase, createLoginRole, grantOnUsageTables, privacySchema, pseudonymsOf, readNewestKey, type CoderDatabase } from './support/coder.js';
import { pgcryptoAvailable } from './support/database.js';

// Keys are read here as the superuser only to compare them, and are never
// printed: assertions on them compare booleans or counts.

// The pseudonym construction is a compatibility contract, so the label is
// written out here instead of being taken from the code.
const expectedLabel = 'insights-privacy:user_id:v1\n';

const ascii = (text: string) => Buffer.from(text, 'ascii');
const hex = (digits: string) => Buffer.from(digits, 'hex');

/**
 * The HMAC-SHA-256 test vectors of RFC 4231, section 4, test cases 1 to 7.
 * Test case 5 gives only the first 128 bits of the output.
 */
const rfc4231 = [
  { testCase: 1, key: hex('0b'.repeat(20)), data: ascii('Hi There'), hmac: 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7' },
  { testCase: 2, key: ascii('Jefe'), data: ascii('what do ya want for nothing?'), hmac: '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843' },
  { testCase: 3, key: hex('aa'.repeat(20)), data: hex('dd'.repeat(50)), hmac: '773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe' },
  {
    testCase: 4,
    key: hex('0102030405060708090a0b0c0d0e0f10111213141516171819'),
    data: hex('cd'.repeat(50)),
    hmac: '82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b',
  },
  { testCase: 5, key: hex('0c'.repeat(20)), data: ascii('Test With Truncation'), hmac: 'a3b6167473100ee06e0c796c2955552b' },
  {
    testCase: 6,
    key: hex('aa'.repeat(131)),
    data: ascii('Test Using Larger Than Block-Size Key - Hash Key First'),
    hmac: '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54',
  },
  {
    testCase: 7,
    key: hex('aa'.repeat(131)),
    data: ascii('This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.'),
    hmac: '9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2',
  },
];

function formatUuid(bytes: Buffer): string {
  const digits = bytes.toString('hex');
  return `${digits.slice(0, 8)}-${digits.slice(8, 12)}-${digits.slice(12, 16)}-${digits.slice(16, 20)}-${digits.slice(20)}`;
}

/** Computes a pseudonym with Node's HMAC-SHA256: the first 16 bytes of the digest, version 8, variant 10. */
function nodePseudonym(key: Buffer, id: string): string {
  const message = Buffer.concat([Buffer.from(expectedLabel, 'utf8'), hex(id.replace(/-/g, ''))]);
  const bytes = Buffer.from(createHmac('sha256', key).update(message).digest().subarray(0, 16));
  bytes[6] = (bytes[6] & 0x0f) | 0x80;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  return formatUuid(bytes);
}

/** Returns K' XOR the pad byte, K' being the key zero-padded to 64 bytes (hashed first when longer). */
function nodeKeyPad(key: Buffer, pad: number): Buffer {
  const block = Buffer.alloc(64);
  (key.length > 64 ? createHash('sha256').update(key).digest() : key).copy(block);
  return Buffer.from(block.map((byte) => byte ^ pad));
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

async function scalar<T>(client: pg.ClientBase, sql: string, params: unknown[] = []): Promise<T> {
  const { rows } = await client.query<{ value: T }>(sql, params);
  return rows[0].value;
}

let workDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-hmac-'));
});

afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/** Runs the command line in-process, with an empty environment unless `env` is given. */
const runTool = (argv: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Promise<CliRun> => runCliCaptured(argv, { env, cwd: cwd ?? workDir });

/** Runs `apply --mode anonymize --yes --json` with extra options, and expects success. */
async function applyAnonymize(url: string, ...options: string[]): Promise<ApplyResult> {
  const run = await runTool(['apply', '--mode', 'anonymize', '--yes', '--json', '--database-url', url, ...options]);
  if (run.code !== ExitCode.ok) throw new Error(`apply ${options.join(' ')} exited with ${run.code}: ${run.stderr}`);
  return JSON.parse(run.stdout) as ApplyResult;
}

/** Runs `status --json` and returns the report and the exit code. */
async function status(url: string, ...options: string[]): Promise<{ code: number; report: StatusReport }> {
  const run = await runTool(['status', '--json', '--database-url', url, ...options]);
  if (run.code === ExitCode.error) throw new Error(`status exited with ${run.code}: ${run.stderr}`);
  return { code: run.code, report: JSON.parse(run.stdout) as StatusReport };
}

function agentRows(workspace: FixtureWorkspace, userIds: readonly string[], createdAt: Date): AgentStatRow[] {
  return userIds.map((userId) => ({
    id: randomUUID(),
    createdAt,
    userId,
    agentId: workspace.agentId,
    workspaceId: workspace.id,
    templateId: workspace.templateId,
    connectionCount: 1,
    sessionCounts: {},
  }));
}

/**
 * Writes one agent report per user id through the trigger, stamped
 * `createdAt`, and returns the stored user ids, in input order.
 */
async function writeThroughTrigger(coder: CoderDatabase, userIds: readonly string[], createdAt = new Date('2024-06-01T00:00:00Z')): Promise<string[]> {
  const rows = agentRows(coder.population.workspaces[0], userIds, createdAt);
  await insertAgentStats(coder.client, coder.columnSet, rows);
  const { rows: stored } = await coder.client.query<{ user_id: string }>(
    `SELECT s.user_id::text AS user_id
     FROM unnest($1::uuid[]) WITH ORDINALITY AS input(id, position)
     JOIN workspace_agent_stats AS s ON s.id = input.id
     ORDER BY input.position`,
    [rows.map((row) => row.id)],
  );
  return stored.map((row) => row.user_id);
}

const pgcryptoTest = pgcryptoAvailable() ? test : test.skip;
const withoutPgcryptoTest = pgcryptoAvailable() ? test.skip : test;
/** Marks a test name as skipped, with the reason, on a server that lacks what it needs. */
const needsPgcrypto = (name: string) => (pgcryptoAvailable() ? name : `${name} (skipped: the server offers no pgcrypto)`);
const needsNoPgcrypto = (name: string) => (pgcryptoAvailable() ? `${name} (skipped: runs on the server without pgcrypto, npm run test:without-pgcrypto)` : name);

describe('HMAC-SHA256 functions', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('hmac_functions', '2025');
    await applyAnonymize(coder.database.url, '--hmac', 'core');
  });

  afterAll(async () => {
    await coder?.close();
  });

  test.each(rfc4231)('hmac_sha256 RFC 4231 case $testCase', async (vector) => {
    const digest = await scalar<Buffer>(coder.client, `SELECT ${privacySchema}.hmac_sha256($1, $2) AS value`, [vector.key, vector.data]);

    expect(digest.toString('hex').slice(0, vector.hmac.length)).toBe(vector.hmac);
    expect(digest).toHaveLength(32);
  });

  describe('pgcrypto', () => {
    beforeAll(async () => {
      if (pgcryptoAvailable()) await coder.client.query('CREATE SCHEMA vectors; CREATE EXTENSION pgcrypto SCHEMA vectors');
    });

    afterAll(async () => {
      if (pgcryptoAvailable()) await coder.client.query('DROP SCHEMA vectors CASCADE');
    });

    const pgcryptoEach = pgcryptoAvailable() ? test.each(rfc4231) : test.skip.each(rfc4231);
    pgcryptoEach(needsPgcrypto('hmac() RFC 4231 case $testCase'), async (vector) => {
      const digest = await scalar<Buffer>(coder.client, "SELECT vectors.hmac($2::bytea, $1::bytea, 'sha256') AS value", [vector.key, vector.data]);

      expect(digest.toString('hex').slice(0, vector.hmac.length)).toBe(vector.hmac);
    });
  });

  test('hmac_sha256 matches Node at block edges', async () => {
    const keyLengths = [0, 1, 31, 32, 63, 64, 65, 127, 128, 129, 200];
    const cases = keyLengths.flatMap((length) => [0, 1, 55, 56, 64, 300].map((messageLength) => ({ key: randomBytes(length), message: randomBytes(messageLength) })));

    const { rows } = await coder.client.query<{ digest: Buffer }>(
      `SELECT ${privacySchema}.hmac_sha256(input.key, input.message) AS digest
       FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS input(key, message, position)
       ORDER BY input.position`,
      [cases.map((item) => item.key), cases.map((item) => item.message)],
    );

    const mismatches = cases.filter((item, index) => !rows[index].digest.equals(createHmac('sha256', item.key).update(item.message).digest()));
    expect(rows).toHaveLength(cases.length);
    expect(mismatches.map((item) => `key ${item.key.length} bytes, message ${item.message.length} bytes`)).toEqual([]);
  });

  test('hmac_key_pad rejects a pad above 255', async () => {
    const failure = await coder.client.query(`SELECT ${privacySchema}.hmac_key_pad('\\x01'::bytea, 256)`).then(
      () => null,
      (error: Error & { code?: string }) => error,
    );

    expect(failure?.code).toBe('P0001');
    expect(failure?.message).toContain('got 256');
  });

  test('padded keys derive from the key', async () => {
    const { rows } = await coder.client.query<{ key: Buffer; inner: Buffer; outer: Buffer }>(
      `SELECT key, inner_key_pad AS inner, outer_key_pad AS outer FROM ${privacySchema}.keys`,
    );

    expect(rows).toHaveLength(1);
    expect(rows[0].inner.equals(nodeKeyPad(rows[0].key, 0x36))).toBe(true);
    expect(rows[0].outer.equals(nodeKeyPad(rows[0].key, 0x5c))).toBe(true);
  });

  test('padded keys for every inserted key', async () => {
    // A key inserted by any statement, not only by apply, gets its padded keys.
    const { rows: added } = await coder.client.query<{ id: number }>(
      `INSERT INTO ${privacySchema}.keys (key, fingerprint) VALUES (${privacySchema}.random_key(), 'test key') RETURNING id`,
    );
    try {
      const { rows } = await coder.client.query<{ key: Buffer; inner: Buffer; outer: Buffer }>(
        `SELECT key, inner_key_pad AS inner, outer_key_pad AS outer FROM ${privacySchema}.keys WHERE id = $1`,
        [added[0].id],
      );

      expect(rows[0].inner.equals(nodeKeyPad(rows[0].key, 0x36))).toBe(true);
      expect(rows[0].outer.equals(nodeKeyPad(rows[0].key, 0x5c))).toBe(true);
    } finally {
      await coder.client.query(`DELETE FROM ${privacySchema}.keys WHERE id = $1`, [added[0].id]);
    }
  });

  test('padded keys have statistics target 0', async () => {
    const { rows } = await coder.client.query<{ name: string; target: number }>(
      `SELECT attname AS name, attstattarget AS target FROM pg_catalog.pg_attribute
       WHERE attrelid = $1::regclass AND attname IN ('key', 'inner_key_pad', 'outer_key_pad')
       ORDER BY attname`,
      [`${privacySchema}.keys`],
    );

    expect(rows).toEqual([
      { name: 'inner_key_pad', target: 0 },
      { name: 'key', target: 0 },
      { name: 'outer_key_pad', target: 0 },
    ]);
  });

  test('padded keys in no column statistics', async () => {
    const { rows: added } = await coder.client.query<{ id: number }>(
      `INSERT INTO ${privacySchema}.keys (key, fingerprint) VALUES (${privacySchema}.random_key(), 'second test key') RETURNING id`,
    );
    try {
      await coder.client.query(`ANALYZE ${privacySchema}.keys`);
      const { rows: pads } = await coder.client.query<{ pad: Buffer }>(
        `SELECT inner_key_pad AS pad FROM ${privacySchema}.keys UNION ALL SELECT outer_key_pad FROM ${privacySchema}.keys`,
      );
      const { rows } = await coder.client.query<{ statistics: string }>(
        `SELECT concat_ws(' ', s.stavalues1, s.stavalues2, s.stavalues3, s.stavalues4, s.stavalues5) AS statistics
         FROM pg_catalog.pg_statistic AS s WHERE s.starelid = $1::regclass`,
        [`${privacySchema}.keys`],
      );

      expect(pads).toHaveLength(4);
      expect(rows.length).toBeGreaterThan(0);
      expect(pads.some(({ pad }) => rows.some((row) => row.statistics.toLowerCase().includes(pad.toString('hex'))))).toBe(false);
    } finally {
      await coder.client.query(`DELETE FROM ${privacySchema}.keys WHERE id = $1`, [added[0].id]);
      await coder.client.query(`ANALYZE ${privacySchema}.keys`);
    }
  });

  test('schema USAGE opens no HMAC function or pad', async () => {
    const reader = await createLoginRole('hmac_reader', coder.database);
    await coder.client.query(`GRANT USAGE ON SCHEMA ${privacySchema} TO "${reader.name}"`);
    const client = await reader.connect();
    try {
      const attempts = {
        hmac_sha256: `SELECT ${privacySchema}.hmac_sha256('\\x01'::bytea, '\\x02'::bytea)`,
        hmac_key_pad: `SELECT ${privacySchema}.hmac_key_pad('\\x01'::bytea, 54)`,
        random_key: `SELECT ${privacySchema}.random_key()`,
        inner_key_pad: `SELECT inner_key_pad FROM ${privacySchema}.keys`,
        outer_key_pad: `SELECT outer_key_pad FROM ${privacySchema}.keys`,
      };
      for (const [object, sql] of Object.entries(attempts)) {
        expect({ object, sqlState: await sqlStateOf(client, sql) }).toEqual({ object, sqlState: '42501' });
      }
    } finally {
      await client.end();
      await coder.client.query(`REVOKE USAGE ON SCHEMA ${privacySchema} FROM "${reader.name}"`);
      await reader.drop();
    }
  });
});

describe('core implementation', () => {
  let coder: CoderDatabase;
  let applied: ApplyResult;

  beforeAll(async () => {
    coder = await createCoderDatabase('hmac_core', '2026');
    applied = await applyAnonymize(coder.database.url, '--hmac', 'core');
  });

  afterAll(async () => {
    await coder?.close();
  });

  test('apply reports core', () => {
    expect(applied.outcome).toBe('applied');
    expect(applied.hmac).toBe('core');
    expect(applied.summary).toContain('Pseudonyms are computed with HMAC-SHA256 from core sha256().');
  });

  test('pseudonyms match Node HMAC', async () => {
    const key = await readNewestKey(coder.client);
    const ids = Array.from({ length: 250 }, () => randomUUID());

    const computed = await pseudonymsOf(coder.client, ids);
    const stored = await writeThroughTrigger(coder, ids);

    const expected = ids.map((id) => nodePseudonym(key, id));
    expect(computed).toEqual(expected);
    expect(stored).toEqual(expected);
  });

  test('installs no extension', async () => {
    const extensions = await scalar<string[]>(coder.client, 'SELECT array_agg(extname::text ORDER BY extname) AS value FROM pg_catalog.pg_extension');

    expect(extensions).toEqual(['plpgsql']);
  });

  test('key is 32 bytes with its fingerprint', async () => {
    const { rows } = await coder.client.query<{ length: number; matches: boolean }>(
      `SELECT octet_length(key) AS length,
              fingerprint = encode(substr(sha256(convert_to('insights-privacy key fingerprint', 'UTF8') || key), 1, 8), 'hex') AS matches
       FROM ${privacySchema}.keys`,
    );

    expect(rows).toEqual([{ length: 32, matches: true }]);
  });

  test('random_key gives distinct random keys', async () => {
    const { rows } = await coder.client.query<{ key: Buffer }>(`SELECT ${privacySchema}.random_key() AS key FROM generate_series(1, 400)`);
    const installed = await readNewestKey(coder.client);

    const lengths = new Set(rows.map((row) => row.key.length));
    const distinct = new Set(rows.map((row) => row.key.toString('hex')));
    let ones = 0;
    for (const { key } of rows) for (const byte of key) for (let bit = 0; bit < 8; bit += 1) ones += (byte >> bit) & 1;
    const bits = rows.length * 32 * 8;

    expect([...lengths]).toEqual([32]);
    expect(distinct.size).toBe(rows.length);
    expect(distinct.has(installed.toString('hex'))).toBe(false);
    // 102,400 fair bits give a share of ones within 0.5 ± 0.0016 (one
    // standard deviation); 0.49 to 0.51 fails only a broken source.
    expect(ones / bits).toBeGreaterThan(0.49);
    expect(ones / bits).toBeLessThan(0.51);
  });

  test('state records core', async () => {
    expect(await scalar<string>(coder.client, `SELECT options->>'hmac' AS value FROM ${privacySchema}.state`)).toBe('core');
  });

  test('status reports core sha256()', async () => {
    const { code, report } = await status(coder.database.url, '--check', '--no-counts');
    const text = await runTool(['status', '--no-counts', '--database-url', coder.database.url]);

    expect(code).toBe(ExitCode.ok);
    expect(report.hmac).toBe('core sha256()');
    expect(report.findings).toEqual([]);
    expect(text.stdout).toContain('HMAC:         core sha256()');
  });

  test('second apply changes nothing', async () => {
    const again = await applyAnonymize(coder.database.url, '--hmac', 'core');

    expect(again.outcome).toBe('unchanged');
  });

  test('shadow sha256 is ignored', async () => {
    // A writer with CREATE on the database puts functions and an operator
    // named like those of the core HMAC before pg_catalog on its search
    // path. The trigger functions, which run with that search path, name
    // every one with its schema, so they never call the shadows.
    const writer = await createLoginRole('hmac_writer', coder.database);
    await grantOnUsageTables(coder.client, '2026', writer.name, ['INSERT', 'SELECT']);
    await coder.client.query(`GRANT CREATE ON DATABASE "${coder.database.name}" TO "${writer.name}"`);
    const client = await writer.connect();
    const zeros = `'\\x${'00'.repeat(32)}'::bytea`;
    try {
      await client.query(`
        CREATE SCHEMA shadow;
        CREATE FUNCTION shadow.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT ${zeros} $$;
        CREATE FUNCTION shadow.uuid_send(uuid) RETURNS bytea LANGUAGE sql AS $$ SELECT ${zeros} $$;
        CREATE FUNCTION shadow.convert_to(text, name) RETURNS bytea LANGUAGE sql AS $$ SELECT ${zeros} $$;
        CREATE FUNCTION shadow.decode(text, text) RETURNS bytea LANGUAGE sql AS $$ SELECT ${zeros} $$;
        CREATE FUNCTION shadow.zeros(bytea, bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT ${zeros} $$;
        CREATE OPERATOR shadow.|| (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = shadow.zeros);
        SET search_path = shadow, pg_catalog, public;
      `);
      const shadowed = await scalar<string>(client, "SELECT encode(sha256('\\x01'::bytea), 'hex') AS value");
      const key = await readNewestKey(coder.client);
      const workspace = coder.population.workspaces[0];
      const id = randomUUID();
      const userId = randomUUID();

      await client.query(
        `INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, template_id, connection_count, session_counts)
         VALUES ($1, now(), $2, $3, $4, $5, 1, '{}')`,
        [id, userId, workspace.agentId, workspace.id, workspace.templateId],
      );

      expect(shadowed).toBe('00'.repeat(32));
      expect(await scalar<string>(coder.client, 'SELECT user_id::text AS value FROM workspace_agent_stats WHERE id = $1', [id])).toBe(nodePseudonym(key, userId));
    } finally {
      await client.end();
      await coder.client.query(`DROP SCHEMA shadow CASCADE; REVOKE CREATE ON DATABASE "${coder.database.name}" FROM "${writer.name}"`);
      await coder.client.query(`REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "${writer.name}"; REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM "${writer.name}"`);
      await writer.drop();
    }
  });

  test('drift: pgcrypto body under core', async () => {
    // The pgcrypto pseudonym function is valid PL/pgSQL even where pgcrypto
    // is missing, because PL/pgSQL resolves function calls at run time.
    const other = pseudonymFunctions(privacySchema, 'pgcrypto', { schema: 'public', create: false }).find((fn) => fn.name === 'pseudonym');
    for (const statement of other?.statements ?? []) await coder.client.query(statement.sql);

    const drifted = await status(coder.database.url, '--check', '--no-counts');
    const repaired = await applyAnonymize(coder.database.url, '--hmac', 'core');
    const after = await status(coder.database.url, '--check', '--no-counts');

    expect(other).toBeDefined();
    expect(drifted.code).toBe(ExitCode.checkFailed);
    expect(drifted.report.findings.map((finding) => `${finding.object} ${finding.problem}`)).toEqual([
      `${privacySchema}.pseudonym() has a body that differs from what this version of insights-privacy installs (replaced or edited)`,
    ]);
    expect(repaired.outcome).toBe('applied');
    expect(after.code).toBe(ExitCode.ok);
  });

  test('drift: dropped padded-key column', async () => {
    const key = await readNewestKey(coder.client);
    const id = randomUUID();
    await coder.client.query(`ALTER TABLE ${privacySchema}.keys DROP COLUMN outer_key_pad`);

    const drifted = await status(coder.database.url, '--check', '--no-counts');
    const failedWrite = await sqlStateOf(coder.client, `SELECT ${privacySchema}.pseudonym($1)`, [id]);
    const repaired = await applyAnonymize(coder.database.url, '--hmac', 'core');
    const after = await status(coder.database.url, '--check', '--no-counts');

    expect(drifted.code).toBe(ExitCode.checkFailed);
    expect(drifted.report.findings.map((finding) => `${finding.object} ${finding.problem}`)).toEqual([
      `${privacySchema}.keys lacks the generated column(s) outer_key_pad that the core HMAC implementation reads; every write to a protected table fails`,
    ]);
    expect(failedWrite).toBe('42703');
    expect(repaired.outcome).toBe('applied');
    expect(after.code).toBe(ExitCode.ok);
    expect(await pseudonymsOf(coder.client, [id])).toEqual([nodePseudonym(key, id)]);
  });
});

describe('switching implementations', () => {
  let coder: CoderDatabase;
  let ids: string[];
  let firstPseudonyms: string[];
  let fingerprint: string;
  let key: Buffer;

  beforeAll(async () => {
    coder = await createCoderDatabase('hmac_switch', '2026');
    ids = Array.from({ length: 200 }, () => randomUUID());
  });

  afterAll(async () => {
    await coder?.close();
  });

  /** Lists the schema of pgcrypto in the database: one entry, or none when it is not installed. */
  async function pgcryptoSchemas(): Promise<string[]> {
    const { rows } = await coder.client.query<{ schema: string }>(
      "SELECT extnamespace::regnamespace::text AS schema FROM pg_catalog.pg_extension WHERE extname = 'pgcrypto'",
    );
    return rows.map((row) => row.schema);
  }

  pgcryptoTest(needsPgcrypto('pgcrypto pseudonyms match Node'), async () => {
    const result = await applyAnonymize(coder.database.url, '--hmac', 'pgcrypto');
    key = await readNewestKey(coder.client);
    fingerprint = (await status(coder.database.url, '--no-counts')).report.keys[0].fingerprint;

    firstPseudonyms = await writeThroughTrigger(coder, ids);

    expect(result.hmac).toBe('pgcrypto');
    expect(await pgcryptoSchemas()).toEqual([privacySchema]);
    expect(firstPseudonyms).toEqual(ids.map((id) => nodePseudonym(key, id)));
    expect(await pseudonymsOf(coder.client, ids)).toEqual(firstPseudonyms);
  });

  pgcryptoTest(needsPgcrypto('switch to core keeps pseudonyms'), async () => {
    const result = await applyAnonymize(coder.database.url, '--hmac', 'core');
    const { report } = await status(coder.database.url, '--check', '--no-counts');

    const stored = await writeThroughTrigger(coder, ids);

    expect(result.outcome).toBe('applied');
    expect(result.summary).toContain(`HMAC implementation: pgcrypto (schema ${privacySchema}) -> core sha256(); the keys stay, so every pseudonym stays the same.`);
    expect(report.hmac).toBe('core sha256()');
    expect(report.findings).toEqual([]);
    expect(report.keys.map((entry) => entry.fingerprint)).toEqual([fingerprint]);
    expect((await readNewestKey(coder.client)).equals(key)).toBe(true);
    // The tool created pgcrypto in its own schema, and core needs none.
    expect(await pgcryptoSchemas()).toEqual([]);
    expect(stored).toEqual(firstPseudonyms);
    expect(await pseudonymsOf(coder.client, ids)).toEqual(firstPseudonyms);
  });

  pgcryptoTest(needsPgcrypto('switch back keeps pseudonyms'), async () => {
    const result = await applyAnonymize(coder.database.url, '--hmac', 'pgcrypto');
    const { report } = await status(coder.database.url, '--check', '--no-counts');

    const stored = await writeThroughTrigger(coder, ids);

    expect(result.outcome).toBe('applied');
    expect(result.summary).toContain(`HMAC implementation: core sha256() -> pgcrypto (schema ${privacySchema}); the keys stay, so every pseudonym stays the same.`);
    expect(report.hmac).toBe(`pgcrypto (schema ${privacySchema})`);
    expect(report.findings).toEqual([]);
    expect(report.keys.map((entry) => entry.fingerprint)).toEqual([fingerprint]);
    expect(await pgcryptoSchemas()).toEqual([privacySchema]);
    expect(await scalar<string>(coder.client, `SELECT options->>'hmac' AS value FROM ${privacySchema}.state`)).toBe('pgcrypto');
    expect(stored).toEqual(firstPseudonyms);
    expect(await pseudonymsOf(coder.client, ids)).toEqual(firstPseudonyms);
  });
});

describe('hmac auto', () => {
  let coder: CoderDatabase;

  beforeEach(async () => {
    coder = await createCoderDatabase('hmac_auto', '2025');
  });

  afterEach(async () => {
    await coder?.close();
  });

  test('picks pgcrypto when offered, else core', async () => {
    const result = await applyAnonymize(coder.database.url);
    const { report } = await status(coder.database.url, '--no-counts');

    expect(result.hmac).toBe(pgcryptoAvailable() ? 'pgcrypto' : 'core');
    expect(report.hmac).toBe(pgcryptoAvailable() ? `pgcrypto (schema ${privacySchema})` : 'core sha256()');
  });

  pgcryptoTest(needsPgcrypto('leaves a pgcrypto it did not create'), async () => {
    await coder.client.query('CREATE EXTENSION pgcrypto SCHEMA public');
    const key = await applyAnonymize(coder.database.url).then(() => readNewestKey(coder.client));
    const id = randomUUID();

    const result = await applyAnonymize(coder.database.url, '--hmac', 'core');

    expect(result.hmac).toBe('core');
    expect(await scalar<string>(coder.client, "SELECT extnamespace::regnamespace::text AS value FROM pg_catalog.pg_extension WHERE extname = 'pgcrypto'")).toBe('public');
    expect(await pseudonymsOf(coder.client, [id])).toEqual([nodePseudonym(key, id)]);
  });

  pgcryptoTest(needsPgcrypto('switch keeps period keys'), async () => {
    // Under a period policy, key_id() makes each month's key on first use,
    // with random_key() of the implementation installed at that moment.
    const months = [new Date('2024-01-15T00:00:00Z'), new Date('2024-02-15T00:00:00Z'), new Date('2024-03-15T00:00:00Z')];
    const ids = Array.from({ length: 20 }, () => randomUUID());
    await applyAnonymize(coder.database.url, '--hmac', 'pgcrypto', '--rotate', 'monthly');
    const january = await writeThroughTrigger(coder, ids, months[0]);

    const result = await applyAnonymize(coder.database.url, '--hmac', 'core', '--rotate', 'monthly');
    const januaryAgain = await writeThroughTrigger(coder, ids, months[0]);
    const february = await writeThroughTrigger(coder, ids, months[1]);
    await applyAnonymize(coder.database.url, '--hmac', 'pgcrypto', '--rotate', 'monthly');
    const februaryAgain = await writeThroughTrigger(coder, ids, months[1]);
    const march = await writeThroughTrigger(coder, ids, months[2]);

    const keyOf = (month: Date) =>
      scalar<Buffer>(coder.client, `SELECT key AS value FROM ${privacySchema}.keys WHERE policy = 'monthly' AND valid_from = date_trunc('month', $1::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`, [month]);
    const expected = async (month: Date) => {
      const key = await keyOf(month);
      return ids.map((id) => nodePseudonym(key, id));
    };
    expect(result.hmac).toBe('core');
    expect(january).toEqual(await expected(months[0]));
    expect(januaryAgain).toEqual(january);
    expect(february).toEqual(await expected(months[1]));
    expect(februaryAgain).toEqual(february);
    expect(march).toEqual(await expected(months[2]));
    expect(new Set([january[0], february[0], march[0]]).size).toBe(3);
  });

  pgcryptoTest(needsPgcrypto('upgrade adds padded keys'), async () => {
    // An installation made before the core implementation existed: pgcrypto,
    // no padded-key columns, no HMAC helpers, no hmac in the state, and no
    // state digest, which came later still.
    await applyAnonymize(coder.database.url, '--hmac', 'pgcrypto');
    const key = await readNewestKey(coder.client);
    const ids = Array.from({ length: 20 }, () => randomUUID());
    await coder.client.query(`
      ALTER TABLE ${privacySchema}.keys DROP COLUMN inner_key_pad, DROP COLUMN outer_key_pad;
      DROP FUNCTION ${privacySchema}.hmac_sha256(bytea, bytea), ${privacySchema}.hmac_key_pad(bytea, integer), ${privacySchema}.random_key();
      UPDATE ${privacySchema}.state SET options = options - 'hmac', digest = NULL;
    `);
    const before = await status(coder.database.url, '--no-counts');

    const result = await applyAnonymize(coder.database.url, '--hmac', 'core');
    const after = await status(coder.database.url, '--check', '--no-counts');

    expect(before.report.hmac).toBe(`pgcrypto (schema ${privacySchema})`);
    expect(before.report.findings.map((finding) => finding.object).sort()).toEqual(
      [`${privacySchema}.hmac_key_pad()`, `${privacySchema}.hmac_sha256()`, `${privacySchema}.random_key()`].sort(),
    );
    expect(result.outcome).toBe('applied');
    expect(after.code).toBe(ExitCode.ok);
    expect(after.report.hmac).toBe('core sha256()');
    expect(await pseudonymsOf(coder.client, ids)).toEqual(ids.map((id) => nodePseudonym(key, id)));
  });
});

describe('server without pgcrypto', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('hmac_absent', '2025');
  });

  afterAll(async () => {
    await coder?.close();
  });

  /** Returns the database's schemas, extensions and triggers, and the tool's functions and state, as one text. */
  async function snapshot(): Promise<string> {
    const catalog = await scalar<string>(
      coder.client,
      `SELECT json_build_object(
         'schemas', (SELECT json_agg(nspname::text ORDER BY nspname) FROM pg_catalog.pg_namespace),
         'extensions', (SELECT json_agg(extname::text ORDER BY extname) FROM pg_catalog.pg_extension),
         'triggers', (SELECT json_agg(name ORDER BY name) FROM (
                        SELECT tgrelid::regclass::text || ' ' || tgname AS name FROM pg_catalog.pg_trigger WHERE NOT tgisinternal) AS triggers),
         'functions', (SELECT json_agg(name ORDER BY name) FROM (
                        SELECT p.oid::regprocedure::text || ' ' || md5(p.prosrc) AS name FROM pg_catalog.pg_proc AS p
                        WHERE p.pronamespace = to_regnamespace($1)) AS functions)
       )::text AS value`,
      [privacySchema],
    );
    const hasState = await scalar<boolean>(coder.client, 'SELECT to_regclass($1) IS NOT NULL AS value', [`${privacySchema}.state`]);
    const state = hasState ? await scalar<string>(coder.client, `SELECT to_json(s)::text AS value FROM ${privacySchema}.state AS s`) : 'no state';
    return `${catalog} ${state}`;
  }

  withoutPgcryptoTest(needsNoPgcrypto('--hmac pgcrypto fails, changes nothing'), async () => {
    const before = await snapshot();

    const run = await runTool(['apply', '--mode', 'anonymize', '--hmac', 'pgcrypto', '--yes', '--database-url', coder.database.url]);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('error: The hmac setting is pgcrypto, but the pgcrypto extension is neither installed in this database nor available on the server.');
    expect(run.stderr).toContain('fix: ');
    expect(run.stderr).toContain('--hmac core');
    expect(await snapshot()).toBe(before);
    expect(await scalar<boolean>(coder.client, 'SELECT to_regnamespace($1) IS NULL AS value', [privacySchema])).toBe(true);
  });

  withoutPgcryptoTest(needsNoPgcrypto('pgcrypto from env fails over core'), async () => {
    await applyAnonymize(coder.database.url, '--hmac', 'core');
    const before = await snapshot();

    const run = await runTool(['apply', '--mode', 'anonymize', '--yes', '--database-url', coder.database.url], { INSIGHTS_PRIVACY_HMAC: 'pgcrypto' });
    const { code, report } = await status(coder.database.url, '--check', '--no-counts');

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('The hmac setting is pgcrypto');
    expect(await snapshot()).toBe(before);
    expect(code).toBe(ExitCode.ok);
    expect(report.hmac).toBe('core sha256()');
  });
});

describe('hmac setting', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await createCoderDatabase('hmac_setting', '2025');
  });

  afterAll(async () => {
    await coder?.close();
  });

  /** Runs `apply --dry-run --json` in a folder with the given config file. */
  async function dryRun(args: string[], env: NodeJS.ProcessEnv, config: Record<string, unknown>): Promise<{ run: CliRun; result: ApplyResult | null }> {
    const folder = join(workDir, randomBytes(4).toString('hex'));
    await mkdir(folder);
    await writeFile(join(folder, '.insights-privacyrc.json'), JSON.stringify(config));
    const run = await runTool(['apply', '--dry-run', '--json', '--database-url', coder.database.url, ...args], env, folder);
    return { run, result: run.code === ExitCode.ok ? (JSON.parse(run.stdout) as ApplyResult) : null };
  }

  /** Lists the templates of the pseudonym and key functions that a dry run would install. */
  const functionTemplates = (result: ApplyResult | null) =>
    [...new Set((result?.statements ?? []).map((statement) => statement.template).filter((template) => /^(pseudonym|random-key)/.test(template)))].sort();

  /** Names the HMAC that the dry run's pseudonym() computes: core sha256() on the padded keys, or pgcrypto's hmac(). */
  const pseudonymHmac = (result: ApplyResult | null) => {
    const sql = (result?.statements ?? []).filter((statement) => statement.template === 'pseudonym.sql').map((statement) => statement.sql).join('\n');
    if (sql.includes('pg_catalog.sha256(k.outer_key_pad')) return 'core';
    return sql.includes('."hmac"(') ? 'pgcrypto' : 'none found';
  };

  // Core wins in each case, so the cases run on servers with and without pgcrypto.
  test.each([
    { level: 'flag', args: ['--hmac', 'core'], env: { INSIGHTS_PRIVACY_HMAC: 'pgcrypto' }, file: { hmac: 'pgcrypto' } },
    { level: 'environment', args: [], env: { INSIGHTS_PRIVACY_HMAC: 'core' }, file: { hmac: 'pgcrypto' } },
    { level: 'config file', args: [], env: {}, file: { hmac: 'core' } },
  ])('core from $level', async (row) => {
    const { run, result } = await dryRun(['--mode', 'anonymize', ...row.args], row.env, row.file);

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.hmac).toBe('core');
    expect(functionTemplates(result)).toEqual(['pseudonym.sql', 'random-key-core.sql']);
    expect(pseudonymHmac(result)).toBe('core');
  });

  test('default is auto', async () => {
    const { run, result } = await dryRun(['--mode', 'anonymize'], {}, {});

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.hmac).toBe(pgcryptoAvailable() ? 'pgcrypto' : 'core');
    expect(functionTemplates(result)).toEqual(pgcryptoAvailable() ? ['pseudonym.sql', 'random-key-pgcrypto.sql'] : ['pseudonym.sql', 'random-key-core.sql']);
    expect(pseudonymHmac(result)).toBe(pgcryptoAvailable() ? 'pgcrypto' : 'core');
  });

  test('disable ignores it', async () => {
    const { run, result } = await dryRun(['--mode', 'disable', '--hmac', 'pgcrypto'], {}, {});

    expect(run.code).toBe(ExitCode.ok);
    expect(result?.hmac).toBeNull();
  });

  test('invalid flag value', async () => {
    const { run } = await dryRun(['--mode', 'anonymize', '--hmac', 'sha1'], {}, {});

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('--hmac must be one of auto, pgcrypto, core, got "sha1"');
  });

  test('invalid config value', async () => {
    const { run } = await dryRun(['--mode', 'anonymize'], {}, { hmac: 'md5' });

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('hmac: ');
    expect(run.stderr).toContain('(got "md5")');
  });
});
