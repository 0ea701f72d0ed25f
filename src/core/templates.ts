import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SqlFragment, type Statement } from './sql.js';

/** Folder of the SQL templates; the same relative path from `src/core` and `dist/core`. */
export const templateDir = fileURLToPath(new URL('../../sql-templates/', import.meta.url));

/** The dollar-quote tag of every function body the templates define. */
export const bodyTag = '$ip_body$';

const placeholderPattern = /\{\{\s*([A-Za-z][A-Za-z0-9_]*)\s*\}\}/g;
const cache = new Map<string, string>();

/** Variables of one template: each value is a fragment of safe SQL. */
export type TemplateVariables = Record<string, SqlFragment>;

/** Thrown when a template and its variables do not fit; always a bug in the tool, never a user error. */
export class TemplateError extends Error {
  constructor(template: string, problem: string) {
    super(`SQL template ${template}: ${problem}`);
    this.name = 'TemplateError';
  }
}

function loadTemplate(name: string): string {
  let text = cache.get(name);
  if (text === undefined) {
    text = readFileSync(new URL(name, `file://${templateDir}`), 'utf8');
    cache.set(name, text);
  }
  return text;
}

/**
 * Renders a template: substitutes every `{{name}}` placeholder.
 *
 * A placeholder without a variable, a variable the template does not use, a
 * malformed `{{…}}`, or a value that contains the function-body dollar-quote
 * tag is an error, so a template and its caller can never silently disagree.
 */
export function renderTemplate(name: string, variables: TemplateVariables): string {
  const source = loadTemplate(name);
  const used = new Set<string>();

  const rendered = source.replace(placeholderPattern, (_match, key: string) => {
    const value = variables[key];
    if (!(value instanceof SqlFragment)) throw new TemplateError(name, `missing variable {{${key}}}`);
    if (value.text.includes(bodyTag)) throw new TemplateError(name, `variable {{${key}}} contains the dollar-quote tag ${bodyTag}`);
    used.add(key);
    return value.text;
  });

  const malformed = rendered.match(/\{\{[^}]*\}\}/);
  if (malformed) throw new TemplateError(name, `malformed placeholder ${malformed[0]}`);
  const unused = Object.keys(variables).filter((key) => !used.has(key));
  if (unused.length > 0) throw new TemplateError(name, `unused variable(s) ${unused.join(', ')}`);

  return rendered;
}

/**
 * Renders a fragment template, a piece of an expression or a clause that
 * other templates include through a variable, without its leading comment
 * lines and surrounding white space.
 */
export function renderFragment(name: string, variables: TemplateVariables): SqlFragment {
  return SqlFragment.trusted(stripLeadingComments(renderTemplate(name, variables)));
}

/**
 * Splits SQL text into statements at semicolons that end a line, outside
 * quoted strings, quoted identifiers, dollar-quoted bodies and comments.
 */
export function splitStatements(sql: string): string[] {
  const statements: string[] = [];
  let start = 0;
  let i = 0;

  while (i < sql.length) {
    const rest = sql.slice(i);
    const dollar = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(rest);

    if (rest.startsWith('--')) {
      const end = sql.indexOf('\n', i);
      i = end === -1 ? sql.length : end + 1;
    } else if (rest.startsWith('/*')) {
      const end = sql.indexOf('*/', i + 2);
      i = end === -1 ? sql.length : end + 2;
    } else if (sql[i] === "'" || sql[i] === '"') {
      const quote = sql[i];
      let j = i + 1;
      while (j < sql.length && !(sql[j] === quote && sql[j + 1] !== quote)) j += sql[j] === quote ? 2 : 1;
      i = j + 1;
    } else if (dollar) {
      const end = sql.indexOf(dollar[0], i + dollar[0].length);
      i = end === -1 ? sql.length : end + dollar[0].length;
    } else if (sql[i] === ';') {
      statements.push(sql.slice(start, i + 1));
      start = i + 1;
      i += 1;
    } else {
      i += 1;
    }
  }

  statements.push(sql.slice(start));
  return statements.map(stripLeadingComments).filter((statement) => statement.length > 0);
}

function stripLeadingComments(statement: string): string {
  const lines = statement.trim().split('\n');
  while (lines.length > 0 && (lines[0].trim() === '' || lines[0].trim().startsWith('--'))) lines.shift();
  return lines.join('\n').trim();
}

/** Renders a template into its statements, all sharing the same parameters. */
export function templateStatements(name: string, variables: TemplateVariables, params: readonly unknown[] = []): Statement[] {
  return splitStatements(renderTemplate(name, variables)).map((sql) => ({ template: name, sql, params }));
}

/** Extracts the text between the function-body dollar quotes, as PostgreSQL stores it in `pg_proc.prosrc`. */
export function functionBody(renderedSql: string): string {
  const start = renderedSql.indexOf(bodyTag);
  const end = renderedSql.indexOf(bodyTag, start + bodyTag.length);
  if (start === -1 || end === -1) throw new Error('rendered SQL has no function body');
  return renderedSql.slice(start + bodyTag.length, end);
}
