import pg from 'pg';
import { findParameters, inlineParameters, valueLiteral } from '../src/core/inline-parameters.js';
import { toolVersion } from '../src/core/version.js';
import { templateStatements } from '../src/core/templates.js';
import { ident, type Statement } from '../src/core/sql.js';
import { adminUrl } from './support/database.js';

function statement(sql: string, params: unknown[]): Statement {
  return { template: 'test.sql', sql, params };
}

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

describe('findParameters', () => {
  test('plain references', () => {
    expect(findParameters('SELECT $1, $2::jsonb, f($10)').map((reference) => reference.number)).toEqual([1, 2, 10]);
  });

  test('offsets cover the digits', () => {
    const [reference] = findParameters('SELECT $12 + 1');
    expect(reference).toEqual({ number: 12, start: 7, end: 10 });
  });

  test.each([
    ['string constant', "SELECT 'costs $1'"],
    ['doubled quote in a string', "SELECT 'it''s $1'"],
    ['E string with an escaped quote', "SELECT E'it\\'s $1'"],
    ['quoted identifier', 'SELECT 1 AS "$1"'],
    ['line comment', 'SELECT 1 -- $1\n'],
    ['block comment', 'SELECT 1 /* $1 */'],
    ['nested block comment', 'SELECT 1 /* outer /* inner */ $1 */'],
    ['dollar-quoted body', 'SELECT $ip_body$ $1 $ip_body$'],
    ['empty dollar tag', 'SELECT $$ $1 $$'],
    ['identifier with a dollar', 'SELECT a$1 FROM t'],
  ])('nothing in a %s', (_name, sql) => {
    expect(findParameters(sql)).toEqual([]);
  });

  test('references after quoted parts', () => {
    const sql = "SELECT 'a''$1', E'\\\\', \"x$2\", $$ $3 $$, $4 -- $5\n, /* $6 */ $7";
    expect(findParameters(sql).map((reference) => reference.number)).toEqual([4, 7]);
  });
});

describe('valueLiteral', () => {
  test.each<[unknown, string]>([
    [null, 'NULL'],
    ['anonymize', "'anonymize'"],
    ["it's", "'it''s'"],
    ['back\\slash', " E'back\\\\slash'"],
    [5, '5'],
    [true, 'TRUE'],
    [false, 'FALSE'],
  ])('%p', (value, expected) => {
    expect(valueLiteral(value)).toBe(expected);
  });

  test.each<[string, unknown]>([
    ['undefined', undefined],
    ['object', { a: 1 }],
    ['infinite number', Number.POSITIVE_INFINITY],
    ['bigint', 1n],
  ])('%s is rejected', (_name, value) => {
    expect(errorOf(() => valueLiteral(value)).message).toMatch(/cannot write a \w+ parameter as a SQL constant/);
  });
});

describe('inlineParameters', () => {
  test('record-state.sql exact text', () => {
    const [recordState] = templateStatements('record-state.sql', { schema: ident('insights_privacy') }, [
      'anonymize',
      'coder',
      null,
      '{"scope":"source"}',
      toolVersion,
      '[["public","workspace_app_stats"]]',
    ]);
    const inlined = inlineParameters(recordState);
    expect(inlined).toContain(`SELECT true, 'anonymize', 'coder', NULL, '{"scope":"source"}'::jsonb, '${toolVersion}', u.tables, now(), session_user,`);
    expect(inlined).toContain(`FROM jsonb_array_elements('[["public","workspace_app_stats"]]'::jsonb) AS t(pair)`);
    expect(findParameters(inlined)).toEqual([]);
  });

  test('values are not scanned again', () => {
    expect(inlineParameters(statement('SELECT $1, $2', ['$2', "'; DROP TABLE users; --"]))).toBe("SELECT '$2', '''; DROP TABLE users; --'");
  });

  test('a parameter used twice', () => {
    expect(inlineParameters(statement('SELECT $1 = $1', ['x']))).toBe("SELECT 'x' = 'x'");
  });

  test('reference past the parameters', () => {
    expect(errorOf(() => inlineParameters(statement('SELECT $1, $2', ['x']))).message).toBe(
      'inlineParameters: sql-templates/test.sql refers to $2, but the statement has 1 parameter(s)',
    );
  });

  test('$0 is rejected', () => {
    expect(errorOf(() => inlineParameters(statement('SELECT $0', ['x']))).message).toContain('refers to $0');
  });

  test('unused parameter', () => {
    expect(errorOf(() => inlineParameters(statement('SELECT $1', ['x', 'y']))).message).toBe('inlineParameters: sql-templates/test.sql has 2 parameter(s) but uses 1');
  });

  test('no parameters, no change', () => {
    const sql = "SELECT '$1', $ip_body$ $2 $ip_body$";
    expect(inlineParameters(statement(sql, []))).toBe(sql);
  });
});

describe('inlined values in PostgreSQL', () => {
  let client: pg.Client;

  beforeAll(async () => {
    client = new pg.Client({ connectionString: adminUrl() });
    await client.connect();
  });

  afterAll(async () => {
    await client?.end();
  });

  // Each value is read back once as a parameter and once inlined; both must give the same text.
  test.each([
    ['quotes', `it's "quoted"`],
    ['backslashes', 'C:\\path\\n\\'],
    ['braces and dollars', '{"scope":"source"} {name} ${x} $1 $$ $ip_body$'],
    ['line breaks', 'one\ntwo\r\nthree'],
    ['unicode', 'Zoë \u2028 😀'],
    ['comment markers', '-- not a comment /* nor this */'],
  ])('%s', async (_name, value) => {
    const sql = 'SELECT $1::text AS value, $2::jsonb AS document';
    const params = [value, JSON.stringify({ value })];
    const expected = await client.query(sql, params);

    const inlined = await client.query(inlineParameters(statement(sql, params)));

    expect(inlined.rows).toEqual(expected.rows);
    expect(inlined.rows[0].value).toBe(value);
  });

  test('NULL', async () => {
    const { rows } = await client.query(inlineParameters(statement('SELECT $1::text IS NULL AS missing', [null])));
    expect(rows[0].missing).toBe(true);
  });
});
