import Table from 'cli-table3';
import type { ChalkInstance } from 'chalk';
import type { ApplyResult } from '../commands/apply.js';
import type { StatusReport, TableStatus } from '../commands/status.js';
import type { Statement } from '../core/sql.js';
import { describePeriod } from '../core/keys.js';
import { advisoryLockClass, advisoryLockObject } from '../core/transaction.js';

/**
 * Prints statements as the transaction apply runs, each preceded by its
 * template and parameters. Statements with parameters show them as comments,
 * so the script is for reading; apply itself passes them as parameters.
 */
export function formatStatements(statements: readonly Statement[], lockTimeoutMs: number): string {
  const lines = [
    'BEGIN;',
    `SELECT set_config('lock_timeout', '${lockTimeoutMs}ms', true);`,
    '-- apply stops here, and retries later, when another insights-privacy run holds this lock.',
    `SELECT pg_try_advisory_xact_lock(${advisoryLockClass}, ${advisoryLockObject});`,
    '',
  ];
  for (const statement of statements) {
    lines.push(`-- sql-templates/${statement.template}`);
    if (statement.params.length > 0) lines.push(`-- parameters: ${statement.params.map((param, index) => `$${index + 1} = ${JSON.stringify(param)}`).join(', ')}`);
    lines.push(statement.sql, '');
  }
  lines.push('COMMIT;', '');
  return lines.join('\n');
}

/** Formats the outcome of apply for people. */
export function formatApply(result: ApplyResult, chalk: ChalkInstance): string {
  const lines: string[] = [];
  const target = `${result.database} (${result.application})`;
  if (result.outcome === 'unchanged') {
    lines.push(chalk.green(`Database ${target}: enforcement already matches mode ${result.mode}${result.scope ? ` (scope ${result.scope})` : ''}; nothing changed.`));
    return `${lines.join('\n')}\n`;
  }
  if (result.outcome === 'dry-run') lines.push(chalk.yellow(`Dry run on ${target}: nothing was changed. These statements would run in one transaction:`));
  if (result.outcome === 'applied') {
    lines.push(chalk.green(`Applied mode ${result.mode}${result.scope ? ` (scope ${result.scope})` : ''} to ${target}.`));
    for (const line of result.summary) lines.push(`  ${line}`);
    for (const key of result.restoredForeignKeys) {
      lines.push(`  Foreign key ${key.name}: ${key.validated ? 'validated' : 'left NOT VALID, because pseudonymized rows remain that match no user'}.`);
    }
  }
  return `${lines.join('\n')}\n`;
}

function yesNo(value: boolean | null, chalk: ChalkInstance, good = true): string {
  if (value === null) return chalk.dim('-');
  return value === good ? chalk.green('yes') : chalk.red('no');
}

function tableRow(table: TableStatus, chalk: ChalkInstance): string[] {
  const rows = table.rows;
  const identifiable = rows ? (rows.identifiable > 0 && table.protected ? chalk.yellow(String(rows.identifiable)) : String(rows.identifiable)) : chalk.dim('not counted');
  return [
    table.table,
    table.protected ? 'yes' : 'no',
    table.trigger === 'present' ? chalk.green('present') : table.protected ? chalk.red('missing') : chalk.dim('none'),
    yesNo(table.enabledAlways, chalk),
    table.functionMatches === null ? chalk.dim('-') : table.functionMatches ? chalk.green('matches') : chalk.red('drifted'),
    identifiable,
    rows ? String(rows.pseudonymized) : '',
    rows ? String(rows.total) : '',
  ];
}

/** Formats the status report for people: a summary, a table per protected table, then findings and notes. */
export function formatStatus(report: StatusReport, chalk: ChalkInstance): string {
  const lines: string[] = [];
  const scope = report.scope ? ` (scope ${report.scope})` : '';
  lines.push(`Database:     ${report.database} (${report.application})`);
  lines.push(`Mode:         ${chalk.bold(report.mode)}${scope}${report.appliedAt ? `, applied ${report.appliedAt} by ${report.appliedBy} with insights-privacy ${report.appliedWithVersion}` : ''}`);
  lines.push(`Schema:       ${report.schema}`);
  lines.push(`HMAC:         ${report.hmac ?? 'none'}`);
  if (report.keyPolicy) lines.push(`Key rotation: ${report.keyPolicy}`);
  for (const key of report.keys) {
    const period = describePeriod(key.periodStart ? new Date(key.periodStart) : null, key.periodEnd ? new Date(key.periodEnd) : null);
    const kind = key.policy === 'none' ? 'key' : `${key.policy} key`;
    lines.push(`Key:          fingerprint ${key.fingerprint}, created ${key.createdAt} (${key.ageDays} days old), ${kind} for ${period}, ${key.state}`);
  }
  for (const key of report.forgottenKeys) {
    const period = describePeriod(key.periodStart ? new Date(key.periodStart) : null, new Date(key.periodEnd));
    const kind = key.policy === 'none' ? 'key' : `${key.policy} key`;
    lines.push(`Forgotten:    fingerprint ${key.fingerprint}, ${kind} for ${period}, deleted ${key.forgottenAt} by ${key.forgottenBy}`);
  }

  const table = new Table({
    head: ['table', 'protected', 'trigger', 'ALWAYS', 'function', 'identifiable rows', 'pseudonymized', 'total'],
    style: { head: [], border: [] },
  });
  for (const row of report.tables) table.push(tableRow(row, chalk));
  lines.push('', table.toString());

  for (const key of report.foreignKeys) lines.push(`Foreign key ${key.table}.${key.name}: ${key.state}`);

  const bypass = new Set(report.tables.flatMap((row) => row.canBypass.map((role) => `${role.role} (${role.reason})`)));
  const probe = new Set(report.tables.flatMap((row) => row.canProbe.map((role) => role.role)));
  lines.push(`Roles that can switch enforcement off: ${[...bypass].join(', ') || 'none'}`);
  lines.push(`Other roles that can insert and read, so can compute the pseudonym of a chosen id: ${[...probe].join(', ') || 'none'}`);

  if (report.findings.length > 0) {
    lines.push('', chalk.bold('Findings:'));
    for (const finding of report.findings) {
      const colour = finding.severity === 'error' ? chalk.red : finding.severity === 'warning' ? chalk.yellow : chalk.dim;
      lines.push(colour(`  ${finding.severity}: ${finding.object} ${finding.problem}. Fix: ${finding.fix}`));
    }
  }
  if (report.notes.length > 0) {
    lines.push('', chalk.bold('Notes:'));
    for (const note of report.notes) lines.push(`  - ${note}`);
  }
  let verdict = report.ok ? chalk.green('Enforcement matches the recorded mode.') : chalk.red('Enforcement does not match the recorded mode.');
  if (report.mode === 'off') verdict = chalk.yellow('No enforcement is installed (mode off).');
  lines.push('', verdict);
  return `${lines.join('\n')}\n`;
}
