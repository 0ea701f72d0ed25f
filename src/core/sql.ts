import pg from 'pg';

/**
 * A piece of SQL text that is safe to splice into a template: a quoted
 * identifier, a quoted literal, or text assembled from other fragments.
 * Templates accept nothing else, so a raw string can never reach SQL.
 */
export class SqlFragment {
  readonly text: string;

  private constructor(text: string) {
    this.text = text;
  }

  /** Wraps SQL text that the tool itself produced (a rendered template, a keyword from a fixed list). */
  static trusted(text: string): SqlFragment {
    return new SqlFragment(text);
  }

  toString(): string {
    return this.text;
  }
}

/** Quotes one identifier (a schema, table, column or function name). */
export function ident(name: string): SqlFragment {
  return SqlFragment.trusted(pg.escapeIdentifier(name));
}

/** Quotes a schema-qualified name, such as `"public"."users"`. */
export function qualified(schema: string, name: string): SqlFragment {
  return SqlFragment.trusted(`${pg.escapeIdentifier(schema)}.${pg.escapeIdentifier(name)}`);
}

/**
 * Quotes a string literal. Only for statements that cannot take parameters
 * (DDL such as COMMENT ON, or text inside a function body); every other value
 * is passed as a query parameter.
 */
export function literal(value: string): SqlFragment {
  return SqlFragment.trusted(pg.escapeLiteral(value));
}

/** Joins fragments with a separator, for example a column list. */
export function joinSql(fragments: readonly SqlFragment[], separator = ', '): SqlFragment {
  return SqlFragment.trusted(fragments.map((fragment) => fragment.text).join(separator));
}

/** One SQL statement as the tool runs or prints it. */
export interface Statement {
  /** Template file the statement came from, relative to `sql-templates/`. */
  readonly template: string;
  readonly sql: string;
  readonly params: readonly unknown[];
}
