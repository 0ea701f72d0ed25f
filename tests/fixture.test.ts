import { randomUUID } from 'node:crypto';
import pg from 'pg';
import {
  buildPopulation,
  columnSessionNames,
  columnSets,
  createCoderSchema,
  generateTraffic,
  insertAgentStats,
  insertPopulation,
  maxBatchRows,
  readInsights,
  rollupTemplateUsage,
  seedPopulation,
  upsertAppStats,
  writeTraffic,
  type AgentStatRow,
  type AppStatSession,
  type ColumnSet,
  type FixtureWorkspace,
  type Population,
} from '../src/fixture/index.js';
import { createTestDatabase, type TestDatabase } from './support/database.js';

const minuteMs = 60_000;
const bucketMs = 30 * minuteMs;

// The hand-built cases live in the hour that starts here, and the rollup runs
// at its end, so both of its half-hour buckets are complete.
const hourStart = new Date('2025-03-03T10:00:00Z');
const rollupNow = new Date('2025-03-03T11:00:00Z');

/** Returns the time `minute` minutes and `second` seconds after `hourStart`. */
function at(minute: number, second = 0): Date {
  return new Date(hourStart.getTime() + minute * minuteMs + second * 1000);
}

/** Counts the statements a client sends while `action` runs, and returns their text. */
async function recordStatements(client: pg.Client, action: () => Promise<unknown>): Promise<string[]> {
  const original = client.query;
  const texts: string[] = [];
  const recording = function (this: pg.Client, ...args: unknown[]): unknown {
    const [first] = args;
    texts.push(typeof first === 'string' ? first : String((first as { text?: unknown }).text));
    return (original as (...params: unknown[]) => unknown).apply(this, args);
  };
  client.query = recording as unknown as typeof client.query;
  try {
    await action();
  } finally {
    client.query = original;
  }
  return texts;
}

function agentStat(workspace: FixtureWorkspace, fields: Partial<AgentStatRow> & Pick<AgentStatRow, 'createdAt'>): AgentStatRow {
  return {
    id: randomUUID(),
    userId: workspace.ownerId,
    agentId: workspace.agentId,
    workspaceId: workspace.id,
    templateId: workspace.templateId,
    connectionCount: 1,
    sessionCounts: {},
    ...fields,
  };
}

function appSession(
  workspace: FixtureWorkspace,
  fields: Partial<AppStatSession> & Pick<AppStatSession, 'sessionStartedAt' | 'sessionEndedAt'>,
): AppStatSession {
  return {
    userId: workspace.ownerId,
    workspaceId: workspace.id,
    agentId: workspace.agentId,
    accessMethod: 'path',
    slugOrPort: 'code-server',
    sessionId: randomUUID(),
    requests: 1,
    ...fields,
  };
}

/** What the rollup should store for one bucket of one user and template. */
interface ExpectedBucket {
  usageMins: number;
  medianLatencyMs: number | null;
  appMinutes: Record<string, number>;
  sessionMinutes: Record<string, number>;
}

function percentileCont(values: readonly number[], fraction: number): number {
  const sorted = [...values].sort((left, right) => left - right);
  const position = fraction * (sorted.length - 1);
  const lower = Math.floor(position);
  const upper = Math.ceil(position);
  return sorted[lower] + (sorted[upper] - sorted[lower]) * (position - lower);
}

function addMinute(map: Map<string, Set<number>>, key: string, minute: number): void {
  const minutes = map.get(key) ?? new Set<number>();
  minutes.add(minute);
  map.set(key, minutes);
}

/**
 * Computes the rollup of one user's reports in one template without SQL. A
 * bucket's minutes are those with a session in a bucket that had a
 * connection, plus app session minutes. Its latency is the median over the
 * reports in those minutes. Returns one entry per bucket start in epoch
 * milliseconds.
 */
function expectedRollup(agentRows: readonly AgentStatRow[], sessions: readonly AppStatSession[], columnSet: ColumnSet): Map<number, ExpectedBucket> {
  const minuteOf = (time: number) => Math.floor(time / minuteMs) * minuteMs;
  const bucketOf = (time: number) => Math.floor(time / bucketMs) * bucketMs;
  const storedNames = (counts: Readonly<Record<string, number>>) =>
    Object.keys(counts).filter((name) => counts[name] > 0 && (columnSet === '2026' || (columnSessionNames as readonly string[]).includes(name)));

  const connectedBuckets = new Set(agentRows.filter((row) => row.connectionCount > 0 && storedNames(row.sessionCounts).length > 0).map((row) => bucketOf(row.createdAt.getTime())));
  const active = new Map<number, Set<number>>();
  const apps = new Map<number, Map<string, Set<number>>>();
  const named = new Map<number, Map<string, Set<number>>>();
  const minutesOf = (bucket: number) => active.get(bucket) ?? active.set(bucket, new Set()).get(bucket)!;
  const namesOf = (store: Map<number, Map<string, Set<number>>>, bucket: number) => store.get(bucket) ?? store.set(bucket, new Map()).get(bucket)!;

  for (const row of agentRows) {
    const time = row.createdAt.getTime();
    const names = storedNames(row.sessionCounts);
    if (names.length === 0 || !connectedBuckets.has(bucketOf(time))) continue;
    minutesOf(bucketOf(time)).add(minuteOf(time));
    for (const name of names) addMinute(namesOf(named, bucketOf(time)), name, minuteOf(time));
  }
  for (const session of sessions) {
    const appName = session.accessMethod === 'terminal' ? '[terminal]' : session.slugOrPort;
    const last = minuteOf(session.sessionEndedAt.getTime() - 1);
    for (let minute = minuteOf(session.sessionStartedAt.getTime()); minute <= last; minute += minuteMs) {
      minutesOf(bucketOf(minute)).add(minute);
      addMinute(namesOf(apps, bucketOf(minute)), appName, minute);
    }
  }

  const expected = new Map<number, ExpectedBucket>();
  for (const [bucket, minutes] of active) {
    const latencies = agentRows
      .filter((row) => minutes.has(minuteOf(row.createdAt.getTime())) && (row.connectionMedianLatencyMs ?? -1) > 0)
      .map((row) => row.connectionMedianLatencyMs ?? -1);
    const countsOf = (store: Map<number, Map<string, Set<number>>>) =>
      Object.fromEntries([...(store.get(bucket) ?? new Map<string, Set<number>>())].map(([name, set]) => [name, set.size]));
    expected.set(bucket, {
      usageMins: minutes.size,
      medianLatencyMs: latencies.length > 0 ? percentileCont(latencies, 0.5) : null,
      appMinutes: countsOf(apps),
      sessionMinutes: countsOf(named),
    });
  }
  return expected;
}

/** Reads one user's stored buckets, from either column set, in the shape of `ExpectedBucket`. */
async function storedBuckets(client: pg.Client, columnSet: ColumnSet, userId: string): Promise<Map<number, ExpectedBucket>> {
  const { rows } = await client.query<Record<string, unknown>>(
    'SELECT * FROM template_usage_stats WHERE user_id = $1 ORDER BY start_time',
    [userId],
  );
  const buckets = new Map<number, ExpectedBucket>();
  for (const row of rows) {
    const startTime = row.start_time as Date;
    let sessionMinutes: Record<string, number>;
    if (columnSet === '2025') {
      sessionMinutes = Object.fromEntries(
        ['ssh', 'sftp', 'reconnecting_pty', 'vscode', 'jetbrains']
          .map((name) => [name, row[`${name}_mins`] as number])
          .filter(([, minutes]) => (minutes as number) > 0),
      );
    } else {
      const children = await client.query<{ app_name: string; usage_mins: number }>(
        'SELECT app_name, usage_mins FROM template_usage_stats_session_apps WHERE start_time = $1 AND template_id = $2 AND user_id = $3',
        [startTime, row.template_id, userId],
      );
      sessionMinutes = Object.fromEntries(children.rows.map((child) => [child.app_name, child.usage_mins]));
    }
    buckets.set(startTime.getTime(), {
      usageMins: row.usage_mins as number,
      medianLatencyMs: row.median_latency_ms as number | null,
      appMinutes: (row.app_usage_mins as Record<string, number> | null) ?? {},
      sessionMinutes,
    });
  }
  return buckets;
}

/** Checks stored buckets against expected ones, one assertion per value. */
function expectBuckets(stored: Map<number, ExpectedBucket>, expected: Map<number, ExpectedBucket>): void {
  expect([...stored.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [bucket, want] of expected) {
    const got = stored.get(bucket)!;
    expect({ bucket: new Date(bucket).toISOString(), usageMins: got.usageMins }).toEqual({ bucket: new Date(bucket).toISOString(), usageMins: want.usageMins });
    if (want.medianLatencyMs === null) {
      expect(got.medianLatencyMs).toBeNull();
    } else {
      expect(got.medianLatencyMs).toBeCloseTo(want.medianLatencyMs, 3);
    }
    expect(got.appMinutes).toEqual(want.appMinutes);
    expect(got.sessionMinutes).toEqual(want.sessionMinutes);
  }
}

/** Builds the hand-built reports of one workspace in the hour that starts at `hourStart`. */
function handBuiltCase(workspace: FixtureWorkspace): { agentRows: AgentStatRow[]; sessions: AppStatSession[] } {
  const agentRows = [
    agentStat(workspace, { createdAt: at(1, 10), sessionCounts: { ssh: 1 }, connectionMedianLatencyMs: 20 }),
    agentStat(workspace, { createdAt: at(1, 40), sessionCounts: { ssh: 1 }, connectionMedianLatencyMs: 40 }),
    agentStat(workspace, { createdAt: at(2, 10), sessionCounts: { vscode: 1, zed: 1 }, connectionMedianLatencyMs: 30 }),
    // No session, but minute 5 is active through the app session below, so
    // its latency counts.
    agentStat(workspace, { createdAt: at(5), connectionMedianLatencyMs: 100 }),
    agentStat(workspace, { createdAt: at(9), connectionCount: 0 }),
    agentStat(workspace, { createdAt: at(35), sessionCounts: { jetbrains: 2 }, connectionMedianLatencyMs: 50 }),
  ];
  const sessions = [
    appSession(workspace, { sessionStartedAt: at(4), sessionEndedAt: at(7, 30), requests: 12 }),
    appSession(workspace, { accessMethod: 'terminal', slugOrPort: '', sessionStartedAt: at(2), sessionEndedAt: at(3), requests: 3 }),
  ];
  return { agentRows, sessions };
}

describe.each(columnSets)('fixture with the %s column set', (columnSet) => {
  let database: TestDatabase;
  let client: pg.Client;

  beforeEach(async () => {
    database = await createTestDatabase('fixture');
    client = await database.connect();
    await client.query("SET TimeZone = 'UTC'");
    await createCoderSchema(client, columnSet);
  });

  afterEach(async () => {
    await client.end();
    await database.drop();
  });

  async function seedOneWorkspace(): Promise<{ population: Population; workspace: FixtureWorkspace }> {
    const population = await seedPopulation(client, { users: 1, templates: 1, workspacesPerUser: 1 });
    return { population, workspace: population.workspaces[0] };
  }

  test('schema has the usage tables with their columns', async () => {
    const { rows } = await client.query<{ table_name: string; column_name: string; column_type: string; not_null: boolean }>(
      `SELECT attrelid::regclass::text AS table_name, attname AS column_name,
              format_type(atttypid, atttypmod) AS column_type, attnotnull AS not_null
       FROM pg_attribute
       WHERE attrelid IN ('public.workspace_agent_stats'::regclass, 'public.template_usage_stats'::regclass)
         AND attnum > 0 AND NOT attisdropped
       ORDER BY attrelid::regclass::text, attnum`,
    );
    const columnsOf = (table: string) => rows.filter((row) => row.table_name === table).map((row) => row.column_name);
    const sessionColumns = columnSessionNames.map((name) => `session_count_${name}`);
    const minuteColumns = ['ssh_mins', 'sftp_mins', 'reconnecting_pty_mins', 'vscode_mins', 'jetbrains_mins'];

    if (columnSet === '2025') {
      expect(columnsOf('workspace_agent_stats')).toEqual(expect.arrayContaining(sessionColumns));
      expect(columnsOf('workspace_agent_stats')).not.toContain('session_counts');
      expect(columnsOf('template_usage_stats')).toEqual(expect.arrayContaining(minuteColumns));
      expect(columnsOf('template_usage_stats')).not.toContain('session_usage_digest');
    } else {
      expect(columnsOf('workspace_agent_stats')).toContain('session_counts');
      for (const column of sessionColumns) expect(columnsOf('workspace_agent_stats')).not.toContain(column);
      expect(columnsOf('template_usage_stats')).toContain('session_usage_digest');
      for (const column of minuteColumns) expect(columnsOf('template_usage_stats')).not.toContain(column);
    }

    const typeOf = (table: string, column: string) => rows.find((row) => row.table_name === table && row.column_name === column);
    expect(typeOf('workspace_agent_stats', 'connection_median_latency_ms')).toMatchObject({ column_type: 'double precision', not_null: true });
    expect(typeOf('template_usage_stats', 'median_latency_ms')).toMatchObject({ column_type: 'real', not_null: false });
    expect(typeOf('template_usage_stats', 'usage_mins')).toMatchObject({ column_type: 'smallint', not_null: true });
    expect(typeOf('template_usage_stats', 'app_usage_mins')).toMatchObject({ column_type: 'jsonb', not_null: false });

    const appStatsId = await client.query<{ default_value: string }>(
      `SELECT pg_get_expr(adbin, adrelid) AS default_value FROM pg_attrdef
       WHERE adrelid = 'public.workspace_app_stats'::regclass AND adnum = 1`,
    );
    expect(appStatsId.rows[0].default_value).toBe("nextval('workspace_app_stats_id_seq'::regclass)");
  });

  test('schema names constraints and indexes as Coder does', async () => {
    const constraints = await client.query<{ table_name: string; name: string; kind: string }>(
      `SELECT conrelid::regclass::text AS table_name, conname AS name, contype::text AS kind
       FROM pg_constraint
       WHERE connamespace = 'public'::regnamespace
         AND contype <> 'n'
         AND conrelid::regclass::text LIKE ANY (ARRAY['workspace_agent_stats', 'workspace_app_stats', 'template_usage_stats%'])
       ORDER BY conrelid::regclass::text COLLATE "C", conname::text COLLATE "C"`,
    );
    const expectedConstraints = [
      { table_name: 'template_usage_stats', name: 'template_usage_stats_pkey', kind: 'p' },
      ...(columnSet === '2026'
        ? [
            // Coder's migration leaves the foreign key unnamed, so this is the
            // name PostgreSQL generates, shortened to fit 63 bytes.
            { table_name: 'template_usage_stats_session_apps', name: 'template_usage_stats_session__start_time_template_id_user__fkey', kind: 'f' },
            { table_name: 'template_usage_stats_session_apps', name: 'template_usage_stats_session_apps_pkey', kind: 'p' },
          ]
        : []),
      { table_name: 'workspace_agent_stats', name: 'agent_stats_pkey', kind: 'p' },
      { table_name: 'workspace_app_stats', name: 'workspace_app_stats_agent_id_fkey', kind: 'f' },
      { table_name: 'workspace_app_stats', name: 'workspace_app_stats_pkey', kind: 'p' },
      { table_name: 'workspace_app_stats', name: 'workspace_app_stats_user_id_agent_id_session_id_key', kind: 'u' },
      { table_name: 'workspace_app_stats', name: 'workspace_app_stats_user_id_fkey', kind: 'f' },
      { table_name: 'workspace_app_stats', name: 'workspace_app_stats_workspace_id_fkey', kind: 'f' },
    ];
    expect(constraints.rows).toEqual(expectedConstraints);

    const userForeignKey = await client.query<{ definition: string; on_delete: string }>(
      `SELECT pg_get_constraintdef(oid) AS definition, confdeltype::text AS on_delete
       FROM pg_constraint WHERE conname = 'workspace_app_stats_user_id_fkey'`,
    );
    expect(userForeignKey.rows[0].definition).toBe('FOREIGN KEY (user_id) REFERENCES users(id)');
    // 'a' is NO ACTION: Coder's key has no ON DELETE clause.
    expect(userForeignKey.rows[0].on_delete).toBe('a');

    const indexes = await client.query<{ name: string; definition: string }>(
      `SELECT indexname AS name, indexdef AS definition FROM pg_indexes
       WHERE schemaname = 'public'
         AND tablename IN ('workspace_agent_stats', 'workspace_app_stats', 'template_usage_stats', 'template_usage_stats_session_apps')
       ORDER BY indexname COLLATE "C"`,
    );
    expect(indexes.rows.map((row) => row.name)).toEqual(
      [
        'agent_stats_pkey',
        'idx_agent_stats_created_at',
        'idx_agent_stats_user_id',
        'template_usage_stats_pkey',
        ...(columnSet === '2026' ? ['template_usage_stats_session_apps_pkey'] : []),
        'template_usage_stats_start_time_idx',
        'template_usage_stats_start_time_template_id_user_id_idx',
        'workspace_agent_stats_template_id_created_at_user_id_idx',
        'workspace_app_stats_pkey',
        'workspace_app_stats_user_id_agent_id_session_id_key',
        'workspace_app_stats_workspace_id_idx',
      ].sort(),
    );

    const partialIndex = indexes.rows.find((row) => row.name === 'workspace_agent_stats_template_id_created_at_user_id_idx')!;
    expect(partialIndex.definition).toContain('(template_id, created_at, user_id)');
    expect(partialIndex.definition).toContain('WHERE (connection_count > 0)');
    const included = columnSet === '2025' ? `${columnSessionNames.map((name) => `session_count_${name}`).join(', ')}, connection_median_latency_ms` : 'connection_median_latency_ms';
    expect(partialIndex.definition).toContain(`INCLUDE (${included})`);
  });

  test('createCoderSchema rejects an unknown column set', async () => {
    await expect(createCoderSchema(client, '2024' as ColumnSet)).rejects.toThrow(/Invalid column set "2024"/);
  });

  test('session apps key cascades from its parent', async () => {
    if (columnSet === '2025') {
      const { rows } = await client.query("SELECT to_regclass('public.template_usage_stats_session_apps') AS table_oid");
      expect(rows[0].table_oid).toBeNull();
      return;
    }
    const { rows } = await client.query<{ definition: string }>(
      `SELECT pg_get_constraintdef(oid) AS definition FROM pg_constraint
       WHERE conrelid = 'public.template_usage_stats_session_apps'::regclass AND contype = 'f'`,
    );
    expect(rows.map((row) => row.definition)).toEqual([
      'FOREIGN KEY (start_time, template_id, user_id) REFERENCES template_usage_stats(start_time, template_id, user_id) ON DELETE CASCADE',
    ]);
  });

  test('seedPopulation stores the ids it returns', async () => {
    const population = await seedPopulation(client, { users: 3, templates: 2, workspacesPerUser: 2 });

    const { rows } = await client.query<{ id: string; owner_id: string; template_id: string; agent_id: string }>(
      `SELECT workspaces.id, workspaces.owner_id, workspaces.template_id, workspace_agents.id AS agent_id
       FROM workspaces JOIN workspace_agents ON workspace_agents.workspace_id = workspaces.id`,
    );
    const stored = rows.map((row) => ({ id: row.id, ownerId: row.owner_id, templateId: row.template_id, agentId: row.agent_id }));
    const returned = population.workspaces.map(({ id, ownerId, templateId, agentId }) => ({ id, ownerId, templateId, agentId }));
    expect(stored).toHaveLength(3 * 2);
    expect(stored).toEqual(expect.arrayContaining(returned));

    const users = await client.query<{ id: string }>('SELECT id FROM users ORDER BY id');
    expect(users.rows.map((row) => row.id)).toEqual(population.users.map((user) => user.id).sort());
    const templates = await client.query<{ id: string }>('SELECT id FROM templates ORDER BY id');
    expect(templates.rows.map((row) => row.id)).toEqual(population.templates.map((template) => template.id).sort());
  });

  test('insertAgentStats sends 2500 rows in 3 statements', async () => {
    const { workspace } = await seedOneWorkspace();
    const rows = Array.from({ length: 2500 }, (_, index) =>
      agentStat(workspace, {
        createdAt: new Date(hourStart.getTime() + index * 1000),
        sessionCounts: { vscode: index % 3, ssh: 1, zed: 4 },
        connectionsByProto: { tcp: index % 2 },
        rxBytes: index,
        connectionMedianLatencyMs: index / 10,
      }),
    );

    let result = { statements: 0, rows: 0 };
    const statements = await recordStatements(client, async () => {
      result = await insertAgentStats(client, columnSet, rows);
    });

    expect(statements).toHaveLength(Math.ceil(rows.length / maxBatchRows));
    expect(statements).toHaveLength(3);
    for (const text of statements) expect(text).toMatch(/INSERT INTO workspace_agent_stats[\s\S]*FROM unnest\(/);
    expect(result).toEqual({ statements: 3, rows: rows.length });
    const count = await client.query<{ count: number }>('SELECT count(*)::integer AS count FROM workspace_agent_stats');
    expect(count.rows[0].count).toBe(rows.length);

    // Row 1500 is in the second batch, which checks that the JSON arrays line
    // up with the unnested columns there too.
    const sample = rows[1500];
    const stored = await client.query<Record<string, unknown>>('SELECT * FROM workspace_agent_stats WHERE id = $1', [sample.id]);
    expect(stored.rows[0].created_at).toEqual(sample.createdAt);
    expect(stored.rows[0].connections_by_proto).toEqual(sample.connectionsByProto);
    expect(Number(stored.rows[0].rx_bytes)).toBe(sample.rxBytes);
    expect(stored.rows[0].connection_median_latency_ms).toBe(sample.connectionMedianLatencyMs);
    if (columnSet === '2025') {
      expect(Number(stored.rows[0].session_count_vscode)).toBe(sample.sessionCounts.vscode);
      expect(Number(stored.rows[0].session_count_ssh)).toBe(sample.sessionCounts.ssh);
    } else {
      const positive = Object.fromEntries(Object.entries(sample.sessionCounts).filter(([, value]) => value > 0));
      expect(stored.rows[0].session_counts).toEqual(positive);
    }
  });

  test('upsertAppStats keeps one row with the larger values', async () => {
    const { workspace } = await seedOneWorkspace();
    const first = appSession(workspace, { sessionStartedAt: at(0), sessionEndedAt: at(5), requests: 4 });
    const later = { ...first, sessionEndedAt: at(9), requests: 11 };
    const stale = { ...first, sessionEndedAt: at(7), requests: 6 };

    expect(await upsertAppStats(client, [first])).toEqual({ statements: 1, rows: 1 });
    expect(await upsertAppStats(client, [later])).toEqual({ statements: 1, rows: 1 });
    expect(await upsertAppStats(client, [stale])).toEqual({ statements: 1, rows: 0 });

    const { rows } = await client.query<{ session_ended_at: Date; requests: number }>(
      'SELECT session_ended_at, requests FROM workspace_app_stats WHERE session_id = $1',
      [first.sessionId],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0].session_ended_at).toEqual(later.sessionEndedAt);
    expect(rows[0].requests).toBe(later.requests);
  });

  test('upsertAppStats rejects a session twice in one call', async () => {
    const { workspace } = await seedOneWorkspace();
    const session = appSession(workspace, { sessionStartedAt: at(0), sessionEndedAt: at(5) });

    await expect(upsertAppStats(client, [session, { ...session, requests: 2 }])).rejects.toThrow(/appears twice/);
  });

  test('rollup stores the minutes of a hand-built case', async () => {
    const { workspace } = await seedOneWorkspace();
    const { agentRows, sessions } = handBuiltCase(workspace);
    await insertAgentStats(client, columnSet, agentRows);
    await upsertAppStats(client, sessions);

    const result = await rollupTemplateUsage(client, columnSet, rollupNow);

    const expected = expectedRollup(agentRows, sessions, columnSet);
    expect(result.statsRows).toBe(expected.size);
    expectBuckets(await storedBuckets(client, columnSet, workspace.ownerId), expected);
    if (columnSet === '2026') {
      const sessionRows = [...expected.values()].reduce((sum, bucket) => sum + Object.keys(bucket.sessionMinutes).length, 0);
      expect(result.sessionAppRows).toBe(sessionRows);
      const digests = await client.query('SELECT 1 FROM template_usage_stats WHERE session_usage_digest IS NULL');
      expect(digests.rowCount).toBe(0);
    }
  });

  test('rollup defaults to the server clock', async () => {
    const { workspace } = await seedOneWorkspace();
    const { agentRows, sessions } = handBuiltCase(workspace);
    await insertAgentStats(client, columnSet, agentRows);
    await upsertAppStats(client, sessions);

    // The hand-built hour lies in the past, so the server's now() covers it.
    await rollupTemplateUsage(client, columnSet);

    expectBuckets(await storedBuckets(client, columnSet, workspace.ownerId), expectedRollup(agentRows, sessions, columnSet));
  });

  test('rollup run twice changes nothing', async () => {
    const { workspace } = await seedOneWorkspace();
    const { agentRows, sessions } = handBuiltCase(workspace);
    await insertAgentStats(client, columnSet, agentRows);
    await upsertAppStats(client, sessions);
    const snapshot = async () =>
      (
        await client.query(
          `SELECT * FROM (
             SELECT 'stats' AS source, xmin::text AS version, to_jsonb(stats) AS row_value FROM template_usage_stats AS stats
             ${columnSet === '2026' ? "UNION ALL SELECT 'apps', xmin::text, to_jsonb(apps) FROM template_usage_stats_session_apps AS apps" : ''}
           ) AS snapshot
           ORDER BY source, row_value::text`,
        )
      ).rows;

    await rollupTemplateUsage(client, columnSet, rollupNow);
    const before = await snapshot();
    const second = await rollupTemplateUsage(client, columnSet, rollupNow);

    expect(second).toEqual({ statsRows: 0, sessionAppRows: 0, removedSessionAppRows: 0 });
    expect(await snapshot()).toEqual(before);
  });

  test('rollup updates a recomputed bucket in place', async () => {
    const { workspace } = await seedOneWorkspace();
    const { agentRows, sessions } = handBuiltCase(workspace);
    await insertAgentStats(client, columnSet, agentRows);
    await upsertAppStats(client, sessions);
    await rollupTemplateUsage(client, columnSet, rollupNow);

    // A late report adds minute 3 with a new session name to the first bucket.
    const late = agentStat(workspace, { createdAt: at(3, 20), sessionCounts: { reconnecting_pty: 1 }, connectionMedianLatencyMs: 25 });
    await insertAgentStats(client, columnSet, [late]);
    const result = await rollupTemplateUsage(client, columnSet, rollupNow);

    const expected = expectedRollup([...agentRows, late], sessions, columnSet);
    expect(result.statsRows).toBe(1);
    expectBuckets(await storedBuckets(client, columnSet, workspace.ownerId), expected);
    const count = await client.query<{ count: number }>('SELECT count(*)::integer AS count FROM template_usage_stats');
    expect(count.rows[0].count).toBe(expected.size);
  });

  test('rollup removes session apps a bucket no longer has', async () => {
    if (columnSet === '2025') return;
    const { workspace } = await seedOneWorkspace();
    const report = agentStat(workspace, { createdAt: at(1), sessionCounts: { ssh: 1 } });
    await insertAgentStats(client, columnSet, [report]);
    await rollupTemplateUsage(client, columnSet, rollupNow);

    // The same minute reported again as a vscode session: ssh disappears.
    await client.query('DELETE FROM workspace_agent_stats');
    await insertAgentStats(client, columnSet, [{ ...report, id: randomUUID(), sessionCounts: { vscode: 1 } }]);
    const result = await rollupTemplateUsage(client, columnSet, rollupNow);

    expect(result).toEqual({ statsRows: 1, sessionAppRows: 1, removedSessionAppRows: 1 });
    const { rows } = await client.query<{ app_name: string }>('SELECT app_name FROM template_usage_stats_session_apps');
    expect(rows.map((row) => row.app_name)).toEqual(['vscode']);
  });

  test('rollup keeps two ids of one user apart', async () => {
    const { workspace } = await seedOneWorkspace();
    // The agent reports carry a pseudonym, the app session the real id: the
    // state of a database where only one of the raw tables is pseudonymized.
    const pseudonym = randomUUID();
    const agentRows = [
      agentStat(workspace, { userId: pseudonym, createdAt: at(1), sessionCounts: { ssh: 1 }, connectionMedianLatencyMs: 10 }),
      agentStat(workspace, { userId: pseudonym, createdAt: at(2), sessionCounts: { ssh: 1 }, connectionMedianLatencyMs: 20 }),
    ];
    const sessions = [appSession(workspace, { sessionStartedAt: at(2), sessionEndedAt: at(6) })];
    await insertAgentStats(client, columnSet, agentRows);
    await upsertAppStats(client, sessions);

    const result = await rollupTemplateUsage(client, columnSet, rollupNow);

    expect(result.statsRows).toBe(2);
    const { rows } = await client.query<{ user_id: string; start_time: Date; template_id: string }>(
      'SELECT user_id, start_time, template_id FROM template_usage_stats ORDER BY user_id',
    );
    expect(rows.map((row) => row.user_id)).toEqual([pseudonym, workspace.ownerId].sort());
    expect(new Set(rows.map((row) => row.start_time.getTime()))).toEqual(new Set([hourStart.getTime()]));
    expect(new Set(rows.map((row) => row.template_id))).toEqual(new Set([workspace.templateId]));
    expectBuckets(await storedBuckets(client, columnSet, pseudonym), expectedRollup(agentRows, [], columnSet));
    expectBuckets(await storedBuckets(client, columnSet, workspace.ownerId), expectedRollup([], sessions, columnSet));
  });

  test('readInsights returns per-user and aggregate numbers', async () => {
    const { population, workspace } = await seedOneWorkspace();
    const { agentRows, sessions } = handBuiltCase(workspace);
    // A second id in the same template that matches no user, as a pseudonym
    // would: it counts in the aggregates but not in the per-user lists.
    const unknownId = randomUUID();
    const unknownRows = [
      agentStat(workspace, { userId: unknownId, createdAt: at(12), sessionCounts: { ssh: 1 }, connectionMedianLatencyMs: 70 }),
      agentStat(workspace, { userId: unknownId, createdAt: at(40), sessionCounts: { vscode: 1 }, connectionMedianLatencyMs: 90 }),
    ];
    await insertAgentStats(client, columnSet, [...agentRows, ...unknownRows]);
    await upsertAppStats(client, sessions);
    await rollupTemplateUsage(client, columnSet, rollupNow);

    const insights = await readInsights(client, columnSet, { from: hourStart, to: rollupNow });

    const known = [...expectedRollup(agentRows, sessions, columnSet).values()];
    const unknown = [...expectedRollup(unknownRows, [], columnSet).values()];
    const total = (buckets: ExpectedBucket[]) => buckets.reduce((sum, bucket) => sum + bucket.usageMins, 0);
    const user = population.users[0];
    const template = population.templates[0];

    expect(insights.userActivity).toEqual([
      { userId: user.id, username: user.username, templateId: template.id, templateName: template.name, usageMinutes: total(known) },
    ]);

    const medians = known.map((bucket) => bucket.medianLatencyMs).filter((value): value is number => value !== null);
    expect(insights.userLatency).toHaveLength(1);
    expect(insights.userLatency[0]).toMatchObject({ userId: user.id, username: user.username, templateId: template.id });
    expect(insights.userLatency[0].latencyP50Ms).toBeCloseTo(percentileCont(medians, 0.5), 3);
    expect(insights.userLatency[0].latencyP95Ms).toBeCloseTo(percentileCont(medians, 0.95), 3);

    expect(insights.templates).toEqual([
      { templateId: template.id, templateName: template.name, activeUsers: 2, usageMinutes: total(known) + total(unknown) },
    ]);

    const byName = (field: 'appMinutes' | 'sessionMinutes') => {
      const sums = new Map<string, { minutes: number; users: number }>();
      for (const buckets of [known, unknown]) {
        const perUser = new Map<string, number>();
        for (const bucket of buckets) {
          for (const [name, minutes] of Object.entries(bucket[field])) perUser.set(name, (perUser.get(name) ?? 0) + minutes);
        }
        for (const [name, minutes] of perUser) {
          const sum = sums.get(name) ?? { minutes: 0, users: 0 };
          sums.set(name, { minutes: sum.minutes + minutes, users: sum.users + 1 });
        }
      }
      return [...sums]
        .sort(([left], [right]) => (left < right ? -1 : 1))
        .map(([name, sum]) => ({ templateId: template.id, templateName: template.name, name, activeUsers: sum.users, usageMinutes: sum.minutes }));
    };
    expect(insights.apps).toEqual(byName('appMinutes'));
    expect(insights.sessions).toEqual(byName('sessionMinutes'));
  });

  test('readInsights leaves out buckets outside the range', async () => {
    const { workspace } = await seedOneWorkspace();
    const { agentRows, sessions } = handBuiltCase(workspace);
    await insertAgentStats(client, columnSet, agentRows);
    await upsertAppStats(client, sessions);
    await rollupTemplateUsage(client, columnSet, rollupNow);

    const firstHalf = await readInsights(client, columnSet, { from: hourStart, to: at(30) });

    const firstBucket = expectedRollup(agentRows, sessions, columnSet).get(hourStart.getTime())!;
    expect(firstHalf.userActivity.map((row) => row.usageMinutes)).toEqual([firstBucket.usageMins]);
  });

  test('generated traffic rolls up into insights', async () => {
    const population = buildPopulation({ users: 3, templates: 2, workspacesPerUser: 1 });
    await insertPopulation(client, population);
    const from = hourStart;
    const to = new Date(hourStart.getTime() + 2 * 60 * minuteMs);
    const options = { from, to, agentReportSeconds: 30, appSessionsPerUser: 3, appReportSeconds: 120, seed: 7 };
    const traffic = generateTraffic(population, options);

    const written = await writeTraffic(client, columnSet, traffic);
    await rollupTemplateUsage(client, columnSet, to);
    const second = await rollupTemplateUsage(client, columnSet, to);
    const insights = await readInsights(client, columnSet, { from, to });

    expect(written.agentStats.rows).toBe(traffic.agentStats.length);
    const sessionIds = new Set(traffic.appStatReports.flat().map((session) => session.sessionId));
    const stored = await client.query<{ count: number }>('SELECT count(*)::integer AS count FROM workspace_app_stats');
    expect(stored.rows[0].count).toBe(sessionIds.size);
    expect(second.statsRows).toBe(0);
    const userIds = new Set(population.users.map((user) => user.id));
    for (const row of insights.userActivity) expect(userIds.has(row.userId)).toBe(true);
    expect(insights.templates.reduce((sum, row) => sum + row.usageMinutes, 0)).toBe(
      insights.userActivity.reduce((sum, row) => sum + row.usageMinutes, 0),
    );
  });
});

describe('generateTraffic', () => {
  const population = buildPopulation({ users: 4, templates: 2, workspacesPerUser: 2 }, hourStart);
  const from = hourStart;
  const to = new Date(hourStart.getTime() + 3 * 60 * minuteMs);

  test('same seed gives the same traffic', () => {
    const options = { from, to, seed: 42 };

    expect(generateTraffic(population, options)).toEqual(generateTraffic(population, options));
    expect(generateTraffic(population, options)).not.toEqual(generateTraffic(population, { ...options, seed: 43 }));
  });

  test('rows belong to the population', () => {
    const traffic = generateTraffic(population, { from, to, seed: 1 });

    const workspaces = new Map(population.workspaces.map((workspace) => [workspace.id, workspace]));
    for (const row of traffic.agentStats) {
      const workspace = workspaces.get(row.workspaceId)!;
      expect([row.userId, row.agentId, row.templateId]).toEqual([workspace.ownerId, workspace.agentId, workspace.templateId]);
      expect(row.createdAt.getTime()).toBeGreaterThanOrEqual(from.getTime());
      expect(row.createdAt.getTime()).toBeLessThan(to.getTime());
    }
    for (const session of traffic.appStatReports.flat()) {
      expect(workspaces.get(session.workspaceId)!.ownerId).toBe(session.userId);
    }
  });

  test('open sessions are reported again with later ends', () => {
    const traffic = generateTraffic(population, { from, to, appSessionsPerUser: 5, seed: 3 });

    const reportsPerSession = new Map<string, AppStatSession[]>();
    for (const report of traffic.appStatReports) {
      expect(new Set(report.map((session) => session.sessionId)).size).toBe(report.length);
      for (const session of report) reportsPerSession.set(session.sessionId, [...(reportsPerSession.get(session.sessionId) ?? []), session]);
    }
    const repeated = [...reportsPerSession.values()].filter((reports) => reports.length > 1);
    expect(repeated.length).toBeGreaterThan(0);
    for (const reports of repeated) {
      for (let index = 1; index < reports.length; index++) {
        expect(reports[index].sessionEndedAt.getTime()).toBeGreaterThan(reports[index - 1].sessionEndedAt.getTime());
        expect(reports[index].requests).toBeGreaterThanOrEqual(reports[index - 1].requests);
      }
    }
    const lastReport = traffic.appStatReports[traffic.appStatReports.length - 1];
    expect(lastReport.some((session) => session.sessionEndedAt.getTime() === to.getTime())).toBe(true);
  });

  test('invalid range is rejected', () => {
    expect(() => generateTraffic(population, { from: to, to: from })).toThrow(/from must be before to/);
  });
});
