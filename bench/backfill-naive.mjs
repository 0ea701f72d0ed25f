// Measures `backfill --existing pseudonymize` of the agent stats stored
// before enforcement against the naive alternative, one UPDATE of the whole
// table, each on its own identical copy of the same database, while Coder-like
// writers run. Reports both times and the longest single write of any writer
// during each.
//
//   npm run build && node bench/backfill-naive.mjs [--rows 10000000] [--runs 1] [--batch-size 5000] [--quick]
//
// Targets: the backfill takes at most twice the naive UPDATE's time, and no
// writer waits more than one second for one write meanwhile.
import { setTimeout as sleep } from 'node:timers/promises';
import { applyEnforcement } from '../dist/commands/apply.js';
import { runBackfill } from '../dist/commands/backfill.js';
import { defaultBatchSize } from '../dist/core/backfill.js';
import { createPopulation, currentBucket, fillAgentStats } from './support/coder-data.mjs';
import {
  connect,
  createDatabase,
  describeMachine,
  dropDatabase,
  formatNumber,
  log,
  openServer,
  printTable,
  readOptions,
  summarize,
  timed,
  writeResults,
} from './support/harness.mjs';
import { latencyDuring, startWriters } from './support/writers.mjs';

const usage = 'node bench/backfill-naive.mjs [--rows N] [--users N] [--runs N] [--warmup N] [--batch-size N] [--writer-rows N] [--quick]';
const options = readOptions(
  'bench/backfill-naive.mjs',
  { rows: 10_000_000, users: 1000, runs: 1, warmup: 0, 'batch-size': defaultBatchSize, 'writer-rows': 200 },
  { rows: 100_000, runs: 3, warmup: 1 },
  usage,
);
const template = 'bench_backfill_template';
const schema = 'insights_privacy';
const lock = { lockTimeoutMs: 2000, retries: 5 };
const writerKinds = ['agent-stats', 'app-stats', 'rollup'];
const writerIntervals = { 'agent-stats': 200, 'app-stats': 500, rollup: 3000 };
const targets = { ratioAtMost: 2, writeMsAtMost: 1000 };

const naiveUpdate = `UPDATE workspace_agent_stats SET user_id = ${schema}.pseudonym(user_id, created_at) WHERE NOT ${schema}.is_pseudonym(user_id)`;

/**
 * Builds the template database: the population, `rows` agent stats with real
 * user ids between 32 and 2 days old, a current rollup bucket (so that the
 * cut-over of apply converts none of the old rows), and enforcement.
 */
async function buildTemplate(server) {
  await createDatabase(server, template);
  const client = await connect(server, template);
  try {
    const population = await createPopulation(client, { users: options.users });
    const dayMs = 24 * 60 * 60_000;
    const bucket = currentBucket();
    const end = new Date(bucket.getTime() - 2 * dayMs);
    await fillAgentStats(client, { rows: options.rows, from: new Date(end.getTime() - 30 * dayMs), to: end });
    await client.query(
      `INSERT INTO template_usage_stats (start_time, end_time, template_id, user_id, usage_mins, session_usage_digest)
       SELECT $1::timestamptz, $1::timestamptz + interval '30 minutes', template_id, owner_id, 1, 0 FROM workspaces ORDER BY id LIMIT 1`,
      [bucket],
    );
    log('VACUUM ANALYZE');
    await client.query('VACUUM ANALYZE');
    await applyEnforcement(client, { mode: 'anonymize', scope: 'source', schema, profile: 'coder', dryRun: false, lock });
    await client.query('CHECKPOINT');
    return population;
  } finally {
    await client.end();
  }
}

/** Runs one method on a fresh copy of the template under the writers' load, and returns its time and the writers' latencies. */
async function measure(server, population, method, round) {
  const name = `bench_backfill_${method}_${round}`;
  await createDatabase(server, name, template);
  const client = await connect(server, name);
  const writers = await startWriters(server.databaseUrl(name), population, { kinds: writerKinds, agentRows: options['writer-rows'], intervals: writerIntervals });
  try {
    await sleep(1000);
    const startedAt = performance.now();
    let details;
    log(`${method} round ${round}: started`);
    if (method === 'backfill') {
      let reported = 0;
      const onProgress = (progress) => {
        if (progress.table !== 'workspace_agent_stats' || progress.rowsWalked < reported + options.rows / 10) return;
        reported = progress.rowsWalked;
        log(`${method} round ${round}: ${progress.rowsWalked} rows walked, ${Math.round(progress.rowsPerSecond)} rows/s`);
      };
      const result = await runBackfill(client, { existing: 'pseudonymize', schema, profile: 'coder', batchSize: options['batch-size'], lock, onProgress });
      const walked = result.tables.find((table) => table.table === 'workspace_agent_stats');
      details = { rowsChanged: walked.rowsChanged, rowsWalked: walked.rowsWalkedThisRun, walkSeconds: walked.seconds };
    } else {
      const result = await client.query(naiveUpdate);
      details = { rowsChanged: result.rowCount };
    }
    const endedAt = performance.now();
    await sleep(1000);
    await writers.stop();
    const latencies = Object.fromEntries(writerKinds.map((kind) => [kind, latencyDuring(writers, kind, startedAt, endedAt)]));
    const seconds = (endedAt - startedAt) / 1000;
    log(
      `${method} round ${round}: ${formatNumber(seconds, 1)} s, ${formatNumber(details.rowsChanged)} rows changed, ` +
        `slowest write ${formatNumber(Math.max(...Object.values(latencies).map((entry) => entry.maxMs ?? 0)))} ms, ` +
        `longest lock wait ${formatNumber(Math.max(...Object.values(latencies).map((entry) => entry.maxLockWaitMs)))} ms`,
    );
    return { seconds, rowsPerSecond: details.rowsChanged / seconds, ...details, latencies };
  } finally {
    await writers.stop();
    await client.end();
    await dropDatabase(server, name);
  }
}

/** Runs the writers alone on a copy of the template for `seconds`, for their latency without a backfill. */
async function measureWritersAlone(server, population, seconds) {
  const name = 'bench_backfill_writers';
  await createDatabase(server, name, template);
  try {
    const writers = await startWriters(server.databaseUrl(name), population, { kinds: writerKinds, agentRows: options['writer-rows'], intervals: writerIntervals });
    const startedAt = performance.now();
    await sleep(seconds * 1000);
    const endedAt = performance.now();
    await writers.stop();
    return Object.fromEntries(writerKinds.map((kind) => [kind, latencyDuring(writers, kind, startedAt, endedAt)]));
  } finally {
    await dropDatabase(server, name);
  }
}

const server = await openServer();
try {
  log(`backfill against one UPDATE: ${options.rows} agent stats, batches of ${options['batch-size']} rows, ${options.warmup} warm-up and ${options.runs} measured round(s)`);
  const population = await buildTemplate(server);
  const machine = await describeMachine(server);
  const writersAlone = await measureWritersAlone(server, population, 20);

  const rounds = { backfill: [], naive: [] };
  for (let round = 0; round < options.warmup + options.runs; round++) {
    // The methods take turns, so that a change of load on the machine hits both.
    for (const method of round % 2 === 0 ? ['backfill', 'naive'] : ['naive', 'backfill']) {
      const measured = await measure(server, population, method, round);
      if (round >= options.warmup) rounds[method].push(measured);
    }
  }

  const time = { backfill: summarize(rounds.backfill.map((run) => run.seconds)), naive: summarize(rounds.naive.map((run) => run.seconds)) };
  const ratio = time.backfill.median / time.naive.median;
  const slowest = (runs, kind) => Math.max(...runs.map((run) => run.latencies[kind].maxMs ?? 0));
  const longestWait = (runs) => Math.max(...runs.flatMap((run) => writerKinds.map((kind) => run.latencies[kind].maxLockWaitMs)));
  const alone = [{ latencies: writersAlone }];

  printTable(
    `backfill --existing pseudonymize against one UPDATE, ${formatNumber(options.rows)} agent stats; ${options.runs} run(s) after ${options.warmup} warm-up`,
    ['method', 'median s', 'min s', 'max s', 'rows/s (median)', 'ratio to UPDATE', ...writerKinds.map((kind) => `slowest ${kind} ms`), 'longest lock wait ms'],
    [
      ...['backfill', 'naive'].map((method) => [
        method === 'backfill' ? `backfill, batches of ${options['batch-size']}` : 'one UPDATE statement',
        formatNumber(time[method].median, 1),
        formatNumber(time[method].min, 1),
        formatNumber(time[method].max, 1),
        formatNumber(options.rows / time[method].median),
        method === 'naive' ? '1' : formatNumber(ratio, 2),
        ...writerKinds.map((kind) => formatNumber(slowest(rounds[method], kind))),
        formatNumber(longestWait(rounds[method])),
      ]),
      ['writers alone, 20 s', '-', '-', '-', '-', '-', ...writerKinds.map((kind) => formatNumber(slowest(alone, kind))), formatNumber(longestWait(alone))],
    ],
  );
  // The rollup reads whole tables and takes seconds by itself on a busy
  // machine, so its latency is reported but only its lock waits count.
  const shortWriters = writerKinds.filter((kind) => kind !== 'rollup');
  const slowestShortWrite = Math.max(...shortWriters.map((kind) => slowest(rounds.backfill, kind)));
  const backfillWait = longestWait(rounds.backfill);
  const met = { ratio: ratio <= targets.ratioAtMost, writes: slowestShortWrite <= targets.writeMsAtMost && backfillWait <= targets.writeMsAtMost };
  console.log(`target: backfill at most ${targets.ratioAtMost}x the UPDATE: ${met.ratio ? 'met' : 'missed'} (${formatNumber(ratio, 2)}x)`);
  console.log(
    `target: during the backfill no agent or app stats write over ${targets.writeMsAtMost} ms and no lock wait over ${targets.writeMsAtMost} ms: ` +
      `${met.writes ? 'met' : 'missed'} (slowest write ${formatNumber(slowestShortWrite)} ms, longest lock wait ${formatNumber(backfillWait)} ms)`,
  );

  await writeResults(options.quick ? 'backfill-naive-quick' : 'backfill-naive', {
    options,
    machine,
    writers: { kinds: writerKinds, pauseMs: writerIntervals, agentRowsPerWrite: options['writer-rows'], appSessionsPerWrite: 200 },
    naiveStatement: naiveUpdate,
    baseline: { method: 'one UPDATE statement', ...time.naive },
    backfill: { ...time.backfill, ratio },
    runs: rounds,
    writersAlone,
    slowestBackfillWriteMs: slowestShortWrite,
    longestBackfillLockWaitMs: backfillWait,
    targets: { ...targets, met },
  });
} finally {
  await dropDatabase(server, template).catch(() => undefined);
  await server.stop();
}
