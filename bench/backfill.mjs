// Measures the backfill rate: for each usage table, one million rows with
// real user ids (by default), pseudonymized and then purged in batches of
// 5000 rows, on an embedded PostgreSQL 18. Prints rows per second.
//
//   npm run build && node bench/backfill.mjs [rows] [batch size] [table ...]
// bench:quick 50000
//
// The rows lie days before the newest rollup bucket, so the cut-over of
// apply converts none of them and the backfill does all the work.
import pg from 'pg';
import { applyEnforcement } from '../dist/commands/apply.js';
import { runBackfill } from '../dist/commands/backfill.js';
import { startEmbeddedServer } from '../dist/embedded/server.js';
import { createCoderSchema, seedPopulation } from '../dist/fixture/index.js';

const rows = Number(process.argv[2] ?? 1_000_000);
const batchSize = Number(process.argv[3] ?? 5000);
const lock = { lockTimeoutMs: 2000, retries: 5 };

if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(batchSize) || batchSize < 1) {
  console.error(`usage: node bench/backfill.mjs [rows] [batch size] [table ...]: rows and batch size must be positive integers, got "${process.argv[2]}" and "${process.argv[3]}"`);
  process.exit(2);
}

const workspaces = `
  SELECT w.id, w.owner_id, w.template_id, a.id AS agent_id, row_number() OVER (ORDER BY w.id) - 1 AS idx
  FROM workspaces AS w JOIN workspace_agents AS a ON a.workspace_id = w.id`;

/** SQL that fills one table with `rows` rows of real user ids, days in the past. */
const fill = {
  workspace_agent_stats: `
    INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, template_id, connection_count)
    SELECT gen_random_uuid(), now() - interval '20 days' + i * interval '1 second', w.owner_id, w.agent_id, w.id, w.template_id, 1
    FROM generate_series(0, $1::integer - 1) AS i JOIN (${workspaces}) AS w ON w.idx = i % 1000`,
  workspace_app_stats: `
    INSERT INTO workspace_app_stats (user_id, workspace_id, agent_id, access_method, slug_or_port, session_id, session_started_at, session_ended_at, requests)
    SELECT w.owner_id, w.id, w.agent_id, 'path', 'code-server', gen_random_uuid(), now() - interval '20 days' + i * interval '1 second',
           now() - interval '20 days' + i * interval '1 second' + interval '5 minutes', 10
    FROM generate_series(0, $1::integer - 1) AS i JOIN (${workspaces}) AS w ON w.idx = i % 1000`,
  // Buckets of 30 minutes for every workspace; 1000 workspaces fill one bucket.
  template_usage_stats: `
    INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, median_latency_ms, app_usage_mins, session_usage_digest)
    SELECT date_trunc('hour', now()) - interval '60 days' + (i / 1000) * interval '30 minutes',
           date_trunc('hour', now()) - interval '60 days' + (i / 1000 + 1) * interval '30 minutes',
           w.template_id, w.owner_id, 1 + i % 30, 20, jsonb_build_object('code-server', 1 + i % 20), 0
    FROM generate_series(0, $1::integer - 1) AS i JOIN (${workspaces}) AS w ON w.idx = i % 1000`,
};

async function measure(server, table) {
  const name = `benchmark_${table}`;
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();

  const client = new pg.Client({ connectionString: server.databaseUrl(name) });
  await client.connect();
  try {
    await createCoderSchema(client, '2026');
    await seedPopulation(client, { users: 1000, templates: 10, workspacesPerUser: 1 });
    await client.query(fill[table], [rows]);
    if (table === 'template_usage_stats') {
      await client.query(`INSERT INTO template_usage_stats_session_apps (start_time, template_id, user_id, app_name, usage_mins)
                          SELECT start_time, template_id, user_id, 'vscode', usage_mins FROM template_usage_stats`);
    }
    // A current bucket keeps the cut-over's window, which starts an hour
    // before the newest bucket, away from the old rows.
    await client.query(`INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, session_usage_digest)
                        SELECT date_trunc('hour', now()), date_trunc('hour', now()) + interval '30 minutes', template_id, owner_id, 1, 0
                        FROM workspaces ORDER BY id LIMIT 1`);
    await client.query('VACUUM ANALYZE');
    await applyEnforcement(client, { mode: 'anonymize', scope: 'source', schema: 'insights_privacy', profile: 'coder', dryRun: false, lock });

    for (const existing of ['pseudonymize', 'purge']) {
      if (existing === 'purge') {
        // Purge needs rows with real ids again: put them back past the triggers.
        await client.query('TRUNCATE template_usage_stats, template_usage_stats_session_apps, workspace_agent_stats, workspace_app_stats');
        await client.query(`ALTER TABLE ${table} DISABLE TRIGGER zz_insights_privacy`);
        await client.query(fill[table], [rows]);
        await client.query(`ALTER TABLE ${table} ENABLE ALWAYS TRIGGER zz_insights_privacy`);
        await client.query('VACUUM ANALYZE');
      }
      const startedAt = performance.now();
      const result = await runBackfill(client, { existing, schema: 'insights_privacy', profile: 'coder', batchSize, lock });
      const seconds = (performance.now() - startedAt) / 1000;
      const walked = result.tables.find((entry) => entry.table === table);
      console.log(
        `${table.padEnd(22)} ${existing.padEnd(12)} ${walked.rowsWalkedThisRun} rows walked, ${walked.rowsChanged} changed: ` +
          `${seconds.toFixed(1)} s including the planning scan, ${Math.round(walked.rowsWalkedThisRun / seconds)} rows/s ` +
          `(walk alone ${Math.round(walked.rowsPerSecond)} rows/s)`,
      );
    }
  } finally {
    await client.end();
  }
}

const server = await startEmbeddedServer();
try {
  console.log(`backfill of ${rows} rows per table, batches of ${batchSize} rows`);
  const tables = process.argv.length > 4 ? process.argv.slice(4) : Object.keys(fill);
  for (const table of tables) {
    if (!(table in fill)) throw new Error(`Unknown table ${table}: expected one of ${Object.keys(fill).join(', ')}`);
    await measure(server, table);
  }
} finally {
  await server.stop();
}
