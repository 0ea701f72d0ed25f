import type pg from 'pg';
import { ToolError } from './errors.js';
import { queryRows } from './execute.js';
import type { Detection } from '../profiles/types.js';

const identifierPattern = /^[a-z_][a-z0-9_]*$/;

/**
 * Validates the name of the tool's private schema: a lower-case SQL
 * identifier of at most 63 bytes that is not a system or common schema.
 */
export function validateSchemaName(schema: string): void {
  const reserved = ['public', 'information_schema'];
  if (!identifierPattern.test(schema) || Buffer.byteLength(schema) > 63 || schema.startsWith('pg_') || reserved.includes(schema)) {
    throw new ToolError('INVALID_OPTION', `Invalid schema name "${schema}".`, {
      fix: 'Use a lower-case identifier of at most 63 characters (letters, digits, _), not public, information_schema or pg_*; the default is insights_privacy.',
    });
  }
}

/**
 * Checks that the current role can do what apply needs before anything
 * changes: own every usage table (CREATE TRIGGER and ENABLE ALWAYS need the
 * owner) and create the private schema or own the existing one.
 */
export async function checkPrivileges(client: pg.ClientBase, detection: Detection, schema: string): Promise<void> {
  const problems: string[] = [];
  for (const table of detection.tables) {
    const [ownership] = await queryRows<{ owned: boolean }>(client, 'queries/table-owned.sql', [table.oid]);
    if (!ownership?.owned) problems.push(`table ${table.schema}.${table.name} is owned by ${table.owner}`);
  }

  const [role] = await queryRows<{ role: string; schema_owned: boolean | null; can_create: boolean }>(client, 'queries/schema-privileges.sql', [schema]);
  if (role.schema_owned === false) problems.push(`schema ${schema} exists and is owned by another role`);
  if (role.schema_owned === null && !role.can_create) problems.push(`it has no CREATE privilege on the database, which creating schema ${schema} needs`);

  if (problems.length > 0) {
    throw new ToolError('MISSING_PRIVILEGE', `Role ${role.role} cannot install enforcement: ${problems.join('; ')}.`, {
      fix: 'Run insights-privacy as the role that owns the application tables (for Coder, the role coder server connects as), or GRANT that role to the current user.',
    });
  }
}
