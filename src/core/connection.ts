import pg from 'pg';
import { ToolError, isDatabaseError } from './errors.js';

/** Connection target: a URL, or libpq's PG* variables from `env`. */
export interface ConnectionSettings {
  /** Connection URL; undefined means the PG* variables. An empty string is invalid. */
  databaseUrl?: string;
  /** Seconds to wait for the connection; default 10. */
  connectTimeoutSeconds?: number;
  /** Environment with the PG* variables; default process.env. */
  env?: NodeJS.ProcessEnv;
}

/**
 * Hides the password of a connection URL so that it can appear in messages.
 * A string that does not parse as a URL gets everything between "://" and
 * the last "@" before the host masked, since it may still hold a password.
 */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '****';
    return parsed.toString();
  } catch {
    return url.replace(/(:\/\/[^/]*?:)[^/]*@/, '$1****@');
  }
}

/** Describes the target in messages: the redacted URL, or the PG* variables in use. */
export function describeTarget(settings: ConnectionSettings): string {
  if (settings.databaseUrl) return redactUrl(settings.databaseUrl);
  const env = settings.env ?? process.env;
  const host = env.PGHOST ?? 'localhost';
  const port = env.PGPORT ?? '5432';
  const database = env.PGDATABASE ?? env.PGUSER ?? '(default)';
  return `host=${host} port=${port} dbname=${database} (from PG* environment variables)`;
}

const urlForm = 'Use the form postgresql://USER:PASSWORD@HOST:PORT/DATABASE in --database-url, INSIGHTS_PRIVACY_DATABASE_URL or DATABASE_URL.';

function validateUrl(url: string): void {
  if (url.trim() === '') {
    throw new ToolError('INVALID_OPTION', 'Invalid database URL: it is empty.', { fix: `${urlForm} Or leave --database-url out to use the PG* variables.` });
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw new ToolError('INVALID_OPTION', `Invalid database URL "${redactUrl(url)}": it is not a valid URL.`, { fix: urlForm, cause: error });
  }
  if (parsed.protocol !== 'postgresql:' && parsed.protocol !== 'postgres:') {
    throw new ToolError('INVALID_OPTION', `Invalid database URL ${redactUrl(url)}: the scheme must be postgresql:// or postgres://, not ${parsed.protocol}//.`, {
      fix: urlForm,
    });
  }
}

/** Opens a connection, turning connection failures into errors that name the target and the fix. */
export async function connect(settings: ConnectionSettings): Promise<pg.Client> {
  if (settings.databaseUrl !== undefined) validateUrl(settings.databaseUrl);

  const env = settings.env ?? process.env;
  const client = new pg.Client({
    ...(settings.databaseUrl !== undefined ? { connectionString: settings.databaseUrl } : fromEnvironment(env)),
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

/** Reads libpq's PG* variables from the given environment rather than the process's. */
function fromEnvironment(env: NodeJS.ProcessEnv): pg.ClientConfig {
  return {
    host: env.PGHOST,
    port: env.PGPORT ? Number(env.PGPORT) : undefined,
    database: env.PGDATABASE,
    user: env.PGUSER,
    password: env.PGPASSWORD,
  };
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
