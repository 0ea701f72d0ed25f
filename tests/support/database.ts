import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** The server every test uses: the embedded one or the one DATABASE_URL names. */
export function adminUrl(): string {
  const url = process.env.INSIGHTS_PRIVACY_TEST_ADMIN_URL;
  if (!url) throw new Error('INSIGHTS_PRIVACY_TEST_ADMIN_URL is not set: run the tests through jest, whose global setup sets it');
  return url;
}

/** Path of the server log when the tests run on their own embedded server, else undefined. */
export function serverLogPath(): string | undefined {
  return process.env.INSIGHTS_PRIVACY_TEST_SERVER_LOG;
}

/** The test server's server_version_num, for example 180004 for PostgreSQL 18.4. */
export function serverVersion(): number {
  return Number(process.env.INSIGHTS_PRIVACY_TEST_SERVER_VERSION ?? '0');
}

/**
 * Tells whether the test server offers pgcrypto. It does not on the pass of
 * `npm run test:without-pgcrypto`, where every test runs the core HMAC.
 */
export function pgcryptoAvailable(): boolean {
  return process.env.INSIGHTS_PRIVACY_TEST_PGCRYPTO === 'available';
}

/** Replaces the database name of a connection URL. */
export function urlForDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${encodeURIComponent(database)}`;
  return parsed.toString();
}

/** A database created for one test file and dropped by `drop()`. */
export interface TestDatabase {
  readonly name: string;
  readonly url: string;
  /** Opens a new connected client; the caller ends it. */
  connect(): Promise<pg.Client>;
  drop(): Promise<void>;
}

/**
 * Creates a database with a unique name on the test server: empty, or a file
 * copy of `template`, which must have no open connection.
 */
export async function createTestDatabase(prefix = 'test', template?: string): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    // FILE_COPY (PostgreSQL 15 and later; the only strategy before) copies
    // files instead of writing every block to the WAL.
    const strategy = template && serverVersion() >= 150000 ? ' STRATEGY FILE_COPY' : '';
    await admin.query(`CREATE DATABASE "${name}"${template ? ` TEMPLATE "${template}"${strategy}` : ''}`);
  } finally {
    await admin.end();
  }

  const url = urlForDatabase(adminUrl(), name);
  return {
    name,
    url,
    async connect() {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      return client;
    },
    async drop() {
      const client = new pg.Client({ connectionString: adminUrl() });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}
