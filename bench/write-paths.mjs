// Measures what each enforcement mode costs Coder's write paths into the
// usage tables, against no enforcement (mode off) on the same database in the
// same process:
//   agent-stats   the agent stats batcher: INSERT … SELECT FROM unnest(…) of
//                 1024-row arrays into workspace_agent_stats (rows/s)
//   app-stats     the app stats collector: the same form with ON CONFLICT DO
//                 UPDATE into workspace_app_stats, each batch half updates of
//                 stored sessions and half new sessions (rows/s)
//   rollup        the rollup INSERT … SELECT … GROUP BY … ON CONFLICT DO
//                 UPDATE into template_usage_stats over one day of raw rows
//                 (raw rows/s)
//   single-row    one INSERT of one row per statement, as a prepared
//                 statement, into each usage table (latency median and p99)
// The write paths are those of src/fixture (traffic.ts and rollup.ts), on the
// fixture's copy of Coder's tables and indexes, for the 2025 and the 2026
// column set.
//
// Modes: off, disable, and anonymize with each HMAC implementation (pgcrypto
// and core), under the key rotation policy given by --rotate. Every round
// applies each mode in turn and runs every write path under it, and the order
// of the modes shifts by one each round, so a slow phase of the machine does
// not land on one mode. Round 0 is a warm-up and is not recorded. The ratio
// to off is the median over rounds of (cost under the mode / cost under off
// in the same round), where the cost is seconds per row, or the latency.
//
// Two costs are measured: the wall time that the client waits, and the CPU
// time of the server process that runs the bench session, read from
// /proc/PID/schedstat (only when the server runs on this machine). On a
// machine shared with other work the wall time also counts the time the
// server process waits for a CPU, so the CPU time gives the steadier ratio.
// Neither counts the work of other server processes, such as the WAL writer.
//
// The rollup reads its raw rows from the schema bench_input, which the
// connection's search_path puts before public for that statement only. Those
// rows carry real user ids and have no trigger, so every mode rolls up the
// same input and anonymize hashes every rollup row it writes.
//
// The bench session runs with synchronous_commit = off, so that a commit does
// not wait for the disk: the cost of a flush would hide the cost of the
// trigger, and a flush on a shared virtual disk varies a lot. --durable keeps
// the server's setting.
//
// Run after a build:
//   npm run build && node bench/write-paths.mjs [--rounds 7] [--column-sets 2025,2026]
//     [--rotate none] [--batches 16] [--single-rows 300] [--rollup-agents 40] [--durable]
//     [--output bench/results/write-paths.json]
// With DATABASE_URL set it creates its databases on that server instead of
// starting an embedded PostgreSQL; the role needs CREATEDB.
import { randomUUID } from 'node:crypto';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { applyEnforcement } from '../dist/commands/apply.js';
import { startEmbeddedServer } from '../dist/embedded/server.js';
import { createCoderSchema, generateTraffic, insertAgentStats, maxBatchRows, rollupTemplateUsage, seedPopulation, upsertAppStats, writeTraffic } from '../dist/fixture/index.js';

const { values: options } = parseArgs({
  options: {
    rounds: { type: 'string', default: '7' },
    'column-sets': { type: 'string', default: '2025,2026' },
    modes: { type: 'string', default: 'off,disable,anonymize-pgcrypto,anonymize-core' },
    rotate: { type: 'string', default: 'none' },
    batches: { type: 'string', default: '16' },
    'single-rows': { type: 'string', default: '300' },
    'rollup-agents': { type: 'string', default: '40' },
    durable: { type: 'boolean', default: false },
    output: { type: 'string', default: 'bench/results/write-paths.json' },
  },
});

function positiveInteger(name) {
  const value = Number(options[name]);
  if (!Number.isInteger(value) || value < 1) {
    console.error(`Invalid --${name} "${options[name]}": expected a positive integer`);
    process.exit(2);
  }
  return value;
}

const rounds = positiveInteger('rounds');
const batches = positiveInteger('batches');
const singleRows = positiveInteger('single-rows');
const rollupAgents = positiveInteger('rollup-agents');
const columnSets = options['column-sets'].split(',');
const modes = options.modes.split(',');
const knownModes = ['off', 'disable', 'anonymize-pgcrypto', 'anonymize-core'];
for (const mode of modes) {
  if (!knownModes.includes(mode)) {
    console.error(`Invalid mode "${mode}" in --modes: expected some of ${knownModes.join(', ')}`);
    process.exit(2);
  }
}
if (!modes.includes('off')) {
  console.error('Invalid --modes: the list must include off, the baseline of every ratio');
  process.exit(2);
}

const schema = 'insights_privacy';
const lock = { lockTimeoutMs: 5000, retries: 3 };
const minuteMs = 60_000;
const halfHourMs = 30 * minuteMs;

/** Applies one benchmark mode with the tool itself. */
async function install(client, mode) {
  const [toolMode, hmac] = mode.split('-');
  await applyEnforcement(client, {
    mode: toolMode,
    scope: 'source',
    hmac: hmac ?? 'auto',
    rotate: options.rotate,
    schema,
    profile: 'coder',
    dryRun: false,
    lock,
  });
}

function seconds(started) {
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/**
 * Reads the CPU time in seconds that the server process of the bench session
 * has run, from /proc/PID/schedstat; null when the server runs elsewhere.
 * Unlike the wall time, waiting for a CPU that other processes hold does
 * not add to it.
 */
async function backendCpuSeconds(pid) {
  if (pid === null) return null;
  const text = await readFile(`/proc/${pid}/schedstat`, 'utf8');
  return Number(text.split(' ')[0]) / 1e9;
}

/** Runs `action` and returns its wall time and the bench session's server CPU time, in seconds. */
async function timed(context, action) {
  const cpuBefore = await backendCpuSeconds(context.pid);
  const started = process.hrtime.bigint();
  await action();
  const wall = seconds(started);
  const cpuAfter = await backendCpuSeconds(context.pid);
  return { wall, cpu: cpuBefore === null ? null : cpuAfter - cpuBefore };
}

const perRow = (time, rows) => ({ wall: time.wall / rows, cpu: time.cpu === null ? null : time.cpu / rows });

/** Agent reports of the recent past for random workspaces of the population, each with a fresh id. */
function agentRows(workspaces, count, end) {
  return Array.from({ length: count }, (_, index) => {
    const workspace = workspaces[index % workspaces.length];
    return {
      id: randomUUID(),
      createdAt: new Date(end - (count - index) * 100),
      userId: workspace.ownerId,
      agentId: workspace.agentId,
      workspaceId: workspace.id,
      templateId: workspace.templateId,
      connectionCount: 1,
      sessionCounts: { ssh: 1, vscode: index % 2 },
      connectionsByProto: { ssh: 1 },
      rxPackets: 10,
      rxBytes: 1000,
      txPackets: 12,
      txBytes: 1400,
      connectionMedianLatencyMs: 12.5,
    };
  });
}

/** One app session report per workspace in turn, started in the last hour. */
function appSessions(workspaces, count, end) {
  return Array.from({ length: count }, (_, index) => {
    const workspace = workspaces[index % workspaces.length];
    const started = new Date(end - 50 * minuteMs + (index % 600) * 1000);
    return {
      userId: workspace.ownerId,
      workspaceId: workspace.id,
      agentId: workspace.agentId,
      accessMethod: 'path',
      slugOrPort: 'code-server',
      sessionId: randomUUID(),
      sessionStartedAt: started,
      sessionEndedAt: new Date(started.getTime() + minuteMs),
      requests: 5,
    };
  });
}

/** Times `batches` agent stats batches of 1024 rows into an empty table and returns seconds per row. */
async function measureAgentStats(context, columnSet, workspaces) {
  const { client } = context;
  await client.query('TRUNCATE workspace_agent_stats');
  const rows = agentRows(workspaces, batches * maxBatchRows, Date.now());
  const time = await timed(context, () => insertAgentStats(client, columnSet, rows));
  return perRow(time, rows.length);
}

/**
 * Stores `batches` × 512 sessions untimed, then times `batches` upserts of
 * 1024 sessions: 512 later reports of stored sessions and 512 new ones.
 * Returns seconds per row sent.
 */
async function measureAppStats(context, workspaces) {
  const { client } = context;
  await client.query('TRUNCATE workspace_app_stats');
  const half = maxBatchRows / 2;
  const end = Date.now();
  const stored = appSessions(workspaces, batches * half, end);
  await upsertAppStats(client, stored);

  const fresh = appSessions(workspaces, batches * half, end);
  const reports = [];
  for (let batch = 0; batch < batches; batch += 1) {
    const updates = stored.slice(batch * half, (batch + 1) * half).map((session) => ({
      ...session,
      sessionEndedAt: new Date(session.sessionEndedAt.getTime() + 5 * minuteMs),
      requests: session.requests + 7,
    }));
    reports.push([...updates, ...fresh.slice(batch * half, (batch + 1) * half)]);
  }

  const time = await timed(context, async () => {
    for (const report of reports) await upsertAppStats(client, report);
  });
  return perRow(time, batches * maxBatchRows);
}

/** Rolls one day of raw rows in bench_input up into an empty template_usage_stats and returns seconds per raw row. */
async function measureRollup(context, columnSet, rollup) {
  const { client } = context;
  await client.query('TRUNCATE template_usage_stats CASCADE');
  await client.query('BEGIN');
  try {
    await client.query('SET LOCAL search_path = bench_input, public');
    const time = await timed(context, () => rollupTemplateUsage(client, columnSet, rollup.end));
    await client.query('COMMIT');
    return perRow(time, rollup.rawRows);
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  }
}

/** The single-row INSERT of each usage table: its prepared statement and a builder of fresh parameters. */
function singleRowStatements(columnSet, workspaces) {
  const end = Date.now();
  // Rollup buckets far from the raw rows' window, one per row, so no two rows of a run conflict.
  const bucketStart = Date.parse('2024-01-01T00:00:00Z');
  const workspace = (index) => workspaces[index % workspaces.length];
  const sessionAppParent = { start: new Date(bucketStart - halfHourMs), workspace: workspaces[0] };

  const statements = {
    workspace_agent_stats: {
      text:
        columnSet === '2025'
          ? `INSERT INTO workspace_agent_stats (id, created_at, user_id, workspace_id, template_id, agent_id, connection_count, rx_bytes, tx_bytes, connection_median_latency_ms, session_count_ssh)
             VALUES ($1, $2, $3, $4, $5, $6, 1, 1000, 1400, 12.5, 1)`
          : `INSERT INTO workspace_agent_stats (id, created_at, user_id, workspace_id, template_id, agent_id, connection_count, rx_bytes, tx_bytes, connection_median_latency_ms, session_counts)
             VALUES ($1, $2, $3, $4, $5, $6, 1, 1000, 1400, 12.5, '{"ssh": 1}')`,
      values: (index) => [randomUUID(), new Date(end - index * 100), workspace(index).ownerId, workspace(index).id, workspace(index).templateId, workspace(index).agentId],
    },
    workspace_app_stats: {
      text: `INSERT INTO workspace_app_stats (user_id, workspace_id, agent_id, access_method, slug_or_port, session_id, session_started_at, session_ended_at, requests)
             VALUES ($1, $2, $3, 'path', 'code-server', $4, $5, $6, 5)`,
      values: (index) => [workspace(index).ownerId, workspace(index).id, workspace(index).agentId, randomUUID(), new Date(end - index * 1000), new Date(end)],
    },
    template_usage_stats: {
      text:
        columnSet === '2025'
          ? `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, median_latency_ms, ssh_mins, sftp_mins, reconnecting_pty_mins, vscode_mins, jetbrains_mins)
             VALUES ($1, $2, $3, $4, 10, 12.5, 10, 0, 0, 0, 0)`
          : `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, median_latency_ms, session_usage_digest)
             VALUES ($1, $2, $3, $4, 10, 12.5, 0)`,
      values: (index) => [new Date(bucketStart + index * halfHourMs), new Date(bucketStart + (index + 1) * halfHourMs), workspace(index).templateId, workspace(index).ownerId],
    },
  };
  if (columnSet === '2026') {
    statements.template_usage_stats_session_apps = {
      text: `INSERT INTO template_usage_stats_session_apps (start_time, template_id, user_id, app_name, usage_mins) VALUES ($1, $2, $3, $4, 5)`,
      values: (index) => [sessionAppParent.start, sessionAppParent.workspace.templateId, sessionAppParent.workspace.ownerId, `app-${index}`],
      // Every child row references one parent row, inserted untimed first.
      parent: [sessionAppParent.start, new Date(sessionAppParent.start.getTime() + halfHourMs), sessionAppParent.workspace.templateId, sessionAppParent.workspace.ownerId],
    };
  }
  return statements;
}

/**
 * Times `singleRows` single-row INSERTs into each usage table. Returns per
 * table the latency of each INSERT and the mean server CPU time per INSERT,
 * in seconds.
 */
async function measureSingleRows(context, columnSet, workspaces) {
  const { client } = context;
  await client.query('TRUNCATE workspace_agent_stats, workspace_app_stats, template_usage_stats CASCADE');
  const statements = singleRowStatements(columnSet, workspaces);
  const results = {};
  for (const [table, statement] of Object.entries(statements)) {
    const name = `single_row_${table}`;
    if (statement.parent) {
      await client.query({ name: 'single_row_template_usage_stats', text: statements.template_usage_stats.text, values: statement.parent });
    }
    const latencies = [];
    const cpuBefore = await backendCpuSeconds(context.pid);
    for (let index = 0; index < singleRows; index += 1) {
      const values = statement.values(index);
      const started = process.hrtime.bigint();
      await client.query({ name, text: statement.text, values });
      latencies.push(seconds(started));
    }
    const cpuAfter = await backendCpuSeconds(context.pid);
    results[table] = { latencies, cpu: cpuBefore === null ? null : (cpuAfter - cpuBefore) / singleRows };
  }
  return results;
}

/**
 * Creates bench_input with one day of raw agent and app stats for the first
 * `rollupAgents` workspaces, with real user ids and without triggers, and
 * returns the day's end and the number of raw rows.
 */
async function createRollupInput(client, columnSet, population) {
  await client.query(`
    CREATE SCHEMA bench_input;
    CREATE TABLE bench_input.workspace_agent_stats (LIKE public.workspace_agent_stats INCLUDING ALL);
    CREATE TABLE bench_input.workspace_app_stats (LIKE public.workspace_app_stats INCLUDING ALL)`);
  const end = new Date(Math.floor(Date.now() / halfHourMs) * halfHourMs - 2 * 24 * 60 * minuteMs);
  const from = new Date(end.getTime() - 24 * 60 * minuteMs);
  const subset = { ...population, workspaces: population.workspaces.slice(0, rollupAgents) };
  const traffic = generateTraffic(subset, { from, to: end, seed: 2025 });

  await client.query('BEGIN');
  await client.query('SET LOCAL search_path = bench_input, public');
  const written = await writeTraffic(client, columnSet, traffic);
  await client.query('COMMIT');
  await client.query('ANALYZE bench_input.workspace_agent_stats, bench_input.workspace_app_stats');
  const { rows } = await client.query('SELECT (SELECT count(*) FROM bench_input.workspace_agent_stats) + (SELECT count(*) FROM bench_input.workspace_app_stats) AS raw_rows');
  return { end, rawRows: Number(rows[0].raw_rows), agentRows: written.agentStats.rows };
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
const percentile = (values, fraction) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)];
};

/** Returns the process id of the session's server process when /proc shows it on this machine, else null. */
async function localBackendPid(client) {
  const { rows } = await client.query('SELECT pg_backend_pid() AS pid');
  try {
    await access(`/proc/${rows[0].pid}/schedstat`);
    return rows[0].pid;
  } catch {
    return null;
  }
}

/** Runs every round on one column set and returns the samples: per benchmark, per mode, one value per round. */
async function runColumnSet(server, columnSet) {
  const database = `bench_write_paths_${columnSet}`;
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${database}`);
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();

  const client = new pg.Client({ connectionString: server.databaseUrl(database) });
  await client.connect();
  try {
    if (!options.durable) await client.query('SET synchronous_commit = off');
    const context = { client, pid: await localBackendPid(client) };
    await createCoderSchema(client, columnSet);
    const population = await seedPopulation(client, { users: 200, templates: 5, workspacesPerUser: 1 });
    const rollup = await createRollupInput(client, columnSet, population);
    console.log(`column set ${columnSet}: rollup input ${rollup.rawRows.toLocaleString('en-US')} raw rows for ${rollupAgents} agents over one day`);

    const samples = { 'agent-stats': {}, 'app-stats': {}, rollup: {}, 'single-row': {} };
    for (const mode of modes) {
      for (const benchmark of ['agent-stats', 'app-stats', 'rollup']) samples[benchmark][mode] = [];
      samples['single-row'][mode] = {};
    }

    for (let round = 0; round <= rounds; round += 1) {
      const order = modes.map((_, index) => modes[(index + round) % modes.length]);
      for (const mode of order) {
        await install(client, mode);
        const agent = await measureAgentStats(context, columnSet, population.workspaces);
        const app = await measureAppStats(context, population.workspaces);
        const rolledUp = await measureRollup(context, columnSet, rollup);
        const single = await measureSingleRows(context, columnSet, population.workspaces);
        if (round === 0) continue;
        samples['agent-stats'][mode].push(agent);
        samples['app-stats'][mode].push(app);
        samples.rollup[mode].push(rolledUp);
        for (const [table, result] of Object.entries(single)) {
          samples['single-row'][mode][table] ??= [];
          samples['single-row'][mode][table].push(result);
        }
      }
      process.stdout.write(round === 0 ? 'warm-up done' : ` round ${round}/${rounds}`);
    }
    process.stdout.write('\n');
    await install(client, 'off');
    return { rollupRawRows: rollup.rawRows, samples };
  } finally {
    await client.end();
  }
}

const spread = (values) => ({ median: median(values), min: Math.min(...values), max: Math.max(...values) });

/**
 * Summarizes the throughput samples of one benchmark per mode: rows/s from
 * the wall time, server CPU µs per row, and for each the median over rounds
 * of the cost per row divided by the cost under off in the same round.
 */
function summarizeThroughput(perMode) {
  const summary = {};
  for (const [mode, costs] of Object.entries(perMode)) {
    const baseline = perMode.off;
    const entry = {
      rowsPerSecond: spread(costs.map((cost) => 1 / cost.wall)),
      wallRatioToOff: spread(costs.map((cost, round) => cost.wall / baseline[round].wall)),
    };
    if (costs.every((cost) => cost.cpu !== null)) {
      entry.cpuMicrosecondsPerRow = spread(costs.map((cost) => cost.cpu * 1e6));
      entry.cpuRatioToOff = spread(costs.map((cost, round) => cost.cpu / baseline[round].cpu));
    }
    summary[mode] = entry;
  }
  return summary;
}

/**
 * Summarizes single-row INSERTs per mode and table: latency median and p99
 * over all rows of all rounds, their ratios to off as the median over rounds
 * of the per-round ratio, and the mean server CPU time per INSERT.
 */
function summarizeLatency(perMode) {
  const summary = {};
  for (const [mode, tables] of Object.entries(perMode)) {
    summary[mode] = {};
    for (const [table, runs] of Object.entries(tables)) {
      const all = runs.flatMap((run) => run.latencies);
      const baseline = perMode.off[table];
      const entry = {
        medianMs: median(all) * 1e3,
        p99Ms: percentile(all, 0.99) * 1e3,
        minMs: Math.min(...all) * 1e3,
        maxMs: Math.max(...all) * 1e3,
        medianRatioToOff: spread(runs.map((run, round) => median(run.latencies) / median(baseline[round].latencies))),
        p99RatioToOff: spread(runs.map((run, round) => percentile(run.latencies, 0.99) / percentile(baseline[round].latencies, 0.99))),
      };
      if (runs.every((run) => run.cpu !== null)) {
        entry.cpuMicrosecondsPerInsert = spread(runs.map((run) => run.cpu * 1e6));
        entry.cpuRatioToOff = spread(runs.map((run, round) => run.cpu / baseline[round].cpu));
      }
      summary[mode][table] = entry;
    }
  }
  return summary;
}

const format = (value) => Math.round(value).toLocaleString('en-US');
const pad = (text, width) => String(text).padStart(width);

const ratioText = (ratio) => (ratio ? `${ratio.median.toFixed(3)} (${ratio.min.toFixed(2)}-${ratio.max.toFixed(2)})` : '-');

function printThroughput(title, summary) {
  console.log(`\n${title}`);
  console.log(`${'mode'.padEnd(20)}${pad('rows/s median', 14)}${pad('min', 10)}${pad('max', 10)}${pad('wall / off (min-max)', 24)}${pad('cpu µs/row', 12)}${pad('cpu / off (min-max)', 24)}`);
  for (const [mode, entry] of Object.entries(summary)) {
    const rate = entry.rowsPerSecond;
    const cpu = entry.cpuMicrosecondsPerRow ? entry.cpuMicrosecondsPerRow.median.toFixed(2) : '-';
    console.log(`${mode.padEnd(20)}${pad(format(rate.median), 14)}${pad(format(rate.min), 10)}${pad(format(rate.max), 10)}${pad(ratioText(entry.wallRatioToOff), 24)}${pad(cpu, 12)}${pad(ratioText(entry.cpuRatioToOff), 24)}`);
  }
}

function printLatency(summary) {
  console.log('\nsingle-row INSERT latency in ms, and server CPU µs per INSERT; ratios to off are medians over rounds');
  console.log(`${'table'.padEnd(36)}${'mode'.padEnd(20)}${pad('median', 8)}${pad('p99', 8)}${pad('min', 8)}${pad('max', 8)}${pad('median/off', 12)}${pad('p99/off', 9)}${pad('cpu µs', 9)}${pad('cpu/off', 9)}`);
  for (const table of Object.keys(summary.off)) {
    for (const [mode, perTable] of Object.entries(summary)) {
      const row = perTable[table];
      const cpu = row.cpuMicrosecondsPerInsert ? row.cpuMicrosecondsPerInsert.median.toFixed(1) : '-';
      const cpuRatio = row.cpuRatioToOff ? row.cpuRatioToOff.median.toFixed(3) : '-';
      console.log(
        `${table.padEnd(36)}${mode.padEnd(20)}${pad(row.medianMs.toFixed(3), 8)}${pad(row.p99Ms.toFixed(3), 8)}${pad(row.minMs.toFixed(3), 8)}${pad(row.maxMs.toFixed(2), 8)}${pad(row.medianRatioToOff.median.toFixed(3), 12)}${pad(row.p99RatioToOff.median.toFixed(3), 9)}${pad(cpu, 9)}${pad(cpuRatio, 9)}`,
      );
    }
  }
}

const externalUrl = process.env.DATABASE_URL;
const server = externalUrl
  ? {
      url: externalUrl,
      databaseUrl(database) {
        const parsed = new URL(externalUrl);
        parsed.pathname = `/${database}`;
        return parsed.toString();
      },
      async stop() {},
    }
  : await startEmbeddedServer();

try {
  const probe = new pg.Client({ connectionString: server.url });
  await probe.connect();
  const { rows } = await probe.query("SELECT current_setting('server_version') AS version");
  await probe.end();

  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 2 ** 30), loadAverageAtStart: loadavg() };
  const settings = { rounds, batches, batchRows: maxBatchRows, singleRows, rollupAgents, rotate: options.rotate, synchronousCommit: options.durable ? 'server setting' : 'off' };
  console.log(`PostgreSQL ${rows[0].version}; ${machine.cpus} CPUs (${machine.cpuModel}), load average ${machine.loadAverageAtStart.map((value) => value.toFixed(2)).join(' ')}`);
  console.log(`${rounds} rounds after one warm-up; modes ${modes.join(', ')}; key rotation ${options.rotate}`);

  const results = { postgres: rows[0].version, machine, settings, startedAt: new Date().toISOString(), columnSets: {} };
  for (const columnSet of columnSets) {
    const { rollupRawRows, samples } = await runColumnSet(server, columnSet);
    const summary = {
      'agent-stats': summarizeThroughput(samples['agent-stats']),
      'app-stats': summarizeThroughput(samples['app-stats']),
      rollup: summarizeThroughput(samples.rollup),
      'single-row': summarizeLatency(samples['single-row']),
    };
    results.columnSets[columnSet] = { rollupRawRows, summary };
    console.log(`\n=== column set ${columnSet}`);
    printThroughput(`agent-stats: ${batches} batches of ${maxBatchRows} rows, INSERT … SELECT FROM unnest`, summary['agent-stats']);
    printThroughput(`app-stats: ${batches} upserts of ${maxBatchRows} rows, half updates`, summary['app-stats']);
    printThroughput(`rollup: one day, ${rollupRawRows.toLocaleString('en-US')} raw rows (rows/s are raw rows read)`, summary.rollup);
    printLatency(summary['single-row']);
  }
  results.loadAverageAtEnd = loadavg();
  await mkdir(dirname(options.output), { recursive: true });
  await writeFile(options.output, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\nwrote ${options.output}`);
} finally {
  await server.stop();
}
