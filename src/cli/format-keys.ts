import type { ChalkInstance } from 'chalk';
import type { ExportKeyResult } from '../commands/export-key.js';
import type { ForgetKeysResult } from '../commands/forget-keys.js';
import type { ImportedKeyInfo, ImportKeyResult } from '../commands/import-key.js';
import type { RotateKeyResult } from '../commands/rotate-key.js';
import { describePeriod } from '../core/keys.js';

function describeKey(key: { fingerprint: string; policy: string; validFrom: string | null; validUntil: string | null }): string {
  const period = describePeriod(key.validFrom ? new Date(key.validFrom) : null, key.validUntil ? new Date(key.validUntil) : null);
  return `${key.fingerprint} (${key.policy}, ${period})`;
}

/** Formats the outcome of rotate-key for people. */
export function formatRotate(result: RotateKeyResult, chalk: ChalkInstance): string {
  const lines = [chalk.green(`Rotated the pseudonym key of ${result.database}: key ${result.fingerprint} takes over from ${result.previousFingerprint} at ${result.switchAt}.`)];
  for (const line of result.summary) lines.push(`  ${line}`);
  return `${lines.join('\n')}\n`;
}

/** Formats the outcome of forget-keys for people. */
export function formatForget(result: ForgetKeysResult, chalk: ChalkInstance): string {
  if (result.outcome === 'unchanged') return `${chalk.green(`Database ${result.database}: no key period ended by ${result.before}; nothing changed.`)}\n`;
  const lines = [chalk.green(`Deleted ${result.forgotten.length} key(s) of ${result.database} whose period ended by ${result.before}.`)];
  for (const line of result.summary) lines.push(`  ${line}`);
  if (!result.tableRewritten) {
    lines.push(
      chalk.yellow(
        `  The key table was not rewritten (a transaction older than the deletion stayed open, the lock was not granted, or another role owns the table), so deleted key bytes may remain in its file until "VACUUM FULL ${result.schema}.keys" runs as the table's owner with no older transaction open.`,
      ),
    );
  }
  return `${lines.join('\n')}\n`;
}

/** Formats the outcome of export-key for people; the keys themselves are never shown. */
export function formatExport(result: ExportKeyResult, chalk: ChalkInstance): string {
  const lines = [chalk.green(`Exported ${result.keys.length} key(s) of ${result.database} to ${result.path}:`)];
  for (const key of result.keys) lines.push(`  ${describeKey(key)}`);
  return `${lines.join('\n')}\n`;
}

function keyList(title: string, keys: readonly ImportedKeyInfo[]): string[] {
  return keys.length === 0 ? [] : [`  ${title}:`, ...keys.map((key) => `    ${describeKey(key)}`)];
}

/** Formats the outcome of import-key for people. */
export function formatImport(result: ImportKeyResult, chalk: ChalkInstance): string {
  const lines =
    result.outcome === 'unchanged'
      ? [chalk.green(`Database ${result.database} already has every key of ${result.path}; nothing changed.`)]
      : [chalk.green(`Imported the keys of ${result.path} into ${result.database}.`)];
  lines.push(...keyList('added', result.added), ...keyList('now ending as in the file', result.ended), ...keyList('replaced (deleted)', result.replaced));
  if (result.outcome === 'imported') lines.push(...keyList('already present', result.unchanged));
  return `${lines.join('\n')}\n`;
}
