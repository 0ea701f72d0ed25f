import pg from 'pg';
import type { Statement } from './sql.js';

/** A positional parameter (`$1`, `$2`, …) in SQL text, outside quotes and comments. */
export interface ParameterReference {
  /** The parameter number: 1 for `$1`. */
  readonly number: number;
  /** Offset of the `$` in the SQL text. */
  readonly start: number;
  /** Offset just after the last digit. */
  readonly end: number;
}

const identifierCharacter = /[A-Za-z0-9_$\u0080-\uffff]/;
const dollarTag = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/;

/** Returns the offset just after a quoted string or identifier that starts at `start`. */
function skipQuoted(sql: string, start: number, backslashEscapes: boolean): number {
  const quote = sql[start];
  let i = start + 1;
  while (i < sql.length) {
    if (backslashEscapes && sql[i] === '\\') {
      i += 2;
    } else if (sql[i] === quote) {
      if (sql[i + 1] !== quote) return i + 1;
      i += 2;
    } else {
      i += 1;
    }
  }
  return sql.length;
}

/** Returns the offset just after a block comment; PostgreSQL allows them nested. */
function skipBlockComment(sql: string, start: number): number {
  let depth = 0;
  let i = start;
  while (i < sql.length) {
    if (sql.startsWith('/*', i)) {
      depth += 1;
      i += 2;
    } else if (sql.startsWith('*/', i)) {
      depth -= 1;
      i += 2;
      if (depth === 0) return i;
    } else {
      i += 1;
    }
  }
  return sql.length;
}

/**
 * Finds the positional parameters in SQL text, following PostgreSQL's lexical
 * rules: nothing inside a string constant (also E'…' with backslash
 * escapes), a quoted identifier, a dollar-quoted string or a comment counts,
 * nor a `$` that continues an identifier such as `a$1`.
 */
export function findParameters(sql: string): ParameterReference[] {
  const references: ParameterReference[] = [];
  let i = 0;

  while (i < sql.length) {
    const character = sql[i];
    const previous = i > 0 ? sql[i - 1] : '';
    const afterIdentifier = identifierCharacter.test(previous);

    if (sql.startsWith('--', i)) {
      const end = sql.indexOf('\n', i);
      i = end === -1 ? sql.length : end + 1;
    } else if (sql.startsWith('/*', i)) {
      i = skipBlockComment(sql, i);
    } else if (character === "'") {
      // E'…' (or e'…') takes backslash escapes; the E must start a token.
      const escaped = (previous === 'E' || previous === 'e') && !identifierCharacter.test(i > 1 ? sql[i - 2] : '');
      i = skipQuoted(sql, i, escaped);
    } else if (character === '"') {
      i = skipQuoted(sql, i, false);
    } else if (character === '$' && !afterIdentifier) {
      const number = /^\$(\d+)/.exec(sql.slice(i, i + 12));
      const tag = dollarTag.exec(sql.slice(i, i + 80));
      if (number) {
        references.push({ number: Number(number[1]), start: i, end: i + number[0].length });
        i += number[0].length;
      } else if (tag) {
        const close = sql.indexOf(tag[0], i + tag[0].length);
        i = close === -1 ? sql.length : close + tag[0].length;
      } else {
        i += 1;
      }
    } else {
      i += 1;
    }
  }
  return references;
}

/**
 * Quotes one parameter value as a SQL constant: a string through
 * node-postgres' escapeLiteral (the rules it uses for its own queries), null
 * as NULL, a finite number or a boolean as itself. Anything else is a bug in
 * the caller, because a plan's parameters are always of these types.
 */
export function valueLiteral(value: unknown): string {
  if (value === null) return 'NULL';
  if (typeof value === 'string') return pg.escapeLiteral(value);
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  if (typeof value === 'boolean') return value ? 'TRUE' : 'FALSE';
  throw new Error(`inlineParameters: cannot write a ${typeof value} parameter as a SQL constant`);
}

/**
 * Returns a statement's SQL with every `$n` replaced by its value as a SQL
 * constant, for files that psql or a migration tool runs without parameters.
 * A reference to a missing parameter, a parameter that the SQL never uses,
 * or a `$n` left in the result is an error.
 */
export function inlineParameters(statement: Statement): string {
  const references = findParameters(statement.sql);
  const used = new Set<number>();
  let result = '';
  let copied = 0;

  for (const reference of references) {
    if (reference.number < 1 || reference.number > statement.params.length) {
      throw new Error(`inlineParameters: sql-templates/${statement.template} refers to $${reference.number}, but the statement has ${statement.params.length} parameter(s)`);
    }
    result += statement.sql.slice(copied, reference.start) + valueLiteral(statement.params[reference.number - 1]);
    copied = reference.end;
    used.add(reference.number);
  }
  result += statement.sql.slice(copied);

  if (used.size !== statement.params.length) {
    throw new Error(`inlineParameters: sql-templates/${statement.template} has ${statement.params.length} parameter(s) but uses ${used.size}`);
  }
  const left = findParameters(result);
  if (left.length > 0) throw new Error(`inlineParameters: $${left[0].number} is left in the SQL of sql-templates/${statement.template}`);
  return result;
}
