import Table from 'cli-table3';
import pg from 'pg';
import type { CliIo } from '../cli/io.js';
import { paint } from '../cli/io.js';
import { formatApply, formatStatus } from '../cli/format.js';
import { ToolError } from '../core/errors.js';
import { defaultSchema } from '../core/enforcement.js';
import { startEmbeddedServer, type EmbeddedServer } from '../embedded/server.js';
import {
  buildPopulation,
  columnSets,
  createCoderSchema,
  generateTraffic,
  insertPopulation,
  readInsights,
  rollupTemplateUsage,
  writeTraffic,
  type ColumnSet,
  type Insights,
  type Population,
} from '../fixture/index.js';
import { applyEnforcement } from './apply.js';
import { readStatus } from './status.js';

/** Settings of `demo`. */
export interface DemoSettings {
  /** Coder's column set to create: '2025' or '2026'. Default '2026'. */
  columnSet?: string;
}

const hourMs = 60 * 60 * 1000;

/** The two databases of the demo: one gets enforcement, the other stays as Coder would leave it. */
interface DemoDatabases {
  enforced: pg.Client;
  control: pg.Client;
}

function parseColumnSet(value: string | undefined): ColumnSet {
  const columnSet = value ?? '2026';
  if (!(columnSets as readonly string[]).includes(columnSet)) {
    throw new ToolError('INVALID_OPTION', `Invalid --column-set "${columnSet}".`, { fix: `Use one of: ${columnSets.join(', ')}.` });
  }
  return columnSet as ColumnSet;
}

async function createDatabase(server: EmbeddedServer, name: string, columnSet: ColumnSet, population: Population): Promise<pg.Client> {
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  await admin.end();

  const client = new pg.Client({ connectionString: server.databaseUrl(name) });
  await client.connect();
  await createCoderSchema(client, columnSet);
  await insertPopulation(client, population);
  return client;
}

/** Writes the same traffic for [from, to) into both databases and runs Coder's rollup as of `to` in each. */
async function writePhase(databases: DemoDatabases, columnSet: ColumnSet, population: Population, from: Date, to: Date, seed: number): Promise<number> {
  const traffic = generateTraffic(population, { from, to, seed });
  for (const client of [databases.enforced, databases.control]) {
    await writeTraffic(client, columnSet, traffic);
    await rollupTemplateUsage(client, columnSet, to);
  }
  return traffic.agentStats.length;
}

function insightsTable(title: string, enforced: Insights, control: Insights): string {
  const table = new Table({ head: [title, 'without enforcement', 'with anonymize'], style: { head: [], border: [] } });
  table.push(['per-user activity rows (joins users)', String(control.userActivity.length), String(enforced.userActivity.length)]);
  table.push(['per-user latency rows (joins users)', String(control.userLatency.length), String(enforced.userLatency.length)]);
  for (let index = 0; index < control.templates.length; index += 1) {
    const plain = control.templates[index];
    const protectedRow = enforced.templates.find((row) => row.templateId === plain.templateId);
    table.push([`${plain.templateName}: active users`, String(plain.activeUsers), String(protectedRow?.activeUsers ?? 0)]);
    table.push([`${plain.templateName}: usage minutes`, String(plain.usageMinutes), String(protectedRow?.usageMinutes ?? 0)]);
  }
  const appMinutes = (insights: Insights) => insights.apps.reduce((sum, row) => sum + row.usageMinutes, 0);
  table.push(['app minutes, all apps', String(appMinutes(control)), String(appMinutes(enforced))]);
  return table.toString();
}

async function storedRealIds(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ count: string }>(`
    SELECT (SELECT count(*) FROM workspace_agent_stats AS s JOIN users AS u ON u.id = s.user_id WHERE s.created_at >= $1)
         + (SELECT count(*) FROM workspace_app_stats AS s JOIN users AS u ON u.id = s.user_id WHERE s.session_started_at >= $1)
         + (SELECT count(*) FROM template_usage_stats AS s JOIN users AS u ON u.id = s.user_id WHERE s.start_time >= $1) AS count`, [new Date(0)]);
  return Number(rows[0].count);
}

/**
 * Runs the demo: an embedded PostgreSQL with two Coder databases fed the same
 * traffic. Three hours of traffic are written, anonymize is applied to one
 * database, three more hours are written, and the insights of the second
 * period are compared.
 */
export async function runDemo(io: CliIo, settings: DemoSettings): Promise<number> {
  const columnSet = parseColumnSet(settings.columnSet);
  const chalk = paint(io);
  const say = (text: string) => io.stdout.write(`${text}\n`);

  say(chalk.bold(`Starting an embedded PostgreSQL server with Coder's ${columnSet} tables...`));
  const server = await startEmbeddedServer();
  const databases: Partial<DemoDatabases> = {};
  try {
    const population = buildPopulation({ users: 12, templates: 2, workspacesPerUser: 1 });
    databases.enforced = await createDatabase(server, 'coder_demo', columnSet, population);
    databases.control = await createDatabase(server, 'coder_control', columnSet, population);
    const both = databases as DemoDatabases;

    const end = new Date(Math.floor(Date.now() / hourMs) * hourMs);
    const switchover = new Date(end.getTime() - 3 * hourMs);
    const start = new Date(end.getTime() - 6 * hourMs);

    const before = await writePhase(both, columnSet, population, start, switchover, 1);
    say(`Wrote ${before} agent reports and their app sessions for ${population.users.length} users from ${start.toISOString()} to ${switchover.toISOString()}, then ran the rollup.`);

    say(chalk.bold('\n$ insights-privacy apply --mode anonymize --yes   (on coder_demo only)'));
    const applied = await applyEnforcement(both.enforced, {
      mode: 'anonymize',
      scope: 'source',
      schema: defaultSchema,
      profile: 'coder',
      dryRun: false,
      lock: { lockTimeoutMs: 2000, retries: 5 },
    });
    io.stdout.write(formatApply(applied, chalk));

    const after = await writePhase(both, columnSet, population, switchover, end, 2);
    say(`\nWrote ${after} more agent reports and their app sessions up to ${end.toISOString()} into both databases, then ran the rollup.`);

    const range = { from: switchover, to: end };
    const enforced = await readInsights(both.enforced, columnSet, range);
    const control = await readInsights(both.control, columnSet, range);
    say(chalk.bold(`\nInsights from ${switchover.toISOString()} to ${end.toISOString()} (after apply):`));
    say(insightsTable('insight', enforced, control));
    say(`Rows that still hold a real user id: ${await storedRealIds(both.control)} without enforcement, ${await storedRealIds(both.enforced)} with anonymize (rows from before apply are kept unless converted by the cut-over).`);

    say(chalk.bold('\n$ insights-privacy status   (on coder_demo)'));
    io.stdout.write(formatStatus(await readStatus(both.enforced, { schema: defaultSchema, profile: 'coder', counts: true }), chalk));
    say(`\nThe demo server is stopped now. To try the tool on your own database: insights-privacy apply --mode anonymize --dry-run --database-url postgresql://...`);
    return 0;
  } finally {
    await databases.enforced?.end().catch(() => undefined);
    await databases.control?.end().catch(() => undefined);
    await server.stop();
  }
}
