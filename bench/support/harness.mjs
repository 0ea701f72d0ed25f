// Shared parts of the benchmark scripts: the server they run on, databases,
// run statistics, the printed table and the JSON result files.
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Table from 'cli-table3';
import pg from 'pg';
import { startEmbeddedServer } from '../../dist/embedded/server.js';

const resultsDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'results');

/**
 * Server settings of the embedded server. A server that holds tables of
 * millions of rows gets a shared buffer pool in the gigabytes, and a WAL
 * size that does not force a checkpoint every few seconds while those
 * tables are loaded or rewritten. A server named by DATABASE_URL keeps its
 * own settings.
 */
export const embeddedSettings = {
  shared_buffers: '2GB',
  max_wal_size: '8GB',
  checkpoint_timeout: '15min',
  maintenance_work_mem: '512MB',
};

/**
 * Parses `--name value` options, each a non-negative integer, with
 * defaults; `--quick` switches to the `quick` defaults. Exits with code 2 on
 * an invalid value.
 */
export function readOptions(script, defaults, quick, usage) {
  const spec = { quick: { type: 'boolean' }, help: { type: 'boolean' } };
  for (const name of Object.keys(defaults)) spec[name] = { type: 'string' };
  let parsed;
  try {
    parsed = parseArgs({ options: spec, allowPositionals: false }).values;
  } catch (error) {
    console.error(`${script}: ${error.message}\nusage: ${usage}`);
    process.exit(2);
  }
  if (parsed.help) {
    console.log(`usage: ${usage}`);
    process.exit(0);
  }
  const options = { quick: Boolean(parsed.quick) };
  for (const [name, fallback] of Object.entries(defaults)) {
    const chosen = parsed[name] ?? (parsed.quick ? quick[name] ?? fallback : fallback);
    const value = Number(chosen);
    if (!Number.isInteger(value) || value < 0) {
      console.error(`${script}: --${name} must be a non-negative integer, got "${chosen}"\nusage: ${usage}`);
      process.exit(2);
    }
    options[name] = value;
  }
  return options;
}

/**
 * Opens the server the benchmark runs on: the one DATABASE_URL names, whose
 * role needs CREATEDB, or else a new embedded PostgreSQL 18. Databases the
 * benchmark creates there are named `bench_*` and dropped at the end.
 */
export async function openServer() {
  if (process.env.DATABASE_URL) {
    const base = process.env.DATABASE_URL;
    const databaseUrl = (database) => {
      const url = new URL(base);
      url.pathname = `/${encodeURIComponent(database)}`;
      return url.toString();
    };
    return { url: base, databaseUrl, external: true, settings: {}, stop: async () => undefined };
  }
  const server = await startEmbeddedServer({ settings: embeddedSettings });
  // An interrupted run stops its server, whose data directory would
  // otherwise stay behind with gigabytes of tables.
  const interrupt = (signal) => {
    console.error(`\n${signal} received: stopping the embedded server`);
    server.stop().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  const stop = async () => {
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
    await server.stop();
  };
  return { url: server.url, databaseUrl: server.databaseUrl, external: false, settings: embeddedSettings, stop };
}

/** Connects a new client to a database of the server. */
export async function connect(server, database) {
  const client = new pg.Client({ connectionString: database ? server.databaseUrl(database) : server.url });
  await client.connect();
  return client;
}

async function admin(server, sql) {
  const client = await connect(server);
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/**
 * Creates a database, empty or as a file copy of `template`, which must have
 * no open connection. A database of that name left by an earlier run is
 * dropped first.
 */
export async function createDatabase(server, name, template) {
  await dropDatabase(server, name);
  const client = await connect(server);
  try {
    const { rows } = await client.query(`SELECT current_setting('server_version_num')::int AS version`);
    // FILE_COPY (PostgreSQL 15 and later; the only strategy before) copies
    // the files instead of writing every block of a large database to the WAL.
    const strategy = template && rows[0].version >= 150000 ? ' STRATEGY FILE_COPY' : '';
    await client.query(`CREATE DATABASE "${name}"${template ? ` TEMPLATE "${template}"${strategy}` : ''}`);
  } finally {
    await client.end();
  }
}

export async function dropDatabase(server, name) {
  await admin(server, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
}

/** Median, minimum and maximum of a list of numbers; null fields for an empty list. */
export function summarize(values) {
  if (values.length === 0) return { runs: 0, median: null, min: null, max: null };
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  return { runs: values.length, median, min: sorted[0], max: sorted[sorted.length - 1] };
}

/** Times an async function in milliseconds; returns the time and its result. */
export async function timed(work) {
  const startedAt = performance.now();
  const result = await work();
  return { ms: performance.now() - startedAt, result };
}

/** Formats a number with thousands separators and at most `digits` decimals. */
export function formatNumber(value, digits = 0) {
  if (value === null || value === undefined) return '-';
  return value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** Prints a table of rows under a heading. */
export function printTable(title, head, rows) {
  const table = new Table({ head, style: { head: [], border: [] } });
  for (const row of rows) table.push(row);
  console.log(`\n${title}\n${table.toString()}`);
}

/** Describes the machine and server, for the result file. */
export async function describeMachine(server) {
  const client = await connect(server);
  try {
    const { rows } = await client.query(`SELECT version() AS version, current_setting('shared_buffers') AS shared_buffers, current_setting('max_wal_size') AS max_wal_size`);
    const cpus = os.cpus();
    return {
      cpu: cpus[0]?.model ?? 'unknown',
      cores: cpus.length,
      memoryGb: Math.round(os.totalmem() / 2 ** 30),
      loadAverageAtStart: os.loadavg().map((value) => Number(value.toFixed(2))),
      node: process.version,
      postgres: rows[0].version,
      server: server.external ? 'DATABASE_URL' : 'embedded',
      sharedBuffers: rows[0].shared_buffers,
      maxWalSize: rows[0].max_wal_size,
    };
  } finally {
    await client.end();
  }
}

/** Writes a result object to bench/results/<name>.json. */
export async function writeResults(name, result) {
  await mkdir(resultsDir, { recursive: true });
  const path = join(resultsDir, `${name}.json`);
  await writeFile(path, `${JSON.stringify({ benchmark: name, finishedAt: new Date().toISOString(), ...result }, null, 2)}\n`);
  console.log(`\nresults written to ${path}`);
}

/** Logs a progress line with the seconds since the script started. */
export function log(message) {
  console.log(`[${(performance.now() / 1000).toFixed(1).padStart(7)} s] ${message}`);
}
