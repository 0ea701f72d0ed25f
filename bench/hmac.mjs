// Measures what each HMAC implementation costs a writer, pgcrypto's hmac()
// and HMAC on core sha256(), on one embedded PostgreSQL 18. It reports rows
// per second of INSERT … SELECT through the anonymize trigger, and
// pseudonym() calls per second on their own. Inserts without a trigger (mode
// off) give the reference. Each figure is the median of 3 runs after one
// warm-up run.
//
// Run after a build: npm run build && node bench/hmac.mjs [rows]
// (rows per run, default 200000).
// bench:quick 20000
import pg from 'pg';
import { applyEnforcement } from '../dist/commands/apply.js';
import { startEmbeddedServer } from '../dist/embedded/server.js';
import { createCoderSchema, seedPopulation } from '../dist/fixture/index.js';

const rows = Number(process.argv[2] ?? 200_000);
const measuredRuns = 3;
const schema = 'insights_privacy';

if (!Number.isInteger(rows) || rows < 1) {
  console.error(`usage: node bench/hmac.mjs [rows]: rows must be a positive integer, got "${process.argv[2]}"`);
  process.exit(2);
}

/** Installs a mode, and for anonymize the given HMAC implementation. */
async function install(client, implementation) {
  await applyEnforcement(client, {
    mode: implementation === 'none' ? 'off' : 'anonymize',
    scope: 'source',
    hmac: implementation === 'none' ? 'auto' : implementation,
    schema,
    profile: 'coder',
    dryRun: false,
    lock: { lockTimeoutMs: 5000, retries: 0 },
  });
}

/** Inserts `rows` agent reports with fresh random user ids in one statement and returns the seconds it took. */
async function timeInsert(client, workspace) {
  await client.query('TRUNCATE workspace_agent_stats');
  await client.query('VACUUM ANALYZE workspace_agent_stats');
  const started = process.hrtime.bigint();
  await client.query(
    `INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, template_id, connection_count)
     SELECT gen_random_uuid(), now(), gen_random_uuid(), $2, $3, $4, 1
     FROM generate_series(1, $1)`,
    [rows, workspace.agentId, workspace.id, workspace.templateId],
  );
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/** Calls pseudonym() `rows` times on fresh random ids and returns the seconds it took. */
async function timeFunction(client) {
  const started = process.hrtime.bigint();
  await client.query(`SELECT count(${schema}.pseudonym(gen_random_uuid())) FROM generate_series(1, $1)`, [rows]);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

const server = await startEmbeddedServer();
const admin = new pg.Client({ connectionString: server.url });
try {
  await admin.connect();
  await admin.query('CREATE DATABASE hmac_bench');
  const client = new pg.Client({ connectionString: server.databaseUrl('hmac_bench') });
  await client.connect();
  try {
    await createCoderSchema(client, '2025');
    const population = await seedPopulation(client, { users: 4, templates: 1, workspacesPerUser: 1 });
    const workspace = population.workspaces[0];
    const { rows: version } = await client.query("SELECT current_setting('server_version') AS version");

    const implementations = ['none', 'pgcrypto', 'core'];
    const samples = Object.fromEntries(implementations.map((name) => [name, { insert: [], calls: [] }]));

    // Round 0 is the warm-up. The implementations take turns in every round,
    // so that a slow phase of the machine does not land on one of them.
    for (let round = 0; round <= measuredRuns; round += 1) {
      for (const implementation of implementations) {
        await install(client, implementation);
        const insertSeconds = await timeInsert(client, workspace);
        const callSeconds = implementation === 'none' ? null : await timeFunction(client);
        if (round === 0) continue;
        samples[implementation].insert.push(rows / insertSeconds);
        if (callSeconds !== null) samples[implementation].calls.push(rows / callSeconds);
      }
    }

    const format = (value) => Math.round(value).toLocaleString('en-US');
    console.log(`PostgreSQL ${version[0].version}, ${rows.toLocaleString('en-US')} rows per run, median of ${measuredRuns} runs after one warm-up`);
    console.log('implementation  insert rows/s  pseudonym() calls/s');
    for (const implementation of implementations) {
      const { insert, calls } = samples[implementation];
      const label = implementation === 'none' ? 'no trigger' : implementation;
      console.log(`${label.padEnd(16)}${format(median(insert)).padStart(13)}  ${calls.length > 0 ? format(median(calls)).padStart(19) : '-'.padStart(19)}`);
    }
    const ratio = (kind) => (median(samples.core[kind]) / median(samples.pgcrypto[kind])).toFixed(2);
    console.log(`core / pgcrypto: ${ratio('insert')} for inserts, ${ratio('calls')} for pseudonym() calls`);
  } finally {
    await client.end();
  }
} finally {
  await admin.end();
  await server.stop();
}
