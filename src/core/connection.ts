import pg from 'pg';
import { ToolError, isDatabaseError } from './errors.js';

/** Where to connect: a URL, or nothing to let node-postgres read libpq's PG* variables. */
export interface ConnectionSettings {
  databaseUrl?: string;
  /** Seconds to wait for the connection; default 10. */
  connectTimeoutSeconds?: number;
}

/** Hides the password of a connection URL so that it can appear in messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '****';
    return parsed.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/** Describes the target in messages: the redacted URL, or the PG* variables in use. */
export function describeTarget(settings: ConnectionSettings): string {
  if (settings.databaseUrl) return redactUrl(settings.databaseUrl);
  const host = process.env.PGHOST ?? 'localhost';
  const port = process.env.PGPORT ?? '5432';
  const database = process.env.PGDATABASE ?? process.env.PGUSER ?? '(default)';
  return `host=${host} port=${port} dbname=${database} (from PG* environment variables)`;
}

function validateUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw new ToolError('INVALID_OPTION', `Invalid database URL ${redactUrl(url)}: it is not a URL.`, {
      fix: 'Use the form postgresql://USER:PASSWORD@HOST:PORT/DATABASE.',
      cause: error,
    });
  }
  if (parsed.protocol !== 'postgresql:' && parsed.protocol !== 'postgres:') {
    throw new ToolError('INVALID_OPTION', `Invalid database URL ${redactUrl(url)}: the scheme must be postgresql:// or postgres://, not ${parsed.protocol}//.`, {
      fix: 'Use the form postgresql://USER:PASSWORD@HOST:PORT/DATABASE.',
    });
  }
}

/** Opens a connection, turning connection failures into errors that name the target and the fix. */
export async function connect(settings: ConnectionSettings): Promise<pg.Client> {
  if (settings.databaseUrl) validateUrl(settings.databaseUrl);

  const client = new pg.Client({
    connectionString: settings.databaseUrl,
    connectionTimeoutMillis: (settings.connectTimeoutSeconds ?? 10) * 1000,
    application_name: 'insights-privacy',
  });
  // An idle client that loses its server emits 'error'; the next query reports it.
  client.on('error', () => undefined);

  try {
    await client.connect();
  } catch (error) {
    await client.end().catch(() => undefined);
    throw connectionError(settings, error);
  }
  return client;
}

function connectionError(settings: ConnectionSettings, error: unknown): ToolError {
  const target = describeTarget(settings);
  const reason = isDatabaseError(error) ? `${error.message} (SQLSTATE ${error.code})` : error instanceof Error ? error.message : String(error);
  return new ToolError('CONNECTION_FAILED', `Could not connect to ${target}: ${reason}.`, {
    fix: 'Check the host, port, database name and credentials in --database-url (or DATABASE_URL, or the PG* variables), and that the server accepts connections from this machine.',
    cause: error,
  });
}

/** Runs `work` with a connected client and always closes it. */
export async function withClient<T>(settings: ConnectionSettings, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await connect(settings);
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Runs `work` in a transaction: COMMIT when it returns, ROLLBACK when it throws. */
export async function withTransaction<T>(client: pg.ClientBase, work: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    const result = await work();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
