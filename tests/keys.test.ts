import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { applyEnforcement } from '../src/commands/apply.js';
import { exportKeys } from '../src/commands/export-key.js';
import { forgetKeys, parseCutoff } from '../src/commands/forget-keys.js';
import { importKeys } from '../src/commands/import-key.js';
import { rotateKey } from '../src/commands/rotate-key.js';
import { readStatus } from '../src/commands/status.js';
import { domainLabel } from '../src/core/enforcement.js';
import { ExitCode, ToolError } from '../src/core/errors.js';
import { keyFingerprint, type KeyPolicy } from '../src/core/keys.js';
import {
  createCoderSchema,
  insertAgentStats,
  insertPopulation,
  buildPopulation,
  readInsights,
  rollupTemplateUsage,
  upsertAppStats,
  type AgentStatRow,
  type AppStatSession,
  type FixtureWorkspace,
  type Population,
} from '../src/fixture/index.js';
import type { Scope } from '../src/profiles/types.js';
import { runCliCaptured, type CliRun } from './support/cli.js';
import { createTestDatabase, serverLogPath } from './support/database.js';
import { createCoderDatabase, privacySchema, pseudonymPattern, type CoderDatabase } from './support/coder.js';

// Tests read keys as the superuser only to compare or search for them; no
// assertion prints a key, only booleans, fingerprints and pseudonyms.

const minuteMs = 60_000;
const bucketMs = 30 * minuteMs;
const lock = { lockTimeoutMs: 2000, retries: 5 };
const keySettings = { schema: privacySchema, profile: 'coder', lock };

let workDir: string;
const openDatabases: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-keys-'));
});

afterAll(async () => {
  for (const database of openDatabases) await database.close();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

async function coderDatabase(prefix: string): Promise<CoderDatabase> {
  const coder = await createCoderDatabase(prefix, '2026');
  openDatabases.push(coder);
  return coder;
}

async function anonymize(client: pg.ClientBase, rotate: KeyPolicy = 'none', scope: Scope = 'source') {
  return applyEnforcement(client, { mode: 'anonymize', scope, rotate, schema: privacySchema, profile: 'coder', dryRun: false, lock });
}

/** The pseudonym of `id` for a row stamped `at`, as the installed function computes it. */
async function pseudonymAt(client: pg.ClientBase, id: string, at: Date): Promise<string> {
  const { rows } = await client.query<{ pseudonym: string }>(`SELECT ${privacySchema}.pseudonym($1, $2)::text AS pseudonym`, [id, at]);
  return rows[0].pseudonym;
}

/** Computes a pseudonym in Node with a given key: HMAC-SHA256 truncated to a version-8 UUID. */
function hmacPseudonym(key: Buffer, id: string): string {
  const digest = createHmac('sha256', key)
    .update(Buffer.concat([Buffer.from(domainLabel, 'utf8'), Buffer.from(id.replace(/-/g, ''), 'hex')]))
    .digest()
    .subarray(0, 16);
  digest[6] = (digest[6] & 0x0f) | 0x80;
  digest[8] = (digest[8] & 0x3f) | 0x80;
  const hex = digest.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

interface StoredKey {
  id: number;
  fingerprint: string;
  policy: string;
  valid_from: Date | null;
  valid_until: Date | null;
}

async function storedKeys(client: pg.ClientBase): Promise<StoredKey[]> {
  const { rows } = await client.query<StoredKey>(`SELECT id, fingerprint, policy, valid_from, valid_until FROM ${privacySchema}.keys ORDER BY policy, valid_from NULLS FIRST, id`);
  return rows;
}

/** Reads every key's bytes by fingerprint; callers must never print them. */
async function keyBytes(client: pg.ClientBase): Promise<Map<string, Buffer>> {
  const { rows } = await client.query<{ fingerprint: string; key: Buffer }>(`SELECT fingerprint, key FROM ${privacySchema}.keys`);
  return new Map(rows.map((row) => [row.fingerprint, row.key]));
}

function agentStat(workspace: FixtureWorkspace, createdAt: Date, userId = workspace.ownerId): AgentStatRow {
  return {
    id: randomUUID(),
    createdAt,
    userId,
    agentId: workspace.agentId,
    workspaceId: workspace.id,
    templateId: workspace.templateId,
    connectionCount: 1,
    sessionCounts: { vscode: 1 },
    connectionMedianLatencyMs: 20,
  };
}

/** Returns one agent report per minute offset from `start`, each with an open session. */
function agentMinutes(workspace: FixtureWorkspace, start: number, minutes: readonly number[]): AgentStatRow[] {
  return minutes.map((minute) => agentStat(workspace, new Date(start + minute * minuteMs + 10_000)));
}

function appSession(workspace: FixtureWorkspace, startedAt: Date, endedAt: Date, requests = 5): AppStatSession {
  return {
    userId: workspace.ownerId,
    workspaceId: workspace.id,
    agentId: workspace.agentId,
    accessMethod: 'path',
    slugOrPort: 'code-server',
    sessionId: randomUUID(),
    sessionStartedAt: startedAt,
    sessionEndedAt: endedAt,
    requests,
  };
}

async function storedAgentUser(client: pg.ClientBase, id: string): Promise<string> {
  const { rows } = await client.query<{ user_id: string }>('SELECT user_id::text FROM workspace_agent_stats WHERE id = $1', [id]);
  return rows[0].user_id;
}

/** Returns the error a promise rejects with, or fails the test. */
async function failureOf(promise: Promise<unknown>): Promise<ToolError | Error & { code?: string }> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a failure, but the call succeeded');
}

/** Runs the command line in-process; stdin is not a terminal unless `typed` is given. */
async function runTool(argv: string[], typed?: string): Promise<CliRun> {
  return runCliCaptured(argv, { cwd: workDir, typed });
}

describe('rotate-key', () => {
  let coder: CoderDatabase;
  let workspace: FixtureWorkspace;
  let firstFingerprint: string;
  let beforeRotation: { rowId: string; stored: string; at: Date };
  let switchAt: Date;

  beforeAll(async () => {
    coder = await coderDatabase('keys_rotate');
    workspace = coder.population.workspaces[0];
    await anonymize(coder.client);
    firstFingerprint = (await storedKeys(coder.client))[0].fingerprint;

    const row = agentStat(workspace, new Date());
    await insertAgentStats(coder.client, '2026', [row]);
    beforeRotation = { rowId: row.id, stored: await storedAgentUser(coder.client, row.id), at: row.createdAt };

    const result = await rotateKey(coder.client, keySettings);
    switchAt = new Date(result.switchAt);
  });

  test('switch is the next half hour', async () => {
    const { rows } = await coder.client.query<{ now: Date }>('SELECT now() AS now');

    expect(switchAt.getTime() % bucketMs).toBe(0);
    expect(switchAt.getTime()).toBeGreaterThan(rows[0].now.getTime() + minuteMs - 5000);
    expect(switchAt.getTime()).toBeLessThanOrEqual(rows[0].now.getTime() + bucketMs + minuteMs);
  });

  test('old key ends where the new one starts', async () => {
    const keys = await storedKeys(coder.client);

    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatchObject({ fingerprint: firstFingerprint, policy: 'none', valid_from: null, valid_until: switchAt });
    expect(keys[1]).toMatchObject({ policy: 'none', valid_from: switchAt, valid_until: null });
  });

  test('rows after the switch use the new key', async () => {
    const later = agentStat(workspace, new Date(switchAt.getTime() + 5 * minuteMs));
    await insertAgentStats(coder.client, '2026', [later]);
    const keys = await keyBytes(coder.client);
    const newKey = (await storedKeys(coder.client))[1];

    const stored = await storedAgentUser(coder.client, later.id);

    expect(stored).toBe(hmacPseudonym(keys.get(newKey.fingerprint) as Buffer, workspace.ownerId));
    expect(stored).not.toBe(beforeRotation.stored);
  });

  test('rows before the switch keep the old key', async () => {
    const late = agentStat(workspace, new Date(switchAt.getTime() - minuteMs));
    await insertAgentStats(coder.client, '2026', [late]);

    expect(await storedAgentUser(coder.client, late.id)).toBe(beforeRotation.stored);
    expect(await storedAgentUser(coder.client, beforeRotation.rowId)).toBe(beforeRotation.stored);
    expect(await pseudonymAt(coder.client, workspace.ownerId, beforeRotation.at)).toBe(beforeRotation.stored);
  });

  test('fingerprints match the keys', async () => {
    const keys = await keyBytes(coder.client);

    expect([...keys].every(([fingerprint, key]) => keyFingerprint(key) === fingerprint)).toBe(true);
  });

  test('status shows both keys', async () => {
    const report = await readStatus(coder.client, { schema: privacySchema, profile: 'coder', counts: false });
    const newFingerprint = (await storedKeys(coder.client))[1].fingerprint;

    expect(report.keyPolicy).toBe('none');
    expect(report.keys.map((key) => [key.fingerprint, key.state, key.periodStart, key.periodEnd])).toEqual([
      [newFingerprint, 'scheduled', switchAt.toISOString(), null],
      [firstFingerprint, 'in use', null, switchAt.toISOString()],
    ]);
    expect(report.ok).toBe(true);
  });

  test('second rotation before the switch is refused', async () => {
    const before = await storedKeys(coder.client);

    const error = await failureOf(rotateKey(coder.client, keySettings));

    expect(error).toBeInstanceOf(ToolError);
    expect(error.message).toContain('A rotation is already scheduled');
    expect(await storedKeys(coder.client)).toEqual(before);
  });

  test('status text shows fingerprints, never keys', async () => {
    const keys = await keyBytes(coder.client);

    const run = await runTool(['status', '--no-counts', '--database-url', coder.database.url]);

    expect(run.code).toBe(ExitCode.ok);
    expect(run.stdout).toContain(`fingerprint ${firstFingerprint}`);
    expect(run.stdout).toContain('Key rotation: none');
    expect([...keys.values()].some((key) => run.stdout.includes(key.toString('hex')) || run.stdout.includes(key.toString('base64')))).toBe(false);
  });
});

describe('rotate-key on the command line', () => {
  let coder: CoderDatabase;

  beforeAll(async () => {
    coder = await coderDatabase('keys_rotate_cli');
    await anonymize(coder.client);
  });

  test('needs --yes without a terminal', async () => {
    const before = await storedKeys(coder.client);

    const run = await runTool(['rotate-key', '--database-url', coder.database.url]);

    expect(run.code).toBe(ExitCode.aborted);
    expect(run.stderr).toContain('rotate-key changes the database and needs a confirmation');
    expect(await storedKeys(coder.client)).toEqual(before);
  });

  test('declined on a terminal changes nothing', async () => {
    const before = await storedKeys(coder.client);

    const run = await runTool(['rotate-key', '--database-url', coder.database.url], 'n\n');

    expect(run.code).toBe(ExitCode.aborted);
    expect(run.stderr).toContain('rows stamped from then on get pseudonyms under a new key');
    expect(await storedKeys(coder.client)).toEqual(before);
  });

  test('rotates with --yes', async () => {
    const run = await runTool(['rotate-key', '--yes', '--json', '--database-url', coder.database.url]);
    const result = JSON.parse(run.stdout) as { fingerprint: string; switchAt: string };

    expect(run.code).toBe(ExitCode.ok);
    expect((await storedKeys(coder.client)).map((key) => [key.fingerprint, key.valid_from?.toISOString() ?? null])).toContainEqual([result.fingerprint, result.switchAt]);
  });
});

describe('rotate-key without anonymize', () => {
  test('is refused', async () => {
    const coder = await coderDatabase('keys_rotate_off');

    const error = await failureOf(rotateKey(coder.client, keySettings));

    expect(error.message).toContain('No pseudonym key to rotate');
    expect((error as ToolError).fix).toContain('apply --mode anonymize');
  });
});

describe('rotation under scope rollup', () => {
  // The rollup trigger hashes real ids with the bucket's start, so buckets
  // before the switch that Coder recomputes after the rotation meet their
  // stored rows under the old key instead of getting a second row.
  const population = buildPopulation({ users: 2, templates: 1, workspacesPerUser: 1 });
  let enforced: pg.Client;
  let control: pg.Client;
  let switchAt: number;
  const bucket = Math.floor(Date.now() / bucketMs) * bucketMs - bucketMs;

  async function plainDatabase(prefix: string): Promise<pg.Client> {
    const database = await createTestDatabase(prefix);
    const client = await database.connect();
    openDatabases.push({ close: async () => { await client.end(); await database.drop(); } });
    await client.query("SET TimeZone = 'UTC'");
    await createCoderSchema(client, '2026');
    await insertPopulation(client, population);
    return client;
  }

  beforeAll(async () => {
    enforced = await plainDatabase('keys_rollup_enforced');
    control = await plainDatabase('keys_rollup_control');
    await anonymize(enforced, 'none', 'rollup');

    const early = population.workspaces.flatMap((workspace) => agentMinutes(workspace, bucket, [1, 2, 3]));
    for (const client of [enforced, control]) {
      await insertAgentStats(client, '2026', early);
      await rollupTemplateUsage(client, '2026');
    }

    switchAt = new Date((await rotateKey(enforced, keySettings)).switchAt).getTime();

    const late = population.workspaces.flatMap((workspace) => agentMinutes(workspace, bucket, [10, 11]));
    const after = population.workspaces.flatMap((workspace) => agentMinutes(workspace, switchAt, [1, 2, 3, 4]));
    for (const client of [enforced, control]) {
      await insertAgentStats(client, '2026', [...late, ...after]);
      await rollupTemplateUsage(client, '2026', new Date(switchAt + 10 * minuteMs));
    }
  });

  test('recomputed bucket keeps one row per user', async () => {
    const { rows } = await enforced.query<{ rows: string }>('SELECT count(*) AS rows FROM template_usage_stats WHERE start_time = $1', [new Date(bucket)]);

    expect(Number(rows[0].rows)).toBe(population.users.length);
  });

  test('minutes equal the control', async () => {
    const range = { from: new Date(bucket), to: new Date(switchAt + bucketMs) };

    const protectedInsights = await readInsights(enforced, '2026', range);
    const controlInsights = await readInsights(control, '2026', range);

    expect(protectedInsights.templates.map((template) => template.usageMinutes)).toEqual(controlInsights.templates.map((template) => template.usageMinutes));
    expect(protectedInsights.sessions.map((session) => [session.name, session.usageMinutes])).toEqual(controlInsights.sessions.map((session) => [session.name, session.usageMinutes]));
  });

  test('users count once per key across the switch', async () => {
    const range = { from: new Date(bucket), to: new Date(switchAt + bucketMs) };

    const protectedInsights = await readInsights(enforced, '2026', range);
    const controlInsights = await readInsights(control, '2026', range);

    expect(controlInsights.templates[0].activeUsers).toBe(population.users.length);
    expect(protectedInsights.templates[0].activeUsers).toBe(2 * population.users.length);
  });
});

describe('monthly keys', () => {
  let coder: CoderDatabase;
  let workspace: FixtureWorkspace;
  const january = [new Date('2025-01-10T08:00:00Z'), new Date('2025-01-31T23:59:00Z')];
  const february = [new Date('2025-02-01T00:00:00Z'), new Date('2025-02-20T12:00:00Z')];

  beforeAll(async () => {
    coder = await coderDatabase('keys_monthly');
    workspace = coder.population.workspaces[0];
    await anonymize(coder.client, 'monthly');
  });

  test('no key before first use', async () => {
    const report = await readStatus(coder.client, { schema: privacySchema, profile: 'coder', counts: false });

    expect(await storedKeys(coder.client)).toEqual([]);
    expect(report.keyPolicy).toBe('monthly');
    expect(report.ok).toBe(true);
  });

  test('stable within a month, different across months', async () => {
    const rows = [...january, ...february].map((at) => agentStat(workspace, at));
    await insertAgentStats(coder.client, '2026', rows);

    const stored = await Promise.all(rows.map((row) => storedAgentUser(coder.client, row.id)));

    expect(stored.every((id) => pseudonymPattern.test(id))).toBe(true);
    expect(stored[0]).toBe(stored[1]);
    expect(stored[2]).toBe(stored[3]);
    expect(stored[0]).not.toBe(stored[2]);
  });

  test('created on first use, one per month', async () => {
    const keys = await storedKeys(coder.client);

    expect(keys.map((key) => [key.policy, key.valid_from?.toISOString(), key.valid_until?.toISOString()])).toEqual([
      ['monthly', '2025-01-01T00:00:00.000Z', '2025-02-01T00:00:00.000Z'],
      ['monthly', '2025-02-01T00:00:00.000Z', '2025-03-01T00:00:00.000Z'],
    ]);
  });

  test('stored pseudonym uses the month key', async () => {
    const keys = await keyBytes(coder.client);
    const [januaryKey] = await storedKeys(coder.client);

    expect(await pseudonymAt(coder.client, workspace.ownerId, january[0])).toBe(hmacPseudonym(keys.get(januaryKey.fingerprint) as Buffer, workspace.ownerId));
  });

  test('session time zone moves no boundary', async () => {
    const client = await coder.database.connect();
    try {
      await client.query("SET TimeZone = 'America/New_York'");
      // 2025-03-01T02:00Z is still February in New York.
      await pseudonymAt(client, workspace.ownerId, new Date('2025-03-01T02:00:00Z'));
    } finally {
      await client.end();
    }

    const march = (await storedKeys(coder.client)).filter((key) => key.valid_from?.toISOString() === '2025-03-01T00:00:00.000Z');
    expect(march).toHaveLength(1);
  });

  test('status shows periods and states', async () => {
    const report = await readStatus(coder.client, { schema: privacySchema, profile: 'coder', counts: false });

    const january2025 = report.keys.find((key) => key.periodStart === '2025-01-01T00:00:00.000Z');
    expect(january2025).toMatchObject({ policy: 'monthly', periodEnd: '2025-02-01T00:00:00.000Z', state: 'ended' });
  });

  test('concurrent first use creates one key', async () => {
    const at = new Date('2025-06-15T10:00:00Z');
    const clients = await Promise.all(Array.from({ length: 6 }, () => coder.database.connect()));
    const rows = clients.map(() => agentStat(workspace, at));
    try {
      // Each insert commits on its own, as Coder's writers do; the first key
      // insert makes the others wait on the period's unique index.
      await Promise.all(clients.map((client, index) => insertAgentStats(client, '2026', [rows[index]])));
    } finally {
      await Promise.all(clients.map((client) => client.end()));
    }

    const june = (await storedKeys(coder.client)).filter((key) => key.valid_from?.toISOString() === '2025-06-01T00:00:00.000Z');
    const stored = new Set(await Promise.all(rows.map((row) => storedAgentUser(coder.client, row.id))));
    expect(june).toHaveLength(1);
    expect(stored.size).toBe(1);
  });

  test('waiting first use reads the winner', async () => {
    // The second writer's key insert waits for the first writer's
    // uncommitted key, then finds it committed and uses it.
    const at = new Date('2025-07-15T10:00:00Z');
    const [first, second] = await Promise.all([coder.database.connect(), coder.database.connect()]);
    const rows = [agentStat(workspace, at), agentStat(workspace, at)];
    try {
      await first.query('BEGIN');
      await insertAgentStats(first, '2026', [rows[0]]);
      await second.query('BEGIN');
      const waiting = insertAgentStats(second, '2026', [rows[1]]);
      await sleep(300);
      await first.query('COMMIT');
      await waiting;
      await second.query('COMMIT');
    } finally {
      await Promise.all([first.end(), second.end()]);
    }

    const july = (await storedKeys(coder.client)).filter((key) => key.valid_from?.toISOString() === '2025-07-01T00:00:00.000Z');
    expect(july).toHaveLength(1);
    expect(await storedAgentUser(coder.client, rows[1].id)).toBe(await storedAgentUser(coder.client, rows[0].id));
  });

  test('rotate-key is refused', async () => {
    const error = await failureOf(rotateKey(coder.client, keySettings));

    expect(error.message).toContain('Keys rotate by period already (apply --rotate monthly)');
  });

  test('apply again changes nothing', async () => {
    const result = await anonymize(coder.client, 'monthly');

    expect(result.outcome).toBe('unchanged');
  });
});

describe('period bounds', () => {
  let coder: CoderDatabase;
  const at = new Date('2025-05-14T13:45:00Z'); // a Wednesday
  const cases: [KeyPolicy, string, string][] = [
    ['daily', '2025-05-14T00:00:00.000Z', '2025-05-15T00:00:00.000Z'],
    ['weekly', '2025-05-12T00:00:00.000Z', '2025-05-19T00:00:00.000Z'],
    ['monthly', '2025-05-01T00:00:00.000Z', '2025-06-01T00:00:00.000Z'],
    ['yearly', '2025-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z'],
  ];

  beforeAll(async () => {
    coder = await coderDatabase('keys_bounds');
  });

  test.each(cases)('%s period', async (policy, start, end) => {
    await anonymize(coder.client, policy);

    await pseudonymAt(coder.client, randomUUID(), at);

    const keys = (await storedKeys(coder.client)).filter((key) => key.policy === policy);
    expect(keys.map((key) => [key.valid_from?.toISOString(), key.valid_until?.toISOString()])).toEqual([[start, end]]);
  });

  test('switch back to none makes a key', async () => {
    const result = await anonymize(coder.client, 'none');
    const report = await readStatus(coder.client, { schema: privacySchema, profile: 'coder', counts: false });

    expect(result.summary).toContain('Key rotation: yearly -> none.');
    expect(report.keys.filter((key) => key.state === 'in use').map((key) => key.policy)).toEqual(['none']);
    expect(report.keys.filter((key) => key.policy !== 'none').every((key) => key.state === 'inactive')).toBe(true);
  });
});

describe.each<Scope>(['source', 'rollup'])('rollup across a month boundary, scope %s', (scope) => {
  // Traffic from 23:00 on January 31 to 01:00 on February 1, rolled up twice,
  // so that the second rollup recomputes January buckets after February keys
  // exist. Buckets never cross midnight UTC, so each lies under one key.
  const population = buildPopulation({ users: 3, templates: 1, workspacesPerUser: 1 });
  const boundary = Date.parse('2025-02-01T00:00:00Z');
  let enforced: pg.Client;
  let control: pg.Client;

  async function plainDatabase(prefix: string): Promise<pg.Client> {
    const database = await createTestDatabase(prefix);
    const client = await database.connect();
    openDatabases.push({ close: async () => { await client.end(); await database.drop(); } });
    await client.query("SET TimeZone = 'UTC'");
    await createCoderSchema(client, '2026');
    await insertPopulation(client, population);
    return client;
  }

  function traffic(population: Population, from: number, minutes: readonly number[]) {
    return population.workspaces.flatMap((workspace) => agentMinutes(workspace, from, minutes));
  }

  beforeAll(async () => {
    enforced = await plainDatabase(`keys_boundary_${scope}`);
    control = await plainDatabase(`keys_boundary_control_${scope}`);
    await anonymize(enforced, 'monthly', scope);

    const first = traffic(population, boundary - 60 * minuteMs, [0, 5, 10, 35, 40, 55, 59]);
    const firstSessions = population.workspaces.map((workspace) => appSession(workspace, new Date(boundary - 50 * minuteMs), new Date(boundary - 20 * minuteMs)));
    // Only scope rollup keeps one key per bucket for a session that spans
    // the boundary; scope source keys it by its start (tested below).
    const spanning = scope === 'rollup' ? [appSession(population.workspaces[0], new Date(boundary - 10 * minuteMs), new Date(boundary + 10 * minuteMs))] : [];
    for (const client of [enforced, control]) {
      await insertAgentStats(client, '2026', first);
      await upsertAppStats(client, [...firstSessions, ...spanning]);
      await rollupTemplateUsage(client, '2026', new Date(boundary + 20 * minuteMs));
    }

    const second = [...traffic(population, boundary - 60 * minuteMs, [20, 58]), ...traffic(population, boundary, [1, 2, 3, 25, 31, 45])];
    const secondSessions = population.workspaces.map((workspace) => appSession(workspace, new Date(boundary + 5 * minuteMs), new Date(boundary + 40 * minuteMs)));
    for (const client of [enforced, control]) {
      await insertAgentStats(client, '2026', second);
      await upsertAppStats(client, secondSessions);
      await rollupTemplateUsage(client, '2026', new Date(boundary + 60 * minuteMs));
    }
  });

  const sides = [
    ['January side', { from: new Date(boundary - 60 * minuteMs), to: new Date(boundary) }],
    ['February side', { from: new Date(boundary), to: new Date(boundary + 60 * minuteMs) }],
  ] as const;

  test.each(sides)('%s equals the control', async (_side, range) => {
    const protectedInsights = await readInsights(enforced, '2026', range);
    const controlInsights = await readInsights(control, '2026', range);

    expect(controlInsights.templates[0].activeUsers).toBe(population.users.length);
    expect(protectedInsights.templates).toEqual(controlInsights.templates);
    expect(protectedInsights.apps).toEqual(controlInsights.apps);
    expect(protectedInsights.sessions).toEqual(controlInsights.sessions);
  });

  test('one row per user and bucket', async () => {
    const { rows } = await enforced.query<{ buckets: string; rows: string }>('SELECT count(DISTINCT start_time) AS buckets, count(*) AS rows FROM template_usage_stats');

    expect(Number(rows[0].rows)).toBe(Number(rows[0].buckets) * population.users.length);
  });

  test('users count once per month across it', async () => {
    const range = { from: new Date(boundary - 60 * minuteMs), to: new Date(boundary + 60 * minuteMs) };

    const protectedInsights = await readInsights(enforced, '2026', range);
    const controlInsights = await readInsights(control, '2026', range);

    expect(protectedInsights.templates[0].usageMinutes).toBe(controlInsights.templates[0].usageMinutes);
    expect(protectedInsights.templates[0].activeUsers).toBe(2 * controlInsights.templates[0].activeUsers);
  });
});

describe('app session across a month boundary, scope source', () => {
  test('stays one row under its start month', async () => {
    const coder = await coderDatabase('keys_session');
    const workspace = coder.population.workspaces[0];
    await anonymize(coder.client, 'monthly');
    const session = appSession(workspace, new Date('2025-01-31T23:50:00Z'), new Date('2025-01-31T23:55:00Z'), 3);

    await upsertAppStats(coder.client, [session]);
    await upsertAppStats(coder.client, [{ ...session, sessionEndedAt: new Date('2025-02-01T00:20:00Z'), requests: 9 }]);

    const { rows } = await coder.client.query<{ user_id: string; requests: number }>('SELECT user_id::text, requests FROM workspace_app_stats WHERE session_id = $1', [session.sessionId]);
    expect(rows).toEqual([{ user_id: await pseudonymAt(coder.client, workspace.ownerId, new Date('2025-01-15T00:00:00Z')), requests: 9 }]);
  });
});

describe('forget-keys', () => {
  let coder: CoderDatabase;
  let workspace: FixtureWorkspace;
  let januaryFingerprint: string;
  let januaryKey: Buffer;
  let januaryRow: { id: string; stored: string };
  let fileBefore: Buffer;
  let fileAfter: Buffer;
  let result: Awaited<ReturnType<typeof forgetKeys>>;

  async function keyTableFile(): Promise<Buffer> {
    await coder.client.query('CHECKPOINT');
    const { rows } = await coder.client.query<{ content: Buffer }>(`SELECT pg_read_binary_file(pg_relation_filepath('${privacySchema}.keys')) AS content`);
    return rows[0].content;
  }

  beforeAll(async () => {
    coder = await coderDatabase('keys_forget');
    workspace = coder.population.workspaces[0];
    await anonymize(coder.client, 'monthly');
    const rows = [agentStat(workspace, new Date('2025-01-20T10:00:00Z')), agentStat(workspace, new Date('2025-02-20T10:00:00Z')), agentStat(workspace, new Date())];
    await insertAgentStats(coder.client, '2026', rows);
    januaryRow = { id: rows[0].id, stored: await storedAgentUser(coder.client, rows[0].id) };

    const january = (await storedKeys(coder.client)).find((key) => key.valid_from?.toISOString() === '2025-01-01T00:00:00.000Z') as StoredKey;
    januaryFingerprint = january.fingerprint;
    januaryKey = (await keyBytes(coder.client)).get(januaryFingerprint) as Buffer;
    fileBefore = await keyTableFile();

    result = await forgetKeys(coder.client, { ...keySettings, before: parseCutoff('2025-02-01') });
    fileAfter = await keyTableFile();
  });

  test('deletes only periods that ended', async () => {
    const remaining = await storedKeys(coder.client);

    expect(result.forgotten.map((key) => key.fingerprint)).toEqual([januaryFingerprint]);
    expect(remaining.map((key) => key.fingerprint)).not.toContain(januaryFingerprint);
    expect(remaining).toHaveLength(2);
  });

  test('no copy left in the key table file', () => {
    // The file before the deletion shows that the search finds a key.
    expect(fileBefore.includes(januaryKey)).toBe(true);
    expect(result.tableRewritten).toBe(true);
    expect(fileAfter.includes(januaryKey)).toBe(false);
  });

  test('no copy left in any table', async () => {
    const { rows } = await coder.client.query<{ name: string }>(
      `SELECT c.oid::regclass::text AS name FROM pg_class AS c
       JOIN pg_namespace AS n ON n.oid = c.relnamespace
       WHERE c.relkind = 'r' AND n.nspname = $1`,
      [privacySchema],
    );
    for (const { name } of rows) {
      const { rows: found } = await coder.client.query<{ found: boolean }>(`SELECT position($1::bytea IN convert_to(t::text, 'UTF8')) > 0 OR t::text LIKE '%' || encode($1::bytea, 'hex') || '%' AS found FROM ${name} AS t`, [januaryKey]);
      expect({ name, found: found.some((row) => row.found) }).toEqual({ name, found: false });
    }
  });

  test('stored pseudonyms stay as they were', async () => {
    expect(await storedAgentUser(coder.client, januaryRow.id)).toBe(januaryRow.stored);
  });

  test('forgotten period makes no new key', async () => {
    const before = await storedKeys(coder.client);

    const error = await failureOf(pseudonymAt(coder.client, workspace.ownerId, new Date('2025-01-25T00:00:00Z')));

    expect(error.message).toContain('was deleted by forget-keys');
    expect(await storedKeys(coder.client)).toEqual(before);
  });

  test('row of a forgotten period is rejected', async () => {
    const row = agentStat(workspace, new Date('2025-01-25T00:00:00Z'));

    const error = await failureOf(insertAgentStats(coder.client, '2026', [row]));

    expect(error.message).toContain('was deleted by forget-keys');
    const { rows } = await coder.client.query('SELECT 1 FROM workspace_agent_stats WHERE id = $1', [row.id]);
    expect(rows).toHaveLength(0);
  });

  test('status lists the forgotten period', async () => {
    const run = await runTool(['status', '--json', '--no-counts', '--database-url', coder.database.url]);
    const report = JSON.parse(run.stdout) as { forgottenKeys: { fingerprint: string; periodStart: string; periodEnd: string }[] };

    expect(report.forgottenKeys).toEqual([
      expect.objectContaining({ fingerprint: januaryFingerprint, periodStart: '2025-01-01T00:00:00.000Z', periodEnd: '2025-02-01T00:00:00.000Z' }),
    ]);
  });

  test('second run changes nothing', async () => {
    const again = await forgetKeys(coder.client, { ...keySettings, before: parseCutoff('2025-02-01') });

    expect(again.outcome).toBe('unchanged');
  });

  test.each([
    ['future date', () => new Date(Date.now() + 86_400_000), 'the key in use is never forgotten'],
    ['last hour', () => new Date(Date.now() - minuteMs), 'less than 2.5 hours before'],
  ])('%s is refused', async (_name, before, message) => {
    const keys = await storedKeys(coder.client);

    const error = await failureOf(forgetKeys(coder.client, { ...keySettings, before: before() }));

    expect(error.message).toContain(message);
    expect(await storedKeys(coder.client)).toEqual(keys);
  });

  test('CLI needs --yes without a terminal', async () => {
    const keys = await storedKeys(coder.client);

    const run = await runTool(['forget-keys', '--before', '2025-03-01', '--database-url', coder.database.url]);

    expect(run.code).toBe(ExitCode.aborted);
    expect(await storedKeys(coder.client)).toEqual(keys);
  });

  test('CLI forgets with --yes', async () => {
    const run = await runTool(['forget-keys', '--before', '2025-03-01', '--yes', '--json', '--database-url', coder.database.url]);

    expect(run.code).toBe(ExitCode.ok);
    expect((JSON.parse(run.stdout) as { forgotten: { periodStart: string }[] }).forgotten.map((key) => key.periodStart)).toEqual(['2025-02-01T00:00:00.000Z']);
  });

  test.each(['2025-13-01', 'yesterday', '2025-01-01T00:00:00'])('--before %s is invalid', async (value) => {
    const run = await runTool(['forget-keys', '--before', value, '--yes', '--database-url', coder.database.url]);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain(`Invalid --before "${value}"`);
  });
});

describe('forget-keys with an older transaction open', () => {
  test('reports the table as not rewritten', async () => {
    // VACUUM FULL would copy the deleted row for a snapshot that can still
    // see it, so forget-keys waits for such transactions and then gives up.
    const coder = await coderDatabase('keys_forget_open');
    await anonymize(coder.client, 'monthly');
    await pseudonymAt(coder.client, randomUUID(), new Date('2025-01-20T00:00:00Z'));
    const reader = await coder.database.connect();
    let result: Awaited<ReturnType<typeof forgetKeys>>;
    try {
      await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await reader.query('SELECT count(*) FROM workspace_agent_stats');
      result = await forgetKeys(coder.client, { ...keySettings, lock: { lockTimeoutMs: 200, retries: 1 }, before: parseCutoff('2025-02-01') });
    } finally {
      await reader.query('COMMIT');
      await reader.end();
    }

    expect(result.forgotten).toHaveLength(1);
    expect(result.tableRewritten).toBe(false);
  });
});

describe('forget-keys under policy none', () => {
  test('deletes the ended key, keeps the key in use', async () => {
    const coder = await coderDatabase('keys_forget_none');
    await anonymize(coder.client);
    const first = (await storedKeys(coder.client))[0];
    await rotateKey(coder.client, keySettings);
    // Move both periods back a day, as if the switch had happened then.
    await coder.client.query(`UPDATE ${privacySchema}.keys SET valid_from = valid_from - interval '1 day', valid_until = valid_until - interval '1 day'`);
    const current = (await storedKeys(coder.client))[1];
    const cutoff = new Date(Date.now() - 3 * 60 * minuteMs);

    const result = await forgetKeys(coder.client, { ...keySettings, before: cutoff });

    expect(result.forgotten.map((key) => key.fingerprint)).toEqual([first.fingerprint]);
    expect((await storedKeys(coder.client)).map((key) => key.fingerprint)).toEqual([current.fingerprint]);
    expect(pseudonymPattern.test(await pseudonymAt(coder.client, randomUUID(), new Date()))).toBe(true);
  });
});

describe('export-key and import-key', () => {
  let source: CoderDatabase;
  let target: CoderDatabase;
  let exportPath: string;
  let exportRun: CliRun;
  let conflictRun: CliRun;
  let targetKeysBefore: StoredKey[];
  const ids = Array.from({ length: 5 }, () => randomUUID());
  const times = [new Date('2025-01-15T00:00:00Z'), new Date('2025-02-15T00:00:00Z')];

  beforeAll(async () => {
    source = await coderDatabase('keys_export');
    target = await coderDatabase('keys_import');
    await anonymize(source.client, 'monthly');
    await anonymize(target.client, 'monthly');
    // Both databases make their own key for January, so the import conflicts there.
    for (const at of times) await pseudonymAt(source.client, ids[0], at);
    await pseudonymAt(target.client, ids[0], times[0]);

    exportPath = join(workDir, 'source-keys.json');
    exportRun = await runTool(['export-key', '--out', exportPath, '--database-url', source.database.url]);
    targetKeysBefore = await storedKeys(target.client);
    conflictRun = await runTool(['import-key', '--in', exportPath, '--database-url', target.database.url]);
  });

  test('export exits 0 and warns on stderr', () => {
    expect(exportRun.code).toBe(ExitCode.ok);
    expect(exportRun.stderr).toContain('contains the pseudonym keys');
  });

  test('file mode is 0600', async () => {
    expect((await stat(exportPath)).mode & 0o777).toBe(0o600);
  });

  test('file holds every key with its fingerprint', async () => {
    const file = JSON.parse(await readFile(exportPath, 'utf8')) as { format: string; version: number; keys: { fingerprint: string; key: string; validFrom: string }[] };
    const keys = await keyBytes(source.client);

    expect(file.format).toBe('insights-privacy keys');
    expect(file.version).toBe(1);
    expect(file.keys.map((key) => key.validFrom)).toEqual(['2025-01-01T00:00:00.000Z', '2025-02-01T00:00:00.000Z']);
    expect(file.keys.every((key) => keys.get(key.fingerprint)?.equals(Buffer.from(key.key, 'base64')))).toBe(true);
  });

  test('output shows no key', async () => {
    const keys = await keyBytes(source.client);
    const output = exportRun.stdout + exportRun.stderr + conflictRun.stdout + conflictRun.stderr;

    expect([...keys.values()].some((key) => output.includes(key.toString('hex')) || output.includes(key.toString('base64')))).toBe(false);
  });

  test('export does not overwrite', async () => {
    const before = await readFile(exportPath, 'utf8');

    const run = await runTool(['export-key', '--out', exportPath, '--database-url', source.database.url]);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('exists; export-key does not overwrite it');
    expect(await readFile(exportPath, 'utf8')).toBe(before);
  });

  test('export --force replaces with mode 0600', async () => {
    const path = join(workDir, 'loose.json');
    await writeFile(path, 'old');
    await chmod(path, 0o644);

    const result = await exportKeys(source.client, { schema: privacySchema, profile: 'coder', out: path, cwd: workDir, force: true });

    expect(result.keys).toHaveLength(2);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readFile(path, 'utf8')).toContain('"format": "insights-privacy keys"');
  });

  test('mismatched import is refused', async () => {
    expect(conflictRun.code).toBe(ExitCode.error);
    expect(conflictRun.stderr).toContain('Import rejected, nothing changed: monthly 2025-01-01T00:00:00.000Z to 2025-02-01T00:00:00.000Z has key');
    expect(conflictRun.stderr).toContain('--force');
    expect(await storedKeys(target.client)).toEqual(targetKeysBefore);
  });

  test('tampered file is refused', async () => {
    const file = JSON.parse(await readFile(exportPath, 'utf8')) as { keys: { fingerprint: string }[] };
    file.keys[1].fingerprint = '0000000000000000';
    const path = join(workDir, 'tampered.json');
    await writeFile(path, JSON.stringify(file), { mode: 0o600 });

    const run = await runTool(['import-key', '--in', path, '--force', '--database-url', target.database.url]);

    expect(run.code).toBe(ExitCode.error);
    expect(run.stderr).toContain('keys[1] does not match its fingerprint 0000000000000000');
    expect(await storedKeys(target.client)).toEqual(targetKeysBefore);
  });

  test('forced import gives identical pseudonyms', async () => {
    const result = await importKeys(target.client, { ...keySettings, in: exportPath, cwd: workDir, force: true });

    expect(result.replaced.map((key) => key.fingerprint)).toEqual([targetKeysBefore[0].fingerprint]);
    expect(result.added).toHaveLength(2);
    for (const at of times) {
      for (const id of ids) {
        expect(await pseudonymAt(target.client, id, at)).toBe(await pseudonymAt(source.client, id, at));
      }
    }
  });

  test('second import changes nothing', async () => {
    const before = await storedKeys(target.client);

    const result = await importKeys(target.client, { ...keySettings, in: exportPath, cwd: workDir, force: false });

    expect(result.outcome).toBe('unchanged');
    expect(result.unchanged).toHaveLength(2);
    expect(await storedKeys(target.client)).toEqual(before);
  });

  test('import before apply, then apply', async () => {
    // A copy made without the key table's data: import first, so that apply
    // adopts the imported key instead of making its own.
    const origin = await coderDatabase('keys_origin');
    const copy = await coderDatabase('keys_copy');
    await anonymize(origin.client);
    await rotateKey(origin.client, keySettings);
    const path = join(workDir, 'origin-keys.json');
    await exportKeys(origin.client, { schema: privacySchema, profile: 'coder', out: path, cwd: workDir, force: false });

    const imported = await importKeys(copy.client, { ...keySettings, in: path, cwd: workDir, force: false });
    await anonymize(copy.client);

    const switchAt = (await storedKeys(origin.client))[1].valid_from as Date;
    expect(imported.added).toHaveLength(2);
    expect(await storedKeys(copy.client)).toHaveLength(2);
    for (const at of [new Date(), new Date(switchAt.getTime() + minuteMs)]) {
      expect(await pseudonymAt(copy.client, ids[1], at)).toBe(await pseudonymAt(origin.client, ids[1], at));
    }
  });

  test('import of a restore copy ends its old key', async () => {
    // The restore has the first key only; the source has rotated since.
    const restored = await coderDatabase('keys_restored');
    const origin = await coderDatabase('keys_rotated');
    await anonymize(origin.client);
    const path = join(workDir, 'before-rotation.json');
    await exportKeys(origin.client, { schema: privacySchema, profile: 'coder', out: path, cwd: workDir, force: false });
    await importKeys(restored.client, { ...keySettings, in: path, cwd: workDir, force: false });
    await anonymize(restored.client);
    await rotateKey(origin.client, keySettings);
    const rotatedPath = join(workDir, 'after-rotation.json');
    await exportKeys(origin.client, { schema: privacySchema, profile: 'coder', out: rotatedPath, cwd: workDir, force: false });

    const result = await importKeys(restored.client, { ...keySettings, in: rotatedPath, cwd: workDir, force: false });

    expect(result.ended).toHaveLength(1);
    expect(result.added).toHaveLength(1);
    expect((await storedKeys(restored.client)).map((key) => [key.fingerprint, key.valid_from, key.valid_until])).toEqual(
      (await storedKeys(origin.client)).map((key) => [key.fingerprint, key.valid_from, key.valid_until]),
    );
  });

  const logPath = serverLogPath();
  const logTest = logPath ? test : test.skip;
  logTest('no key in the server log', async () => {
    const marker = `insights-privacy keys log marker ${randomBytes(8).toString('hex')}`;
    await source.client.query(`SELECT '${marker}' AS marker`);
    const deadline = Date.now() + 15_000;
    let log = await readFile(logPath as string);
    while (!log.includes(marker) && Date.now() < deadline) {
      await sleep(100);
      log = await readFile(logPath as string);
    }
    const keys = [...(await keyBytes(source.client)).values(), ...(await keyBytes(target.client)).values()];
    const text = log.toString('latin1').toLowerCase();

    expect(log.includes(marker)).toBe(true);
    expect(text).toContain('copy pg_temp.insights_privacy_import');
    expect(keys.some((key) => text.includes(key.toString('hex')) || log.includes(key.toString('base64')) || log.includes(key))).toBe(false);
  });
});
