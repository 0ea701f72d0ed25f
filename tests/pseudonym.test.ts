import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { domainLabel } from '../src/core/enforcement.js';
import { insertAgentStats, type AgentStatRow, type FixtureWorkspace } from '../src/fixture/index.js';
import { applyMode, createCoderDatabase, privacySchema, pseudonymPattern, pseudonymsOf, readNewestKey, usageTables, type CoderDatabase } from './support/coder.js';

// The pseudonym construction is a compatibility contract: stored pseudonyms
// only match new ones while the label and the byte layout stay the same. So
// the label is written out here instead of being taken from the code.
const expectedLabel = 'insights-privacy:user_id:v1\n';

function uuidBytes(id: string): Buffer {
  return Buffer.from(id.replace(/-/g, ''), 'hex');
}

function formatUuid(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Computes a pseudonym in Node: HMAC-SHA256 under the key over the label and
 * the 16 bytes of the id, the first 16 bytes of the digest, with the version
 * nibble set to 8 and the variant bits set to 10.
 */
function hmacPseudonym(key: Buffer, id: string): string {
  const message = Buffer.concat([Buffer.from(expectedLabel, 'utf8'), uuidBytes(id)]);
  const bytes = Buffer.from(createHmac('sha256', key).update(message).digest().subarray(0, 16));
  bytes[6] = (bytes[6] & 0x0f) | 0x80;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  return formatUuid(bytes);
}

/** Returns a random UUID whose version nibble is `version`, with random variant bits. */
function uuidWithVersion(version: number): string {
  const bytes = randomBytes(16);
  bytes[6] = (bytes[6] & 0x0f) | (version << 4);
  return formatUuid(bytes);
}

const usageStart = Date.parse('2024-06-01T00:00:00Z');
let usageBuckets = 0;

/** Where one call of `writeEveryTable` stored its rows. */
interface WrittenKeys {
  agentStatId: string;
  sessionId: string;
  startTime: Date;
}

/** One single-row INSERT into a protected table. */
interface TableInsert {
  table: string;
  sql: string;
  params: unknown[];
}

/**
 * Builds one single-row INSERT with `userId` for every protected table of the
 * 2026 column set, parents first. The session-app row's foreign key only
 * holds when it is stored with the same user id as its parent.
 */
function everyTableInserts(workspace: FixtureWorkspace, userId: string | null): { keys: WrittenKeys; inserts: TableInsert[] } {
  const keys = { agentStatId: randomUUID(), sessionId: randomUUID(), startTime: new Date(usageStart + usageBuckets++ * 30 * 60_000) };
  const inserts: TableInsert[] = [
    {
      table: 'workspace_agent_stats',
      sql: `INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, template_id, connection_count, session_counts)
            VALUES ($1, $2, $3, $4, $5, $6, 1, '{"ssh": 1}')`,
      params: [keys.agentStatId, keys.startTime, userId, workspace.agentId, workspace.id, workspace.templateId],
    },
    {
      table: 'workspace_app_stats',
      sql: `INSERT INTO workspace_app_stats (user_id, workspace_id, agent_id, access_method, slug_or_port, session_id, session_started_at, session_ended_at, requests)
            VALUES ($1, $2, $3, 'path', 'code-server', $4, $5, $5::timestamptz + interval '3 minutes', 2)`,
      params: [userId, workspace.id, workspace.agentId, keys.sessionId, keys.startTime],
    },
    {
      table: 'template_usage_stats',
      sql: `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins)
            VALUES ($1, $1::timestamptz + interval '30 minutes', $2, $3, 10)`,
      params: [keys.startTime, workspace.templateId, userId],
    },
    {
      table: 'template_usage_stats_session_apps',
      sql: `INSERT INTO template_usage_stats_session_apps (start_time, template_id, user_id, app_name, usage_mins)
            VALUES ($1, $2, $3, 'ssh', 5)`,
      params: [keys.startTime, workspace.templateId, userId],
    },
  ];
  return { keys, inserts };
}

/** Writes one row with `userId` into every protected table of the 2026 column set. */
async function writeEveryTable(client: pg.ClientBase, workspace: FixtureWorkspace, userId: string): Promise<WrittenKeys> {
  const { keys, inserts } = everyTableInserts(workspace, userId);
  for (const insert of inserts) await client.query(insert.sql, insert.params);
  return keys;
}

/** Reads the stored user id of each row that `writeEveryTable` wrote, by table. */
async function readEveryTable(client: pg.ClientBase, keys: WrittenKeys): Promise<Record<string, string[]>> {
  const read = async (sql: string, parameter: unknown) =>
    (await client.query<{ user_id: string }>(sql, [parameter])).rows.map((row) => row.user_id);
  return {
    workspace_agent_stats: await read('SELECT user_id::text FROM workspace_agent_stats WHERE id = $1', keys.agentStatId),
    workspace_app_stats: await read('SELECT user_id::text FROM workspace_app_stats WHERE session_id = $1', keys.sessionId),
    template_usage_stats: await read('SELECT user_id::text FROM template_usage_stats WHERE start_time = $1', keys.startTime),
    template_usage_stats_session_apps: await read('SELECT user_id::text FROM template_usage_stats_session_apps WHERE start_time = $1', keys.startTime),
  };
}

async function countEveryTable(client: pg.ClientBase): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const table of usageTables('2026')) {
    const { rows } = await client.query<{ count: number }>(`SELECT count(*)::integer AS count FROM ${table}`);
    counts[table] = rows[0].count;
  }
  return counts;
}

describe('pseudonyms under anonymize', () => {
  let coder: CoderDatabase;
  let key: Buffer;
  let workspace: FixtureWorkspace;

  beforeAll(async () => {
    coder = await createCoderDatabase('pseudonym', '2026');
    await applyMode(coder.client, 'anonymize');
    key = await readNewestKey(coder.client);
    workspace = coder.population.workspaces[0];
  });

  afterAll(async () => {
    await coder?.close();
  });

  test('label matches the code', () => {
    expect(domainLabel).toBe(expectedLabel);
  });

  test('function matches HMAC-SHA256 in Node', async () => {
    const versions = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15];
    const ids = [
      ...Array.from({ length: 200 }, () => randomUUID()),
      ...Array.from({ length: 60 }, (_, index) => uuidWithVersion(versions[index % versions.length])),
    ];

    const fromDatabase = await pseudonymsOf(coder.client, ids);

    expect(fromDatabase).toEqual(ids.map((id) => hmacPseudonym(key, id)));
  });

  test('function uses the newest key', async () => {
    const ids = Array.from({ length: 20 }, () => randomUUID());
    // A second key made on the server, so it never appears in a statement.
    const { rows } = await coder.client.query<{ id: number }>(
      `INSERT INTO ${privacySchema}.keys (key, fingerprint)
       VALUES (decode(md5(random()::text) || md5(random()::text), 'hex'), 'test key')
       RETURNING id`,
    );
    try {
      const newest = await readNewestKey(coder.client);

      const fromDatabase = await pseudonymsOf(coder.client, ids);

      expect(newest.equals(key)).toBe(false);
      expect(fromDatabase).toEqual(ids.map((id) => hmacPseudonym(newest, id)));
    } finally {
      await coder.client.query(`DELETE FROM ${privacySchema}.keys WHERE id = $1`, [rows[0].id]);
    }
    expect(await pseudonymsOf(coder.client, ids)).toEqual(ids.map((id) => hmacPseudonym(key, id)));
  });

  test('trigger matches HMAC-SHA256 in Node', async () => {
    // The trigger functions compute the pseudonym inline, apart from pseudonym().
    const versions = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15];
    const rows = Array.from({ length: 260 }, (_, index): AgentStatRow => ({
      id: randomUUID(),
      createdAt: new Date(usageStart),
      userId: index < 200 ? randomUUID() : uuidWithVersion(versions[index % versions.length]),
      agentId: workspace.agentId,
      workspaceId: workspace.id,
      templateId: workspace.templateId,
      connectionCount: 1,
      sessionCounts: {},
    }));

    await insertAgentStats(coder.client, '2026', rows);

    const { rows: stored } = await coder.client.query<{ user_id: string }>(
      `SELECT s.user_id::text FROM unnest($1::uuid[]) WITH ORDINALITY AS input(id, position)
       JOIN workspace_agent_stats AS s ON s.id = input.id ORDER BY input.position`,
      [rows.map((row) => row.id)],
    );
    expect(stored.map((row) => row.user_id)).toEqual(rows.map((row) => hmacPseudonym(key, row.userId)));
  });

  test('trigger uses the newest key', async () => {
    const { rows: added } = await coder.client.query<{ id: number }>(
      `INSERT INTO ${privacySchema}.keys (key, fingerprint)
       VALUES (decode(md5(random()::text) || md5(random()::text), 'hex'), 'test key')
       RETURNING id`,
    );
    try {
      const newest = await readNewestKey(coder.client);
      const userId = randomUUID();

      const keys = await writeEveryTable(coder.client, workspace, userId);

      const stored = await readEveryTable(coder.client, keys);
      for (const [table, userIds] of Object.entries(stored)) expect({ table, userIds }).toEqual({ table, userIds: [hmacPseudonym(newest, userId)] });
    } finally {
      await coder.client.query(`DELETE FROM ${privacySchema}.keys WHERE id = $1`, [added[0].id]);
    }
  });

  test('same id in every table', async () => {
    const keys = await writeEveryTable(coder.client, workspace, workspace.ownerId);

    const stored = await readEveryTable(coder.client, keys);

    const expected = hmacPseudonym(key, workspace.ownerId);
    expect(Object.keys(stored).sort()).toEqual(usageTables('2026').sort());
    for (const [table, userIds] of Object.entries(stored)) expect({ table, userIds }).toEqual({ table, userIds: [expected] });
  });

  test('same id in two sessions', async () => {
    const userId = coder.population.users[1].id;
    const sessions = [await coder.database.connect(), await coder.database.connect()];
    try {
      const stored: string[] = [];
      const backends = new Set<number>();
      for (const session of sessions) {
        const keys = await writeEveryTable(session, workspace, userId);
        stored.push(...Object.values(await readEveryTable(session, keys)).flat());
        backends.add((await session.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid);
      }

      expect(backends.size).toBe(2);
      expect(stored).toHaveLength(8);
      expect(new Set(stored)).toEqual(new Set([hmacPseudonym(key, userId)]));
    } finally {
      for (const session of sessions) await session.end();
    }
  });

  test('distinct ids give distinct pseudonyms', async () => {
    const rows = Array.from({ length: 3000 }, (): AgentStatRow => ({
      id: randomUUID(),
      createdAt: new Date(usageStart),
      userId: randomUUID(),
      agentId: workspace.agentId,
      workspaceId: workspace.id,
      templateId: workspace.templateId,
      connectionCount: 1,
      sessionCounts: {},
    }));

    await insertAgentStats(coder.client, '2026', rows);

    const { rows: stored } = await coder.client.query<{ user_id: string }>('SELECT user_id::text FROM workspace_agent_stats WHERE id = ANY($1::uuid[])', [
      rows.map((row) => row.id),
    ]);
    expect(stored).toHaveLength(rows.length);
    expect(new Set(stored.map((row) => row.user_id)).size).toBe(rows.length);
    const inputIds = new Set(rows.map((row) => row.userId));
    expect(stored.filter((row) => inputIds.has(row.user_id))).toEqual([]);
  });

  test('pseudonym has version 8 and variant 10', async () => {
    const ids = Array.from({ length: 500 }, () => randomUUID());

    const pseudonyms = await pseudonymsOf(coder.client, ids);

    const malformed = pseudonyms.filter((pseudonym) => !pseudonymPattern.test(pseudonym));
    expect(malformed).toEqual([]);
    const bytes = pseudonyms.map(uuidBytes);
    expect(bytes.filter((value) => value[6] >> 4 !== 8)).toEqual([]);
    expect(bytes.filter((value) => value[8] >> 6 !== 0b10)).toEqual([]);
  });

  test('pseudonym written again is unchanged', async () => {
    const userId = coder.population.users[2].id;
    const first = await writeEveryTable(coder.client, workspace, userId);
    const [pseudonym] = (await readEveryTable(coder.client, first)).workspace_agent_stats;

    const again = await writeEveryTable(coder.client, workspace, pseudonym);
    await coder.client.query('UPDATE workspace_agent_stats SET user_id = $1 WHERE id = $2', [pseudonym, first.agentStatId]);

    const stored = await readEveryTable(coder.client, again);
    for (const [table, userIds] of Object.entries(stored)) expect({ table, userIds }).toEqual({ table, userIds: [pseudonym] });
    const updated = await readEveryTable(coder.client, first);
    expect(updated.workspace_agent_stats).toEqual([pseudonym]);
    expect(pseudonym).not.toBe(hmacPseudonym(key, pseudonym));
  });

  test('any version-8 id passes through', async () => {
    const foreign = uuidWithVersion(8);

    const keys = await writeEveryTable(coder.client, workspace, foreign);

    const stored = await readEveryTable(coder.client, keys);
    expect(stored.workspace_agent_stats).toEqual([foreign]);
  });

  test('NULL maps to NULL', async () => {
    const { rows } = await coder.client.query<{ pseudonym: string | null }>(`SELECT ${privacySchema}.pseudonym(NULL::uuid) AS pseudonym`);

    expect(rows[0].pseudonym).toBeNull();
  });

  test('NULL user id is rejected', async () => {
    // Every user_id column is NOT NULL in Coder's schema, so a NULL from the
    // trigger must fail the write rather than store anything.
    const { rows: columns } = await coder.client.query<{ table_name: string; not_null: boolean }>(
      `SELECT attrelid::regclass::text AS table_name, attnotnull AS not_null
       FROM pg_attribute WHERE attname = 'user_id' AND attrelid = ANY($1::regclass[])`,
      [usageTables('2026')],
    );
    expect(columns.filter((column) => !column.not_null)).toEqual([]);
    const { inserts } = everyTableInserts(workspace, null);
    const before = await countEveryTable(coder.client);

    for (const insert of inserts) {
      const failure = await coder.client.query(insert.sql, insert.params).then(
        () => null,
        (error: { code?: string }) => error,
      );
      expect({ table: insert.table, sqlState: failure?.code }).toEqual({ table: insert.table, sqlState: '23502' });
    }

    expect(await countEveryTable(coder.client)).toEqual(before);
  });
});
