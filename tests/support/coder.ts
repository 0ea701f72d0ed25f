import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { applyEnforcement, type ApplyResult } from '../../src/commands/apply.js';
import type { Mode } from '../../src/core/enforcement.js';
import { createCoderSchema, seedPopulation, type ColumnSet, type Population, type PopulationOptions } from '../../src/fixture/index.js';
import type { Scope } from '../../src/profiles/types.js';
import { adminUrl, createTestDatabase, urlForDatabase, type TestDatabase } from './database.js';

/** The private schema every test installs enforcement into. */
export const privacySchema = 'insights_privacy';

/**
 * An RFC 9562 version-8 UUID with the variant bits 10, in the lower-case
 * text form PostgreSQL returns: the shape of every pseudonym.
 */
export const pseudonymPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A test database with the fixture's Coder schema and a population, and a superuser client on it. */
export interface CoderDatabase {
  readonly database: TestDatabase;
  readonly columnSet: ColumnSet;
  readonly population: Population;
  /** Connected as the superuser that owns the tables; `close()` ends it. */
  readonly client: pg.Client;
  /** Ends the client and drops the database. */
  close(): Promise<void>;
}

const defaultPopulation: PopulationOptions = { users: 4, templates: 2, workspacesPerUser: 1 };

/**
 * Creates a database with Coder's tables in one column set and seeds a
 * population (default: 4 users, 2 templates, one workspace each). The
 * client's time zone is UTC.
 */
export async function createCoderDatabase(prefix: string, columnSet: ColumnSet, options: PopulationOptions = defaultPopulation): Promise<CoderDatabase> {
  const database = await createTestDatabase(prefix);
  const client = await database.connect();
  try {
    await client.query("SET TimeZone = 'UTC'");
    await createCoderSchema(client, columnSet);
    const population = await seedPopulation(client, options);
    return {
      database,
      columnSet,
      population,
      client,
      async close() {
        await client.end();
        await database.drop();
      },
    };
  } catch (error) {
    await client.end();
    await database.drop();
    throw error;
  }
}

/**
 * Applies a mode the way `insights-privacy apply --yes` would, into
 * `privacySchema` with the Coder profile. Scope defaults to `source`.
 */
export async function applyMode(client: pg.ClientBase, mode: Mode, scope: Scope = 'source'): Promise<ApplyResult> {
  return applyEnforcement(client, {
    mode,
    scope,
    schema: privacySchema,
    profile: 'coder',
    dryRun: false,
    lock: { lockTimeoutMs: 2000, retries: 5 },
  });
}

/**
 * Returns the pseudonym of each id, in input order, as the installed
 * function computes it. The client must be allowed to call the function,
 * which in practice means the superuser.
 */
export async function pseudonymsOf(client: pg.ClientBase, ids: readonly string[]): Promise<string[]> {
  const { rows } = await client.query<{ pseudonym: string }>(
    `SELECT ${privacySchema}.pseudonym(input.id)::text AS pseudonym
     FROM unnest($1::uuid[]) WITH ORDINALITY AS input(id, position)
     ORDER BY input.position`,
    [ids],
  );
  return rows.map((row) => row.pseudonym);
}

/** Reads the newest pseudonym key as the superuser. Callers must never print it. */
export async function readNewestKey(client: pg.ClientBase): Promise<Buffer> {
  const { rows } = await client.query<{ key: Buffer }>(`SELECT key FROM ${privacySchema}.keys ORDER BY id DESC LIMIT 1`);
  if (rows.length !== 1) throw new Error(`No key found in ${privacySchema}.keys: apply anonymize first`);
  return rows[0].key;
}

/** A login role made for one test file. */
export interface TestRole {
  readonly name: string;
  /** URL of the database given at creation, or of the server's default database, as the role. */
  readonly url: string;
  /** Opens a new client as the role, on `database` or else on the database of `url`; the caller ends it. */
  connect(database?: TestDatabase): Promise<pg.Client>;
  /** Drops the role. Drop every database in which it owns objects or has privileges first. */
  drop(): Promise<void>;
}

async function runAsAdmin(sql: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(sql);
  } finally {
    await admin.end();
  }
}

function roleUrl(databaseUrl: string, name: string, password: string): string {
  const url = new URL(databaseUrl);
  url.username = name;
  url.password = password;
  return url.toString();
}

/**
 * Creates a LOGIN role with a random password and no privileges. Roles are
 * cluster-wide and test files run against one server, so the name gets a
 * random suffix.
 */
export async function createLoginRole(prefix: string, database?: TestDatabase): Promise<TestRole> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const password = randomBytes(16).toString('hex');
  await runAsAdmin(`CREATE ROLE "${name}" LOGIN PASSWORD '${password}'`);

  const url = roleUrl(database ? urlForDatabase(adminUrl(), database.name) : adminUrl(), name, password);
  return {
    name,
    url,
    async connect(other) {
      const client = new pg.Client({ connectionString: other ? roleUrl(other.url, name, password) : url });
      await client.connect();
      return client;
    },
    async drop() {
      await runAsAdmin(`DROP ROLE IF EXISTS "${name}"`);
    },
  };
}

/** Returns the tables that source scope protects in a column set, parents before children. */
export function usageTables(columnSet: ColumnSet): string[] {
  const rollup = columnSet === '2026' ? ['template_usage_stats', 'template_usage_stats_session_apps'] : ['template_usage_stats'];
  return [...rollup, 'workspace_agent_stats', 'workspace_app_stats'];
}

/**
 * Grants a role the given privileges on every usage table of a column set,
 * and USAGE on the sequence behind workspace_app_stats.id, which any INSERT
 * into that table needs.
 */
export async function grantOnUsageTables(client: pg.ClientBase, columnSet: ColumnSet, role: string, privileges: readonly string[]): Promise<void> {
  const tables = usageTables(columnSet).map((table) => `public.${table}`).join(', ');
  await client.query(`GRANT ${privileges.join(', ')} ON ${tables} TO "${role}"`);
  await client.query(`GRANT USAGE ON SEQUENCE public.workspace_app_stats_id_seq TO "${role}"`);
}
