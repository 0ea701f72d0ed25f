import type pg from 'pg';
import { ToolError, isDatabaseError } from './errors.js';
import type { Statement } from './sql.js';
import { templateStatements, type TemplateVariables } from './templates.js';

/** SQLSTATE of a lock wait that ran past lock_timeout; such a failure is retried. */
export const lockNotAvailable = '55P03';

/** SQLSTATE of a transaction chosen as the victim of a deadlock; retried too. */
export const deadlockDetected = '40P01';

/** Runs one statement; a failure becomes an error naming its template, SQLSTATE, detail and hint. */
export async function execute<R extends pg.QueryResultRow = pg.QueryResultRow>(
  client: pg.ClientBase,
  statement: Statement,
): Promise<pg.QueryResult<R>> {
  try {
    return await client.query<R>(statement.sql, statement.params as unknown[]);
  } catch (error) {
    throw statementError(statement, error);
  }
}

/** Runs a catalog query from `sql-templates/queries/` and returns its rows. */
export async function queryRows<R extends pg.QueryResultRow>(
  client: pg.ClientBase,
  template: string,
  params: readonly unknown[] = [],
  variables: TemplateVariables = {},
): Promise<R[]> {
  const [statement] = templateStatements(template, variables, params);
  const result = await execute<R>(client, statement);
  return result.rows;
}

function statementError(statement: Statement, error: unknown): unknown {
  if (!isDatabaseError(error)) return error;
  if (error.code === lockNotAvailable || error.code === deadlockDetected) return error;

  const parts = [`SQL from sql-templates/${statement.template} failed: ${error.message} (SQLSTATE ${error.code}).`];
  if (error.detail) parts.push(`Detail: ${error.detail}`);
  if (error.hint) parts.push(`Hint: ${error.hint}`);

  if (error.code === '42501') {
    return new ToolError('MISSING_PRIVILEGE', parts.join(' '), {
      fix: 'Run insights-privacy as the role that owns the application tables (for Coder, the role coder server connects as), or grant that role to the current user.',
      cause: error,
    });
  }
  return new ToolError('SQL_FAILED', parts.join(' '), { cause: error });
}
