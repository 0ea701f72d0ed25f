import type pg from 'pg';
import { type BackfillAction, type BackfillWalk, type BatchRange, type BatchStatement, type KeyColumn } from '../core/backfill.js';
import { ToolError } from '../core/errors.js';
import { queryRows } from '../core/execute.js';
import { ident, joinSql, qualified, SqlFragment, type Statement } from '../core/sql.js';
import { renderTemplate, templateStatements, type TemplateVariables } from '../core/templates.js';
import type { UsageTable } from './types.js';

// The batch statements that pseudonymize or purge the rows Coder stored
// before enforcement. Which columns merge, and how, is read from the
// catalog, so that both of Coder's column sets work.

/** Coder's rollup buckets are 30 minutes long, so no minute count of one bucket can exceed 30. */
const bucketMinutes = SqlFragment.trusted('30');

/** A stored column with its type as `format_type` spells it. */
interface ColumnType {
  readonly name: string;
  readonly type: string;
}

function statement(template: string, variables: TemplateVariables, params: readonly unknown[]): Statement {
  const [rendered] = templateStatements(template, variables, params);
  return rendered;
}

function tableSql(table: UsageTable): SqlFragment {
  return qualified(table.schema, table.name);
}

function conditions(parts: readonly string[]): SqlFragment {
  return SqlFragment.trusted(parts.join(' AND '));
}

/** Builds the statements of purge: child rows of the batch's raw parents first, then the raw rows. */
function purgeStatements(walk: { table: UsageTable; followers: readonly ChildTable[] }, range: BatchRange): BatchStatement[] {
  const userColumn = ident(walk.table.userColumns[0]);
  const statements: BatchStatement[] = walk.followers.map((child) => ({
    statement: statement(
      'backfill/delete-raw-children.sql',
      { child: tableSql(child.table), parent: tableSql(walk.table), parentJoin: child.parentJoin, range: range.condition('t'), userColumn },
      range.params,
    ),
    counts: child.table,
  }));
  statements.push({
    statement: statement('backfill/delete-raw-rows.sql', { table: tableSql(walk.table), range: range.condition('t'), userColumn }, range.params),
    counts: walk.table,
  });
  return statements;
}

/** Builds the walk of workspace_agent_stats: no unique key includes user_id, so rows are pseudonymized in place. */
export function agentStatsWalk(table: UsageTable, key: readonly KeyColumn[], schema: SqlFragment): BackfillWalk {
  return {
    table,
    key,
    followers: [],
    batchStatements(action: BackfillAction, range: BatchRange): BatchStatement[] {
      if (action === 'purge') return purgeStatements({ table, followers: [] }, range);
      const variables = { table: tableSql(table), userColumn: ident(table.userColumns[0]), timeColumn: ident(table.timeColumn), range: range.condition('t'), schema };
      return [{ statement: statement('coder/backfill-agent-stats.sql', variables, range.params), counts: table }];
    },
  };
}

/** Builds the walk of workspace_app_stats: a session that collides with its pseudonymized twin is merged into it. */
export function appStatsWalk(table: UsageTable, key: readonly KeyColumn[], schema: SqlFragment): BackfillWalk {
  return {
    table,
    key,
    followers: [],
    batchStatements(action: BackfillAction, range: BatchRange): BatchStatement[] {
      if (action === 'purge') return purgeStatements({ table, followers: [] }, range);
      const variables = { table: tableSql(table), timeColumn: ident(table.timeColumn), range: range.condition('t'), schema };
      return [{ statement: statement('coder/pseudonymize-app-sessions.sql', variables, range.params), counts: table }];
    },
  };
}

/** A child table of the rollup with what its statements need from the catalog. */
interface ChildTable {
  readonly table: UsageTable;
  readonly columns: readonly ColumnType[];
  readonly key: readonly string[];
  /** `c.<column> = t.<referenced column>` for each column of the foreign key to the rollup. */
  readonly parentJoin: SqlFragment;
}

async function readColumnTypes(client: pg.ClientBase, table: UsageTable): Promise<ColumnType[]> {
  return queryRows<ColumnType>(client, 'queries/table-columns.sql', [table.oid]);
}

async function readChild(client: pg.ClientBase, child: UsageTable, parent: UsageTable): Promise<ChildTable> {
  const [foreignKey] = await queryRows<{ columns: string[]; referenced_columns: string[] }>(client, 'queries/foreign-key-columns.sql', [child.oid, parent.oid]);
  if (!foreignKey) {
    throw new ToolError('NOT_A_CODER_DATABASE', `Table ${child.schema}.${child.name} no longer references ${parent.name}; this tool does not know that Coder schema.`, {
      fix: 'Report the Coder version you run to the insights-privacy maintainers.',
    });
  }
  const key = await queryRows<KeyColumn>(client, 'queries/primary-key.sql', [child.oid]);
  const parentJoin = conditions(foreignKey.columns.map((column, index) => `c.${ident(column).text} = t.${ident(foreignKey.referenced_columns[index]).text}`));
  return { table: child, columns: await readColumnTypes(client, child), key: key.map((column) => column.name), parentJoin };
}

/**
 * Renders the SET list that merges a raw row (alias raw) into its pseudonymized twin
 * (alias twin), from the columns' names and types:
 * - every `*_mins` integer column: the sum, capped at the 30 minutes of a bucket;
 * - `app_usage_mins` (jsonb, app name to minutes): the sum per app, with the same cap;
 * - `median_latency_ms`: the value of the row with more `usage_mins`, the
 *   twin's on a tie, the other row's where the chosen one is null.
 * Columns not listed keep the twin's value.
 */
function mergeAssignments(table: UsageTable, columns: readonly ColumnType[], key: readonly string[]): SqlFragment {
  const render = (template: string, variables: TemplateVariables) => renderTemplate(template, variables).trim();
  const names = new Set(columns.map((column) => column.name));
  const assignments: string[] = [];

  for (const column of columns) {
    if (key.includes(column.name)) continue;
    if (column.name.endsWith('_mins') && ['smallint', 'integer', 'bigint'].includes(column.type)) {
      assignments.push(render('coder/merge-minutes.sql', { column: ident(column.name), bucketMinutes }));
    } else if (column.name === 'app_usage_mins' && column.type === 'jsonb') {
      assignments.push(render('coder/merge-app-minutes.sql', { column: ident(column.name), bucketMinutes }));
    } else if (column.name === 'median_latency_ms' && names.has('usage_mins')) {
      assignments.push(render('coder/merge-latency.sql', { column: ident(column.name), minutes: ident('usage_mins') }));
    }
  }
  if (assignments.length === 0) {
    throw new ToolError('NOT_A_CODER_DATABASE', `Table ${table.schema}.${table.name} has no minute column (*_mins) to merge; this tool does not know that Coder schema.`, {
      fix: 'Report the Coder version you run to the insights-privacy maintainers.',
    });
  }
  return SqlFragment.trusted(assignments.join(',\n      '));
}

/** Variables shared by the copy-or-merge statements of the rollup and its children. */
function copyOrMergeVariables(table: UsageTable, columns: readonly ColumnType[], key: readonly string[]): TemplateVariables {
  const userColumn = table.userColumns[0];
  const twinMatch = key.map((column) =>
    column === userColumn ? `twin.${ident(column).text} = raw.pseudonym` : `twin.${ident(column).text} = raw.${ident(column).text}`,
  );
  const copied = columns.map((column) => (column.name === userColumn ? SqlFragment.trusted('raw.pseudonym') : SqlFragment.trusted(`raw.${ident(column.name).text}`)));
  return {
    columns: joinSql(columns.map((column) => ident(column.name))),
    copiedColumns: joinSql(copied),
    twinMatch: conditions(twinMatch),
    mergeAssignments: mergeAssignments(table, columns, key),
    userColumn: ident(userColumn),
    timeColumn: ident(table.timeColumn),
  };
}

/**
 * Builds the walk of template_usage_stats and the child tables that reference it.
 * Pseudonymize copies each raw row under its pseudonym, or merges it into
 * the pseudonymized row of the same bucket and template, then does the same
 * for its child rows, then deletes the raw rows. Purge deletes the raw rows
 * with their child rows.
 */
export async function rollupWalk(client: pg.ClientBase, table: UsageTable, key: readonly KeyColumn[], children: readonly UsageTable[], schema: SqlFragment): Promise<BackfillWalk> {
  const columns = await readColumnTypes(client, table);
  const keyNames = key.map((column) => column.name);
  const parent = copyOrMergeVariables(table, columns, keyNames);
  const childTables: ChildTable[] = [];
  for (const child of children) childTables.push(await readChild(client, child, table));

  return {
    table,
    key,
    followers: children,
    batchStatements(action: BackfillAction, range: BatchRange): BatchStatement[] {
      if (action === 'purge') return purgeStatements({ table, followers: childTables }, range);

      const statements: BatchStatement[] = [
        { statement: statement('coder/backfill-usage-stats.sql', { ...parent, table: tableSql(table), range: range.condition('t'), schema }, range.params), counts: table },
      ];
      for (const child of childTables) {
        const childVariables = copyOrMergeVariables(child.table, child.columns, child.key);
        statements.push({
          statement: statement(
            'coder/backfill-usage-stats-children.sql',
            {
              ...childVariables,
              child: tableSql(child.table),
              parent: tableSql(table),
              parentJoin: child.parentJoin,
              parentUserColumn: ident(table.userColumns[0]),
              rawMatch: conditions(child.key.map((column) => `c.${ident(column).text} = raw.${ident(column).text}`)),
              range: range.condition('t'),
              schema,
            },
            range.params,
          ),
          counts: child.table,
        });
      }
      statements.push({
        statement: statement('backfill/delete-raw-rows.sql', { table: tableSql(table), range: range.condition('t'), userColumn: ident(table.userColumns[0]) }, range.params),
        counts: null,
      });
      return statements;
    },
  };
}
