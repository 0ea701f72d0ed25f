import Table from 'cli-table3';
import type { ChalkInstance } from 'chalk';
import type { ApplyResult } from '../commands/apply.js';
import type { BackfillCommandResult } from '../commands/backfill.js';
import type { GenerateResult } from '../commands/generate.js';
import { describeEnforcement } from '../core/migration.js';
import type { TableBackfill } from '../core/backfill.js';
import type { BackfillStatus, StatusReport, TableStatus } from '../commands/status.js';
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
    const changed = result.backfill && result.backfill.outcome !== 'already finished' ? '' : '; nothing changed';
    lines.push(chalk.green(`Database ${target}: enforcement already matches mode ${result.mode}${result.scope ? ` (scope ${result.scope})` : ''}${changed}.`));
    if (result.backfill) lines.push(formatBackfill(result.backfill, chalk).trimEnd());
    return `${lines.join('\n')}\n`;
  }
  if (result.outcome === 'dry-run') lines.push(chalk.yellow(`Dry run on ${target}: nothing was changed. These statements would run in one transaction:`));
  if (result.outcome === 'applied') {
    lines.push(chalk.green(`Applied mode ${result.mode}${result.scope ? ` (scope ${result.scope})` : ''} to ${target}.`));
    for (const line of result.summary) lines.push(`  ${line}`);
    for (const key of result.restoredForeignKeys) {
      lines.push(`  Foreign key ${key.name}: ${key.validated ? 'validated' : 'left NOT VALID, because pseudonymized rows remain that match no user'}.`);
    }
    if (result.backfill) lines.push(formatBackfill(result.backfill, chalk).trimEnd());
  }
  return `${lines.join('\n')}\n`;
}

function describeTableBackfill(table: TableBackfill, action: string): string {
  const done = action === 'purge' ? 'deleted' : 'pseudonymized';
  const merged = action === 'pseudonymize' ? `, ${table.rowsMerged} merged into pseudonymized rows` : '';
  if (table.outcome === 'pending') return `  ${table.table}: not reached before the run stopped.`;
  if (table.movesWith) return `  ${table.table}: ${table.outcome} with ${table.movesWith}; ${table.rowsChanged} ${done}${merged}.`;
  const rate = table.rowsPerSecond === null ? '' : ` (${table.rowsWalkedThisRun} in this run, ${table.seconds.toFixed(1)} s, ${Math.round(table.rowsPerSecond)} rows/s)`;
  return `  ${table.table}: ${table.outcome}; ${table.rowsWalked} rows walked${rate}, ${table.rowsChanged} ${done}${merged}.`;
}

/** Formats the outcome of generate for people: the change, the files written and how to run them. */
export function formatGenerate(result: GenerateResult, chalk: ChalkInstance): string {
  const current = describeEnforcement(result.current.mode, result.current.scope);
  const target = describeEnforcement(result.target.mode, result.target.scope);
  const lines = [chalk.green(`Wrote a ${result.format} migration for ${result.database} (${result.application}): ${current} -> ${target}, in schema ${result.schema}.`)];
  for (const file of result.files) lines.push(`  ${file.path} (${file.direction})`);
  if (result.irreversible) {
    lines.push(chalk.yellow(`The down migration is irreversible and fails without changing anything: ${result.irreversible}`));
  } else {
    lines.push(`The down migration returns to ${current}.`);
  }
  lines.push('Run it with:', ...result.run.map((command) => `  ${command}`));
  return `${lines.join('\n')}\n`;
}

/** Formats the outcome of a backfill for people: one line for the run, then one per table. */
export function formatBackfill(result: BackfillCommandResult, chalk: ChalkInstance): string {
  const lines: string[] = [];
  if (result.outcome === 'finished') lines.push(chalk.green(`Backfill (${result.action}) of ${result.database} (${result.application}) finished.`));
  if (result.outcome === 'already finished') lines.push(chalk.green(`Backfill (${result.action}) of ${result.database} had already finished; nothing changed.`));
  if (result.outcome === 'interrupted') {
    lines.push(chalk.yellow(`Backfill (${result.action}) of ${result.database} interrupted after its last committed batch; run "insights-privacy backfill --existing ${result.action}" to continue.`));
  }
  for (const table of result.tables) lines.push(describeTableBackfill(table, result.action));
  return `${lines.join('\n')}\n`;
}

function describeRecordedBackfill(backfill: BackfillStatus, chalk: ChalkInstance): string {
  const done = backfill.action === 'purge' ? 'deleted' : 'pseudonymized';
  const counts = backfill.movesWith
    ? `moves with ${backfill.movesWith}; ${backfill.rowsChanged} ${done}`
    : `${backfill.rowsWalked} rows walked, ${backfill.rowsChanged} ${done}`;
  const merged = backfill.action === 'pseudonymize' ? `, ${backfill.rowsMerged} merged` : '';
  if (backfill.state === 'finished') return `${backfill.action} ${chalk.green('finished')} ${backfill.finishedAt}; ${counts}${merged}.`;
  const running = backfill.running ? 'running' : `stopped, last batch ${backfill.updatedAt}; run "insights-privacy backfill --existing ${backfill.action}" to continue`;
  return `${backfill.action} ${chalk.yellow('in progress')} (${running}); ${counts}${merged}.`;
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
  for (const row of report.tables) {
    const backfill = row.backfill;
    if (!backfill) continue;
    lines.push(`Backfill of ${row.table}: ${describeRecordedBackfill(backfill, chalk)}`);
  }

  const bypass = new Set(report.tables.flatMap((row) => row.canBypass.map((role) => `${role.role} (${role.reason})`)));
  const probe = new Set(report.tables.flatMap((row) => row.canProbe.map((role) => role.role)));
  lines.push(`Roles that can switch enforcement off: ${[...bypass].join(', ') || 'none'}`);
  lines.push(`Other roles that can insert and read, so can compute the pseudonym of a chosen id: ${[...probe].join(', ') || 'none'}`);

  if (report.findings.length > 0) {
    lines.push('', chalk.bold('Findings:'));
    for (const finding of report.findings) {
      const colours = { error: chalk.red, warning: chalk.yellow, info: chalk.dim };
    const colour = colours[finding.severity];
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
