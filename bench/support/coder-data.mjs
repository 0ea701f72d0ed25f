// Fills Coder-shaped tables with millions of rows fast: INSERT … SELECT from
// generate_series, with the big tables' indexes and constraints dropped
// while they load and built again afterwards, as a restore would.
import { createCoderSchema, seedPopulation } from '../../dist/fixture/index.js';
import { log } from './harness.mjs';

/** Rows per INSERT, so that a load of millions of rows reports its progress. */
const chunkRows = 1_000_000;

/** Seconds between two reports of one agent: the default of Coder's --agent-stats-refresh-interval. */
export const agentReportSeconds = 30;

/**
 * Creates Coder's tables (2026 column set) and a population with one
 * workspace, and one agent, per user. Also creates the session's temporary
 * table bench_workspaces, which numbers the workspaces from 0 for the fill
 * statements. Returns the population.
 */
export async function createPopulation(client, { users, templates = 20 }) {
  await createCoderSchema(client, '2026');
  const population = await seedPopulation(client, { users, templates: Math.min(templates, users), workspacesPerUser: 1 });
  await numberWorkspaces(client);
  return population;
}

/** Creates the temporary table bench_workspaces for a session of a database that has a population. */
export async function numberWorkspaces(client) {
  await client.query(`
    CREATE TEMPORARY TABLE IF NOT EXISTS bench_workspaces AS
    SELECT w.id, w.owner_id, w.template_id, a.id AS agent_id, (row_number() OVER (ORDER BY w.id) - 1)::integer AS idx
    FROM workspaces AS w JOIN workspace_agents AS a ON a.workspace_id = w.id`);
  await client.query('CREATE UNIQUE INDEX IF NOT EXISTS bench_workspaces_idx ON bench_workspaces (idx)');
  await client.query('ANALYZE bench_workspaces');
}

/**
 * Runs `load` with the table's indexes and its primary key, unique and
 * foreign key constraints dropped, and builds them again afterwards under
 * their own names. Constraints that other tables' foreign keys depend on
 * must not be dropped, so a table that is referenced (template_usage_stats)
 * keeps its constraints.
 */
export async function withoutIndexes(client, table, load) {
  const { rows: constraints } = await client.query(
    `SELECT conname AS name, contype AS type, pg_get_constraintdef(oid) AS definition
     FROM pg_constraint WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'f')
     ORDER BY CASE contype WHEN 'f' THEN 0 ELSE 1 END`,
    [table],
  );
  const { rows: indexes } = await client.query(
    `SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
     FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
     WHERE i.indrelid = $1::regclass
       AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)`,
    [table],
  );
  for (const constraint of constraints) await client.query(`ALTER TABLE ${table} DROP CONSTRAINT "${constraint.name}"`);
  for (const index of indexes) await client.query(`DROP INDEX "${index.name}"`);

  await load();

  const startedAt = performance.now();
  for (const index of indexes) await client.query(index.definition);
  for (const constraint of [...constraints].reverse()) {
    await client.query(`ALTER TABLE ${table} ADD CONSTRAINT "${constraint.name}" ${constraint.definition}`);
  }
  log(`${table}: ${indexes.length} index(es) and ${constraints.length} constraint(s) built in ${((performance.now() - startedAt) / 1000).toFixed(1)} s`);
}

/** Runs `insert(offset, count)` over `rows` rows in chunks, logging each. */
async function inChunks(table, rows, insert) {
  for (let offset = 0; offset < rows; offset += chunkRows) {
    const count = Math.min(chunkRows, rows - offset);
    await insert(offset, count);
    log(`${table}: ${offset + count} of ${rows} rows`);
  }
}

/**
 * Fills workspace_agent_stats with `rows` agent reports whose created_at is
 * spread evenly from `from` to `to`, each from the next workspace in turn,
 * all with real user ids and one open session, as an agent of a connected
 * user reports.
 */
export async function fillAgentStats(client, { rows, from, to }) {
  await withoutIndexes(client, 'workspace_agent_stats', () =>
    inChunks('workspace_agent_stats', rows, (offset, count) =>
      client.query(
        `INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, template_id, connection_count,
                                            rx_bytes, tx_bytes, connection_median_latency_ms, session_counts)
         SELECT gen_random_uuid(), $3::timestamptz + (i::float8 / $4) * ($5::timestamptz - $3::timestamptz),
                w.owner_id, w.agent_id, w.id, w.template_id, 1, 4096, 8192, 10 + i % 40,
                CASE WHEN i % 2 = 0 THEN '{"vscode": 1}'::jsonb ELSE '{"ssh": 1}'::jsonb END
         FROM generate_series($1::bigint, $1::bigint + $2 - 1) AS i
         JOIN bench_workspaces AS w ON w.idx = i % (SELECT count(*) FROM bench_workspaces)`,
        [offset, count, from, rows, to],
      ),
    ),
  );
}

/**
 * Fills workspace_app_stats with `rows` app sessions of 20 minutes whose
 * starts are spread evenly from `from` to `to`, with real user ids.
 */
export async function fillAppStats(client, { rows, from, to }) {
  await withoutIndexes(client, 'workspace_app_stats', () =>
    inChunks('workspace_app_stats', rows, (offset, count) =>
      client.query(
        `INSERT INTO workspace_app_stats (user_id, workspace_id, agent_id, access_method, slug_or_port, session_id,
                                          session_started_at, session_ended_at, requests)
         SELECT w.owner_id, w.id, w.agent_id, 'path', CASE WHEN i % 3 = 0 THEN 'jupyter' ELSE 'code-server' END, gen_random_uuid(),
                $3::timestamptz + (i::float8 / $4) * ($5::timestamptz - $3::timestamptz),
                $3::timestamptz + (i::float8 / $4) * ($5::timestamptz - $3::timestamptz) + interval '20 minutes', 1 + i % 50
         FROM generate_series($1::bigint, $1::bigint + $2 - 1) AS i
         JOIN bench_workspaces AS w ON w.idx = i % (SELECT count(*) FROM bench_workspaces)`,
        [offset, count, from, rows, to],
      ),
    ),
  );
  await client.query(`SELECT setval('workspace_app_stats_id_seq', (SELECT max(id) FROM workspace_app_stats))`);
}

/**
 * Fills template_usage_stats, and one child row each in
 * template_usage_stats_session_apps, with `rows` rollup rows: the
 * 30-minute buckets that end at `to`, going back in time, each with the
 * same number of active users (at most one row per workspace owner and
 * bucket). Real user ids. The newest bucket starts 30 minutes before `to`.
 */
export async function fillRollup(client, { rows, to, usersPerBucket }) {
  const perBucket = Math.max(1, usersPerBucket);
  await inChunks('template_usage_stats', rows, async (offset, count) => {
    const rollupRows = `
      SELECT $3::timestamptz - (1 + i / $4) * interval '30 minutes' AS start_time,
             w.template_id, w.owner_id AS user_id, i
      FROM generate_series($1::bigint, $1::bigint + $2 - 1) AS i
      JOIN bench_workspaces AS w ON w.idx = (i % $4) % (SELECT count(*) FROM bench_workspaces)`;
    await client.query(
      `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, median_latency_ms, usage_mins, app_usage_mins, session_usage_digest)
       SELECT r.start_time, r.start_time + interval '30 minutes', r.template_id, r.user_id, 20, 1 + r.i % 30,
              jsonb_build_object('code-server', 1 + r.i % 20), 0
       FROM (${rollupRows}) AS r
       ON CONFLICT DO NOTHING`,
      [offset, count, to, perBucket],
    );
    await client.query(
      `INSERT INTO template_usage_stats_session_apps (start_time, template_id, user_id, app_name, usage_mins)
       SELECT r.start_time, r.template_id, r.user_id, 'code-server', 1 + r.i % 20
       FROM (${rollupRows}) AS r
       ON CONFLICT DO NOTHING`,
      [offset, count, to, perBucket],
    );
  });
}

/** Returns the start of the current half hour, the bucket Coder's rollup writes now. */
export function currentBucket(now = new Date()) {
  const bucketMs = 30 * 60_000;
  return new Date(Math.floor(now.getTime() / bucketMs) * bucketMs);
}
