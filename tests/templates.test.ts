import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { runCli } from '../src/cli/main.js';
import { triggerEvents, triggerFunction } from '../src/core/enforcement.js';
import { ExitCode, ToolError } from '../src/core/errors.js';
import { validateSchemaName } from '../src/core/preflight.js';
import { ident, joinSql, literal, qualified, SqlFragment } from '../src/core/sql.js';
import { bodyTag, functionBody, renderTemplate, splitStatements, TemplateError, templateStatements } from '../src/core/templates.js';
import type { UsageTable } from '../src/profiles/types.js';
import { createCoderDatabase, type CoderDatabase } from './support/coder.js';

const appStats: UsageTable = {
  schema: 'public',
  name: 'workspace_app_stats',
  oid: 1,
  owner: 'coder',
  role: 'raw',
  userColumns: ['user_id'],
  timeColumn: 'session_started_at',
  columns: ['id', 'user_id', 'workspace_id', 'session_started_at'],
};

/** Returns the error that `action` throws, or fails the test. */
function errorOf(action: () => unknown): Error {
  try {
    action();
  } catch (error) {
    if (error instanceof Error) return error;
    throw error;
  }
  throw new Error('expected an error, but nothing was thrown');
}

let workDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-templates-'));
});

afterAll(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/**
 * Writes a template outside sql-templates/ and returns the name that loads
 * it: an absolute path, which resolves against the template folder's URL to
 * itself.
 */
async function scratchTemplate(fileName: string, text: string): Promise<string> {
  const path = join(workDir, fileName);
  await writeFile(path, text);
  return path;
}

describe('renderTemplate', () => {
  test('drop-trigger.sql exact text', () => {
    const rendered = renderTemplate('drop-trigger.sql', { trigger: ident('zz_insights_privacy'), table: qualified('public', 'workspace_app_stats') });

    expect(rendered).toBe('DROP TRIGGER IF EXISTS "zz_insights_privacy" ON "public"."workspace_app_stats";\n');
  });

  test('trigger.sql exact statements', () => {
    const statements = templateStatements('trigger.sql', {
      trigger: ident('zz_insights_privacy'),
      table: qualified('public', 'workspace_app_stats'),
      events: SqlFragment.trusted(triggerEvents(appStats, 'anonymize')),
      function: qualified('insights_privacy', 'enforce_workspace_app_stats'),
      comment: literal("it's the tool's trigger"),
    });

    expect(statements.map((statement) => statement.sql)).toEqual([
      'DROP TRIGGER IF EXISTS "zz_insights_privacy" ON "public"."workspace_app_stats";',
      'CREATE TRIGGER "zz_insights_privacy"\n  BEFORE INSERT OR UPDATE OF "user_id" ON "public"."workspace_app_stats"\n  FOR EACH ROW EXECUTE FUNCTION "insights_privacy"."enforce_workspace_app_stats"();',
      'ALTER TABLE "public"."workspace_app_stats" ENABLE ALWAYS TRIGGER "zz_insights_privacy";',
      `COMMENT ON TRIGGER "zz_insights_privacy" ON "public"."workspace_app_stats" IS 'it''s the tool''s trigger';`,
    ]);
    expect(statements.every((statement) => statement.template === 'trigger.sql')).toBe(true);
    expect(statements.every((statement) => statement.params.length === 0)).toBe(true);
  });

  test('disable trigger events', () => {
    expect(triggerEvents(appStats, 'disable')).toBe('INSERT');
  });

  test('anonymize trigger function exact text', () => {
    const expected = triggerFunction('insights_privacy', appStats, 'anonymize', { hmac: 'pgcrypto', crypto: { schema: 'public', create: false }, policy: 'none' });
    const body = [
      'DECLARE',
      '  digest pg_catalog.bytea;',
      'BEGIN',
      '  IF NOT (pg_catalog.get_byte(pg_catalog.uuid_send(NEW."user_id"), 6) OPERATOR(pg_catalog.>>) 4 OPERATOR(pg_catalog.=) 8) THEN',
      `    SELECT "public"."hmac"(pg_catalog.decode('696e7369676874732d707269766163793a757365725f69643a76310a', 'hex') OPERATOR(pg_catalog.||) pg_catalog.uuid_send(NEW."user_id"), k.key, 'sha256'::pg_catalog.text) INTO digest`,
      '    FROM "insights_privacy".keys AS k',
      "    WHERE k.policy OPERATOR(pg_catalog.=) 'none'",
      '      AND (k.valid_from IS NULL OR k.valid_from OPERATOR(pg_catalog.<=) NEW."session_started_at")',
      '      AND (k.valid_until IS NULL OR NEW."session_started_at" OPERATOR(pg_catalog.<) k.valid_until)',
      '    ORDER BY k.valid_from DESC NULLS LAST, k.id DESC',
      '    LIMIT 1;',
      '    IF digest IS NULL OR NEW."session_started_at" IS NULL THEN',
      '      NEW."user_id" := "insights_privacy".pseudonym(NEW."user_id", NEW."session_started_at");',
      '    ELSE',
      "      NEW.\"user_id\" := pg_catalog.encode(pg_catalog.substr(pg_catalog.set_byte(pg_catalog.set_byte(digest, 6, pg_catalog.get_byte(digest, 6) OPERATOR(pg_catalog.&) 15 OPERATOR(pg_catalog.|) 128), 8, pg_catalog.get_byte(digest, 8) OPERATOR(pg_catalog.&) 63 OPERATOR(pg_catalog.|) 128), 1, 16), 'hex')::pg_catalog.uuid;",
      '    END IF;',
      '  END IF;',
      '  RETURN NEW;',
      'END',
    ];

    expect(expected.name).toBe('enforce_workspace_app_stats');
    expect(expected.body).toBe(`\n${body.join('\n')}\n`);
    expect(expected.config).toBe('');
    expect(expected.statements.map((statement) => statement.sql)).toEqual([
      ['CREATE OR REPLACE FUNCTION "insights_privacy"."enforce_workspace_app_stats"()', 'RETURNS trigger', 'LANGUAGE plpgsql', 'SECURITY DEFINER', 'AS $ip_body$', ...body, '$ip_body$;'].join('\n'),
      'REVOKE ALL ON FUNCTION "insights_privacy"."enforce_workspace_app_stats"() FROM PUBLIC;',
    ]);
  });

  test('anonymize trigger function needs the pseudonym setup', () => {
    const error = errorOf(() => triggerFunction('insights_privacy', appStats, 'anonymize'));

    expect(error.message).toBe('triggerFunction: anonymize needs the pseudonym setup');
  });

  test('trigger function selects a period key by its start', () => {
    const expected = triggerFunction('insights_privacy', appStats, 'anonymize', { hmac: 'core', crypto: null, policy: 'monthly' });

    expect(expected.body).toContain('pg_catalog.sha256(k.outer_key_pad OPERATOR(pg_catalog.||) pg_catalog.sha256(k.inner_key_pad OPERATOR(pg_catalog.||)');
    expect(expected.body).toContain(
      "WHERE k.policy OPERATOR(pg_catalog.=) 'monthly'\n      AND k.valid_from OPERATOR(pg_catalog.=) (pg_catalog.date_trunc('month', NEW.\"session_started_at\" AT TIME ZONE 'UTC') AT TIME ZONE 'UTC');",
    );
  });

  test('disable trigger function body', () => {
    const rendered = renderTemplate('trigger-function-disable.sql', { function: qualified('insights_privacy', 'enforce_workspace_app_stats') });

    expect(functionBody(rendered)).toBe('\nBEGIN\n  RETURN NULL;\nEND\n');
    expect(triggerFunction('insights_privacy', appStats, 'disable').body).toBe('\nBEGIN\n  RETURN NULL;\nEND\n');
  });

  test('spaces inside placeholder', async () => {
    const name = await scratchTemplate('spaced.sql', 'SELECT {{ column }} FROM {{table}};\n');

    expect(renderTemplate(name, { column: ident('user_id'), table: qualified('public', 'users') })).toBe('SELECT "user_id" FROM "public"."users";\n');
  });

  test('missing variable', () => {
    const error = errorOf(() => renderTemplate('drop-trigger.sql', { trigger: ident('zz_insights_privacy') }));

    expect(error).toBeInstanceOf(TemplateError);
    expect(error.message).toBe('SQL template drop-trigger.sql: missing variable {{table}}');
  });

  test('plain string variable', () => {
    const error = errorOf(() =>
      renderTemplate('drop-trigger.sql', { trigger: 'zz_insights_privacy' as unknown as SqlFragment, table: qualified('public', 'workspace_app_stats') }),
    );

    expect(error).toBeInstanceOf(TemplateError);
    expect(error.message).toContain('{{trigger}}');
  });

  test('unused variables', () => {
    const variables = { trigger: ident('t'), table: qualified('public', 'x'), extra: ident('e'), spare: ident('s') };

    const error = errorOf(() => renderTemplate('drop-trigger.sql', variables));

    expect(error).toBeInstanceOf(TemplateError);
    expect(error.message).toBe('SQL template drop-trigger.sql: unused variable(s) extra, spare');
  });

  test.each([
    { case: 'hyphen in name', text: 'SELECT {{ user-id }};\n', placeholder: '{{ user-id }}' },
    { case: 'digit first', text: 'SELECT {{1st}};\n', placeholder: '{{1st}}' },
    { case: 'empty name', text: 'SELECT {{}};\n', placeholder: '{{}}' },
  ])('malformed placeholder: $case', async (row) => {
    const name = await scratchTemplate(`malformed-${row.case.replace(/ /g, '-')}.sql`, row.text);

    const error = errorOf(() => renderTemplate(name, {}));

    expect(error).toBeInstanceOf(TemplateError);
    expect(error.message).toContain(`malformed placeholder ${row.placeholder}`);
  });

  test.each([
    { case: 'identifier', value: ident(`x${bodyTag}`) },
    { case: 'literal', value: literal(`end ${bodyTag}; DROP TABLE users; --`) },
  ])('dollar-quote tag in $case', ({ value }) => {
    const error = errorOf(() => renderTemplate('trigger-function-disable.sql', { function: value }));

    expect(error).toBeInstanceOf(TemplateError);
    expect(error.message).toBe(`SQL template trigger-function-disable.sql: variable {{function}} contains the dollar-quote tag ${bodyTag}`);
  });
});

describe('splitStatements', () => {
  test.each([
    { case: 'semicolon in string', sql: "SELECT 'a;b';\nSELECT 2;", expected: ["SELECT 'a;b';", 'SELECT 2;'] },
    { case: 'doubled quote in string', sql: "SELECT 'it''s; fine';\nSELECT 2;", expected: ["SELECT 'it''s; fine';", 'SELECT 2;'] },
    { case: 'E-string from escapeLiteral', sql: `SELECT${literal("a\\b'; c").text};\nSELECT 2;`, expected: ["SELECT E'a\\\\b''; c';", 'SELECT 2;'] },
    { case: 'quoted identifier', sql: 'SELECT "a"";b" FROM t;\nSELECT 2;', expected: ['SELECT "a"";b" FROM t;', 'SELECT 2;'] },
    {
      case: 'tagged dollar quote',
      sql: 'CREATE FUNCTION f() RETURNS int AS $ip_body$ BEGIN PERFORM 1; RETURN 1; END $ip_body$ LANGUAGE plpgsql;\nSELECT 2;',
      expected: ['CREATE FUNCTION f() RETURNS int AS $ip_body$ BEGIN PERFORM 1; RETURN 1; END $ip_body$ LANGUAGE plpgsql;', 'SELECT 2;'],
    },
    { case: 'anonymous dollar quote', sql: 'DO $$ BEGIN PERFORM 1; END $$;\nSELECT 2;', expected: ['DO $$ BEGIN PERFORM 1; END $$;', 'SELECT 2;'] },
    { case: 'nested dollar quotes', sql: 'SELECT $a$ x $$ y; $$ z $a$;\nSELECT 2;', expected: ['SELECT $a$ x $$ y; $$ z $a$;', 'SELECT 2;'] },
    { case: 'parameter is no dollar quote', sql: 'SELECT $1::text;\nSELECT $2;', expected: ['SELECT $1::text;', 'SELECT $2;'] },
    { case: 'line comment', sql: "-- leading; comment with 'quote\nSELECT 1;\nSELECT 2; -- trailing; comment\n", expected: ['SELECT 1;', 'SELECT 2;'] },
    { case: 'comment inside statement', sql: "SELECT 1 -- don't; split\n, 2;\nSELECT 3;", expected: ["SELECT 1 -- don't; split\n, 2;", 'SELECT 3;'] },
    { case: 'block comment', sql: "/* it's; one */ SELECT 1;\nSELECT 2;", expected: ["/* it's; one */ SELECT 1;", 'SELECT 2;'] },
    { case: 'comment marks in string', sql: "SELECT '/*', '--';\nSELECT 2;", expected: ["SELECT '/*', '--';", 'SELECT 2;'] },
    { case: 'two on one line', sql: 'SELECT 1; SELECT 2;', expected: ['SELECT 1;', 'SELECT 2;'] },
    { case: 'no final semicolon', sql: 'SELECT 1;\nSELECT 2', expected: ['SELECT 1;', 'SELECT 2'] },
    { case: 'only comments', sql: '-- nothing here\n\n', expected: [] },
  ])('$case', ({ sql, expected }) => {
    expect(splitStatements(sql)).toEqual(expected);
  });
});

describe('quoting', () => {
  test.each([
    { name: 'a"b', quoted: '"a""b"' },
    { name: 'workspace_app_stats', quoted: '"workspace_app_stats"' },
    { name: 'Mixed Case', quoted: '"Mixed Case"' },
    { name: 'x"; DROP TABLE users; --', quoted: '"x""; DROP TABLE users; --"' },
    { name: '$ip_body$', quoted: '"$ip_body$"' },
  ])('ident($name)', ({ name, quoted }) => {
    expect(ident(name).text).toBe(quoted);
  });

  test('qualified name', () => {
    expect(qualified('my schema', 'ta"ble').text).toBe('"my schema"."ta""ble"');
  });

  test.each([
    { value: "it's", quoted: "'it''s'" },
    { value: 'a\\b', quoted: " E'a\\\\b'" },
    { value: "'; DROP TABLE users; --", quoted: "'''; DROP TABLE users; --'" },
  ])('literal($value)', ({ value, quoted }) => {
    expect(literal(value).text).toBe(quoted);
  });

  test('joined fragments', () => {
    expect(joinSql([ident('a'), ident('b"c')]).text).toBe('"a", "b""c"');
  });
});

describe('against PostgreSQL', () => {
  let coder: CoderDatabase;
  const oddNames = ['x"; DROP TABLE users; --', 'Mixed Case', "quote's", 'semi;colon', 'dollar$ip_body$'];

  beforeAll(async () => {
    coder = await createCoderDatabase('templates', '2025');
  });

  afterAll(async () => {
    await coder?.close();
  });

  test.each(oddNames)('identifier %s round trip', async (name) => {
    const { fields } = await coder.client.query(`SELECT 1 AS ${ident(name).text}`);

    expect(fields.map((field) => field.name)).toEqual([name]);
  });

  test.each([...oddNames, 'back\\slash', "E'\\''", 'ünïcødé'])('literal %s round trip', async (value) => {
    const { rows } = await coder.client.query<{ value: string }>(`SELECT ${literal(value).text} AS value`);

    expect(rows[0].value).toBe(value);
  });

  test('statements on odd table names', async () => {
    const odd = 'x"; DROP TABLE users; --';
    await coder.client.query(`CREATE TABLE public.${ident(odd).text} (user_id uuid)`);
    const statements = [
      ...templateStatements('lock-tables.sql', { tables: joinSql([qualified('public', odd), qualified('public', 'users')]) }),
      ...templateStatements('drop-trigger.sql', { trigger: ident('zz_insights_privacy'), table: qualified('public', odd) }),
    ];

    await coder.client.query('BEGIN');
    for (const statement of statements) await coder.client.query(statement.sql);
    await coder.client.query('COMMIT');

    expect(statements).toHaveLength(2);
    const { rows } = await coder.client.query<{ users: number }>('SELECT count(*)::int AS users FROM public.users');
    expect(rows[0].users).toBe(coder.population.users.length);
  });

  test.each([
    { case: 'injection', schema: 'x"; DROP TABLE users; --' },
    { case: 'dollar-quote tag', schema: 'x$ip_body$' },
  ])('apply rejects schema name: $case', async ({ schema }) => {
    let stdout = '';
    let stderr = '';
    const code = await runCli(['apply', '--mode', 'anonymize', '--yes', '--schema', schema, '--database-url', coder.database.url], {
      stdout: { write: (text: string) => (stdout += text) },
      stderr: { write: (text: string) => (stderr += text) },
      stdin: Object.assign(new PassThrough(), { isTTY: false }),
      env: {},
      cwd: workDir,
      colour: false,
    });

    expect(code).toBe(ExitCode.error);
    expect(stdout).toBe('');
    expect(stderr).toContain(`error: Invalid schema name "${schema}".`);
    const { rows } = await coder.client.query<{ users: number; schemas: number; triggers: number }>(
      `SELECT (SELECT count(*)::int FROM public.users) AS users,
              (SELECT count(*)::int FROM pg_catalog.pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('public', 'information_schema')) AS schemas,
              (SELECT count(*)::int FROM pg_catalog.pg_trigger WHERE tgname = 'zz_insights_privacy') AS triggers`,
    );
    expect(rows[0].users).toBe(coder.population.users.length);
    expect(rows[0].schemas).toBe(0);
    expect(rows[0].triggers).toBe(0);
  });

  test.each(['x$ip_body$', '$ip_body$'])('validateSchemaName rejects %s', (schema) => {
    const error = errorOf(() => validateSchemaName(schema));

    expect(error).toBeInstanceOf(ToolError);
    expect((error as ToolError).code).toBe('INVALID_OPTION');
  });
});
