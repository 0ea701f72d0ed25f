// Measures how long `apply` makes Coder's writers wait on a live database:
// apply --mode anonymize, then disable, then off, while clients write agent
// stats, upsert app sessions, run the rollup and read users the way Coder
// does. Reports each apply's duration and the longest single write of each
// client during it, against the same clients' latencies before the apply.
//
//   npm run build && node bench/apply-stall.mjs [--workspaces 10000] [--agent-rows 10000000] [--app-rows 10000000] [--runs 1] [--quick]
//
// The agent stats cover the hours that `agent-rows` reports from every
// workspace take at one report per 30 seconds, ending now, so the rollup
// window holds as many rows as on a Coder deployment of that many workspaces.
//
// Target: no write waits longer than one second while apply runs.
import { setTimeout as sleep } from 'node:timers/promises';
import { applyEnforcement } from '../dist/commands/apply.js';
import { agentReportSeconds, createPopulation, currentBucket, fillAgentStats, fillAppStats, fillRollup } from './support/coder-data.mjs';
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
  writeResults,
} from './support/harness.mjs';
import { latencyDuring, longestHold, startWriters, writerKinds } from './support/writers.mjs';

const usage =
  'node bench/apply-stall.mjs [--workspaces N] [--agent-rows N] [--app-rows N] [--rollup-rows N] [--runs N] [--warmup N] [--lock-timeout MS] [--rollup-pause MS] [--quick]';
const options = readOptions(
  'bench/apply-stall.mjs',
  {
    workspaces: 10_000,
    'agent-rows': 10_000_000,
    'app-rows': 10_000_000,
    'rollup-rows': 1_000_000,
    runs: 1,
    warmup: 0,
    'lock-timeout': 2000,
    'rollup-pause': 5000,
  },
  { workspaces: 1000, 'agent-rows': 300_000, 'app-rows': 300_000, 'rollup-rows': 50_000, runs: 2, warmup: 1 },
  usage,
);
const template = 'bench_apply_template';
const schema = 'insights_privacy';
const modes = ['anonymize', 'disable', 'off'];
const targetMs = 1000;
// The rollup reads whole tables and takes seconds by itself, so its latency
// is reported but only its lock waits count against the target.
const shortWriters = writerKinds.filter((kind) => kind !== 'rollup');
const baselineSeconds = 15;
const hourMs = 60 * 60_000;

/** Hours of agent reports that `agent-rows` rows make at one report per agent every 30 seconds. */
const agentHours = options['agent-rows'] / (options.workspaces * (3600 / agentReportSeconds));

async function buildTemplate(server) {
  await createDatabase(server, template);
  const client = await connect(server, template);
  try {
    const population = await createPopulation(client, { users: options.workspaces });
    const now = new Date();
    const bucket = currentBucket(now);
    await fillAgentStats(client, { rows: options['agent-rows'], from: new Date(now.getTime() - agentHours * hourMs), to: now });
    await fillAppStats(client, { rows: options['app-rows'], from: new Date(now.getTime() - 365 * 24 * hourMs), to: new Date(now.getTime() - 20 * 60_000) });
    await fillRollup(client, { rows: options['rollup-rows'], to: new Date(bucket.getTime() + 30 * 60_000), usersPerBucket: options.workspaces });
    log('VACUUM ANALYZE');
    await client.query('VACUUM ANALYZE');
    await client.query('CHECKPOINT');
    return population;
  } finally {
    await client.end();
  }
}

/** Counts the agent stats inside the rollup window, which the cut-over of anonymize converts. */
async function windowRows(client) {
  const { rows } = await client.query(`
    SELECT count(*) AS rows FROM workspace_agent_stats
    WHERE created_at >= (SELECT date_trunc('hour', max(start_time) - interval '1 hour') FROM template_usage_stats)`);
  return Number(rows[0].rows);
}

/** Runs apply anonymize, disable and off on a fresh copy of the template while the writers run. */
async function measureRound(server, population, round) {
  const name = `bench_apply_${round}`;
  await createDatabase(server, name, template);
  const client = await connect(server, name);
  const { rows: backend } = await client.query('SELECT pg_backend_pid() AS pid');
  const retries = [];
  const lock = { lockTimeoutMs: options['lock-timeout'], retries: 5, onRetry: (attempt, reason) => retries.push({ attempt, reason }) };
  const writers = await startWriters(server.databaseUrl(name), population, {
    kinds: writerKinds,
    agentRows: Math.max(1, Math.round(options.workspaces / agentReportSeconds)),
    appSessions: Math.min(500, options.workspaces),
    intervals: { rollup: options['rollup-pause'] },
    watchPid: backend[0].pid,
  });
  const result = { round, applies: {} };
  const intervals = {};
  try {
    const baselineFrom = performance.now();
    await sleep(baselineSeconds * 1000);
    intervals.baseline = [baselineFrom, performance.now()];
    result.windowRows = await windowRows(client);

    for (const mode of modes) {
      retries.length = 0;
      const startedAt = performance.now();
      let outcome;
      try {
        outcome = (await applyEnforcement(client, { mode, scope: 'source', schema, profile: 'coder', dryRun: false, lock })).outcome;
      } catch (error) {
        outcome = `failed: ${error.message}`;
      }
      const endedAt = performance.now();
      intervals[mode] = [startedAt, endedAt];
      result.applies[mode] = { outcome, seconds: (endedAt - startedAt) / 1000, retries: [...retries] };
      log(`round ${round}: apply --mode ${mode} ${outcome} in ${formatNumber((endedAt - startedAt) / 1000, 2)} s, ${retries.length} lock retries`);
      await sleep(5000);
    }
  } finally {
    await writers.stop();
    await client.end();
    await dropDatabase(server, name);
  }

  // Latencies are read once every write has ended, so that a write still
  // waiting when apply returned counts with its whole wait.
  const latencies = (from, to) => Object.fromEntries(writerKinds.map((kind) => [kind, latencyDuring(writers, kind, from, to)]));
  result.baseline = latencies(...intervals.baseline);
  for (const mode of modes) {
    if (!intervals[mode]) continue;
    const measured = latencies(...intervals[mode]);
    Object.assign(result.applies[mode], {
      slowestShortWriteMs: Math.max(...shortWriters.map((kind) => measured[kind].maxMs ?? 0)),
      longestLockWaitMs: Math.max(...writerKinds.map((kind) => measured[kind].maxLockWaitMs)),
      longestExclusiveHoldMs: longestHold(writers, 'ACCESS EXCLUSIVE', ...intervals[mode]),
      longestBatchHoldMs: longestHold(writers, 'SHARE ROW EXCLUSIVE', ...intervals[mode]),
      latencies: measured,
    });
  }
  return result;
}

const server = await openServer();
try {
  log(
    `apply on a live database: ${options.workspaces} workspaces, ${options['agent-rows']} agent stats over ${formatNumber(agentHours, 1)} h, ` +
      `${options['app-rows']} app sessions, ${options['rollup-rows']} rollup rows; ${options.warmup} warm-up and ${options.runs} measured round(s)`,
  );
  const population = await buildTemplate(server);
  const machine = await describeMachine(server);

  const rounds = [];
  for (let round = 0; round < options.warmup + options.runs; round++) {
    const measured = await measureRound(server, population, round);
    if (round >= options.warmup) rounds.push(measured);
  }

  const summary = Object.fromEntries(
    modes.map((mode) => {
      const applies = rounds.map((round) => round.applies[mode]);
      const slowest = (kind) => Math.max(...applies.map((apply) => apply.latencies[kind].maxMs ?? 0));
      const longestWait = (kind) => Math.max(...applies.map((apply) => apply.latencies[kind].maxLockWaitMs));
      return [
        mode,
        {
          seconds: summarize(applies.map((apply) => apply.seconds)),
          failed: applies.filter((apply) => apply.outcome.startsWith('failed')).length,
          slowestShortWriteMs: Math.max(...applies.map((apply) => apply.slowestShortWriteMs)),
          longestLockWaitMs: Math.max(...applies.map((apply) => apply.longestLockWaitMs)),
          longestExclusiveHoldMs: Math.max(...applies.map((apply) => apply.longestExclusiveHoldMs)),
          longestBatchHoldMs: Math.max(...applies.map((apply) => apply.longestBatchHoldMs)),
          lockRetries: summarize(applies.map((apply) => apply.retries.length)),
          slowestByKind: Object.fromEntries(writerKinds.map((kind) => [kind, slowest(kind)])),
          longestLockWaitByKind: Object.fromEntries(writerKinds.map((kind) => [kind, longestWait(kind)])),
          failedWrites: Object.fromEntries(writerKinds.map((kind) => [kind, applies.reduce((sum, apply) => sum + apply.latencies[kind].errors, 0)])),
        },
      ];
    }),
  );
  const baseline = {
    slowestByKind: Object.fromEntries(writerKinds.map((kind) => [kind, Math.max(...rounds.map((round) => round.baseline[kind].maxMs ?? 0))])),
    medianByKind: Object.fromEntries(writerKinds.map((kind) => [kind, summarize(rounds.map((round) => round.baseline[kind].medianMs ?? 0)).median])),
    longestLockWaitMs: Math.max(...rounds.flatMap((round) => writerKinds.map((kind) => round.baseline[kind].maxLockWaitMs))),
  };
  const baselineShort = Math.max(...shortWriters.map((kind) => baseline.slowestByKind[kind]));

  printTable(
    `apply on a live database, ${formatNumber(options.workspaces)} workspaces, ${formatNumber(rounds[0].windowRows)} agent stats in the rollup window; ` +
      `${options.runs} run(s) after ${options.warmup} warm-up`,
    [
      'apply',
      'median s',
      'min s',
      'max s',
      ...writerKinds.map((kind) => `slowest ${kind} ms`),
      'longest lock wait ms',
      'longest ACCESS EXCLUSIVE hold ms',
      'lock retries (median)',
      'slowest short write / before apply',
    ],
    [
      ...modes.map((mode) => [
        `--mode ${mode}${summary[mode].failed ? ` (${summary[mode].failed} failed)` : ''}`,
        formatNumber(summary[mode].seconds.median, 2),
        formatNumber(summary[mode].seconds.min, 2),
        formatNumber(summary[mode].seconds.max, 2),
        ...writerKinds.map((kind) => formatNumber(summary[mode].slowestByKind[kind])),
        formatNumber(summary[mode].longestLockWaitMs),
        formatNumber(summary[mode].longestExclusiveHoldMs),
        formatNumber(summary[mode].lockRetries.median),
        formatNumber(summary[mode].slowestShortWriteMs / baselineShort, 2),
      ]),
      [
        `writers alone, ${baselineSeconds} s: slowest (median)`,
        '-',
        '-',
        '-',
        ...writerKinds.map((kind) => `${formatNumber(baseline.slowestByKind[kind])} (${formatNumber(baseline.medianByKind[kind])})`),
        formatNumber(baseline.longestLockWaitMs),
        '-',
        '-',
        '1',
      ],
    ],
  );
  const met = Object.fromEntries(
    modes.map((mode) => [mode, summary[mode].failed === 0 && summary[mode].slowestShortWriteMs <= targetMs && summary[mode].longestLockWaitMs <= targetMs]),
  );
  for (const mode of modes) {
    console.log(
      `target: during apply --mode ${mode} no agent stats, app stats or users write over ${targetMs} ms and no lock wait over ${targetMs} ms: ${met[mode] ? 'met' : 'missed'} ` +
        `(slowest ${formatNumber(summary[mode].slowestShortWriteMs)} ms, longest lock wait ${formatNumber(summary[mode].longestLockWaitMs)} ms)`,
    );
  }

  await writeResults(options.quick ? 'apply-stall-quick' : 'apply-stall', {
    options: { ...options, agentHours },
    machine,
    writers: { kinds: writerKinds, agentRowsPerWrite: Math.max(1, Math.round(options.workspaces / agentReportSeconds)), appSessionsPerWrite: Math.min(500, options.workspaces) },
    baseline,
    summary,
    rounds,
    target: { slowestWriteMsAtMost: targetMs, lockWaitMsAtMost: targetMs, met },
  });
} finally {
  await dropDatabase(server, template).catch(() => undefined);
  await server.stop();
}
