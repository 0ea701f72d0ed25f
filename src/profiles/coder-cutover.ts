import type pg from 'pg';
import { applyBatchSettings } from '../core/backfill.js';
import { ToolError } from '../core/errors.js';
import { execute, queryRows } from '../core/execute.js';
import { ident, joinSql, qualified, SqlFragment, type Statement } from '../core/sql.js';
import { renderTemplate, templateStatements } from '../core/templates.js';
import { inLockedTransaction } from '../core/transaction.js';
import type { AheadConversion, AheadContext, Cutover, CutoverContext, TableRef, UsageTable } from './types.js';

// The cut-over of anonymize: the rows inside the window that Coder's rollup
// recomputes, and the app sessions its collector may upsert again, must hold
// pseudonyms by the time every table has its trigger. The statements below
// run in the transaction that installs anonymize, or in batches before it.

/** Coder's tables that a cut-over converts. */
export interface CutoverTables {
  readonly agentStats: UsageTable;
  readonly appStats: UsageTable;
  /** template_usage_stats; undefined in Coder versions without it. */
  readonly rollup: UsageTable | undefined;
  /** Child tables of the rollup, which follow its rows. */
  readonly children: readonly UsageTable[];
}

/** SQLSTATE of a unique violation: a writer stored a session's pseudonymized twin while a batch ran, so the batch runs again. */
const uniqueViolation = '23505';

function tableSql(table: TableRef): SqlFragment {
  return qualified(table.schema, table.name);
}

/** Returns the SQL expression of the first bucket Coder's rollup recomputes. */
export function rollupFrom(tables: CutoverTables): SqlFragment {
  if (!tables.rollup) return SqlFragment.trusted("(now() - interval '1 hour')");
  return SqlFragment.trusted(renderTemplate('coder/rollup-from.sql', { agentStats: tableSql(tables.agentStats), usageStats: tableSql(tables.rollup) }).trim());
}

function copyRollupRows(table: UsageTable, schema: SqlFragment, range: SqlFragment, params: readonly unknown[]): Statement[] {
  const columns = table.columns.map(ident);
  const converted = table.columns.map((column) =>
    table.userColumns.includes(column) ? SqlFragment.trusted(`${schema.text}.pseudonym(${ident(column).text}, ${ident(table.timeColumn).text})`) : ident(column),
  );
  return templateStatements(
    'coder/copy-usage-stats.sql',
    { table: tableSql(table), columns: joinSql(columns), convertedColumns: joinSql(converted), range, schema },
    params,
  );
}

/**
 * Builds the statements that convert the rollup rows in a range: copies of
 * the rollup and child rows under their pseudonyms, then deletes of the raw
 * child rows and rollup rows. `range` selects rows by start_time and may
 * take `params`.
 */
function rollupConversion(tables: CutoverTables, schema: SqlFragment, range: SqlFragment, params: readonly unknown[] = []): Statement[] {
  if (!tables.rollup) return [];
  const statements = [...copyRollupRows(tables.rollup, schema, range, params)];
  for (const child of tables.children) statements.push(...copyRollupRows(child, schema, range, params));
  for (const table of [...tables.children, tables.rollup]) {
    statements.push(...templateStatements('coder/delete-raw-usage-stats.sql', { table: tableSql(table), range, schema }, params));
  }
  return statements;
}

function appSessionConversion(tables: CutoverTables, schema: SqlFragment, range: SqlFragment, params: readonly unknown[] = []): Statement[] {
  const { appStats } = tables;
  return templateStatements('coder/pseudonymize-app-sessions.sql', { table: tableSql(appStats), timeColumn: ident(appStats.timeColumn), range, schema }, params);
}

/**
 * Builds the cut-over statements of the transaction that installs
 * anonymize. With `context.rawConverted`, convertAhead has converted the raw
 * tables' rows and their triggers have kept them so since, and only the
 * rollup rows that the rollup wrote meanwhile are left to convert.
 */
export function cutoverStatements(tables: CutoverTables, context: CutoverContext): Cutover {
  const { schema, scope } = context;
  const from = rollupFrom(tables);
  const beforeForeignKeys: Statement[] = [];
  const afterForeignKeys: Statement[] = [];

  if (scope === 'source' && !context.rawConverted) {
    const { agentStats } = tables;
    beforeForeignKeys.push(
      ...templateStatements('coder/convert-agent-stats.sql', { agentStats: tableSql(agentStats), timeColumn: ident(agentStats.timeColumn), rollupFrom: from, schema }),
    );
    // Sessions that Coder's rollup still reads or that its collector may
    // upsert again: every session that ended within the window or the last hour.
    const recentSessions = SqlFragment.trusted(`t.session_ended_at >= LEAST(${from.text}, now() - interval '1 hour')`);
    afterForeignKeys.push(...appSessionConversion(tables, schema, recentSessions));
  }

  beforeForeignKeys.push(...rollupConversion(tables, schema, SqlFragment.trusted(`start_time >= ${from.text}`)));
  return { beforeForeignKeys, afterForeignKeys };
}

/**
 * Converts, in batches that each commit on their own, the rows that the
 * cut-over would otherwise convert while it holds the table locks. The
 * caller has committed the triggers of the tables converted here (the raw
 * tables under scope source, the rollup tables under scope rollup), so
 * every row written to them from then on gets a pseudonym, and their rows
 * with real ids only become fewer.
 *
 * Raw agent stats of the window are converted oldest first, along
 * created_at. App sessions are read once, with a scan of the table, and
 * converted by id. Rollup rows with real ids are converted one bucket and
 * template at a time; the rollup may still write a few more until the raw
 * rows are converted, and the cut-over transaction converts those.
 */
export async function convertAhead(client: pg.ClientBase, tables: CutoverTables, context: AheadContext): Promise<AheadConversion> {
  const schema = ident(context.schema);
  const converted = { rawRows: 0, rollupRows: 0 };

  const [{ window_start: windowStart }] = await inLockedTransaction(client, context.lock, () =>
    queryRows<{ window_start: string | null }>(client, 'coder/rollup-window-start.sql', [], { rollupFrom: rollupFrom(tables) }),
  );

  // Without any agent stats or rollup rows the window is empty, but app
  // sessions of the last hour are still converted.
  if (context.scope === 'source') {
    if (windowStart !== null) converted.rawRows += await convertAgentStats(client, tables, schema, windowStart, context);
    converted.rawRows += await convertAppSessions(client, tables, schema, windowStart, context);
  }
  if (tables.rollup && windowStart !== null) converted.rollupRows += await convertRollupRows(client, tables, schema, windowStart, context);
  return converted;
}

function batchLock(tables: readonly TableRef[]): Statement {
  const [statement] = templateStatements('coder/lock-for-batch.sql', { tables: joinSql(tables.map(tableSql)) });
  return statement;
}

async function convertAgentStats(client: pg.ClientBase, tables: CutoverTables, schema: SqlFragment, windowStart: string, context: AheadContext): Promise<number> {
  const { agentStats } = tables;
  const variables = { agentStats: tableSql(agentStats), timeColumn: ident(agentStats.timeColumn), schema };
  let cursor = windowStart;
  let total = 0;
  for (;;) {
    const [batch] = await inLockedTransaction(client, context.lock, async () => {
      await applyBatchSettings(client);
      return queryRows<{ changed: string; last_time: string | null }>(client, 'coder/convert-agent-stats-batch.sql', [cursor, context.batchSize], variables);
    });
    total += Number(batch.changed);
    if (batch.last_time === null || Number(batch.changed) < context.batchSize) return total;
    cursor = batch.last_time;
  }
}

/**
 * Converts the app sessions that the cut-over converts, found by one scan
 * of the table, by id. Each batch locks the table against Coder's collector,
 * whose upserts of the pseudonymized twins would otherwise race with the
 * merges of the batch.
 */
async function convertAppSessions(client: pg.ClientBase, tables: CutoverTables, schema: SqlFragment, windowStart: string | null, context: AheadContext): Promise<number> {
  const sessionIds = await inLockedTransaction(client, context.lock, () =>
    queryRows<{ id: string }>(client, 'coder/raw-app-sessions.sql', [windowStart], { table: tableSql(tables.appStats), schema }),
  );
  const lock = batchLock([tables.appStats]);
  let total = 0;
  for (let first = 0; first < sessionIds.length; first += context.batchSize) {
    const ids = sessionIds.slice(first, first + context.batchSize).map((row) => row.id);
    const [statement] = appSessionConversion(tables, schema, SqlFragment.trusted('t.id = ANY($1::bigint[])'), [ids]);
    const result = await inLockedTransaction(
      client,
      context.lock,
      async () => {
        await execute(client, lock);
        await applyBatchSettings(client);
        return execute<{ changed: string; merged: string }>(client, statement);
      },
      [uniqueViolation],
    );
    total += Number(result.rows[0].changed) + Number(result.rows[0].merged);
  }
  return total;
}

/**
 * Converts the window's rollup rows with real ids, one bucket and template
 * per transaction, and returns how many it replaced. Each batch locks the
 * rollup tables against Coder's rollup, which upserts the same keys, with
 * the lock policy's timeout and retries. When a rollup outlasts them, the
 * remaining rows are left to the cut-over transaction, which converts them
 * under its own locks.
 */
async function convertRollupRows(client: pg.ClientBase, tables: CutoverTables, schema: SqlFragment, windowStart: string, context: AheadContext): Promise<number> {
  const rollup = tables.rollup as UsageTable;
  const groups = await inLockedTransaction(client, context.lock, () =>
    queryRows<{ start_time: string; template_id: string }>(client, 'coder/raw-usage-stats-groups.sql', [windowStart], { table: tableSql(rollup), schema }),
  );
  const lock = batchLock([rollup, ...tables.children]);
  const group = SqlFragment.trusted("start_time = ($1::timestamp AT TIME ZONE 'UTC') AND template_id = $2::uuid");
  let total = 0;
  for (const { start_time: startTime, template_id: templateId } of groups) {
    const statements = rollupConversion(tables, schema, group, [startTime, templateId]);
    try {
      // The last statement deletes the group's raw rollup rows, whose copies are in place.
      total += await inLockedTransaction(client, context.lock, async () => {
        await execute(client, lock);
        let deleted = 0;
        for (const statement of statements) deleted = (await execute(client, statement)).rowCount ?? 0;
        return deleted;
      });
    } catch (error) {
      if (error instanceof ToolError && error.code === 'LOCK_TIMEOUT') return total;
      throw error;
    }
  }
  return total;
}
