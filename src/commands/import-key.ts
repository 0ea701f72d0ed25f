import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { ToolError } from '../core/errors.js';
import { execute, queryRows } from '../core/execute.js';
import type { ForgottenKey, KeyInfo } from '../core/inspect.js';
import { parseKeyFile, type ImportedKey } from '../core/key-file.js';
import { describePeriod } from '../core/keys.js';
import { ident, type Statement } from '../core/sql.js';
import { templateStatements } from '../core/templates.js';
import { runLocked } from '../core/transaction.js';
import { readKeyContext, rewriteKeyTable, serverTime, type KeyCommandSettings } from './key-common.js';

/** Settings of `import-key`, validated by the caller. */
export interface ImportKeySettings extends Omit<KeyCommandSettings, 'confirm'> {
  /** The file to read, relative to `cwd`. */
  readonly in: string;
  readonly cwd: string;
  /** Replace keys of the database that differ from the file's keys for the same period. */
  readonly force: boolean;
}

/** A key as the import result names it. */
export interface ImportedKeyInfo {
  readonly fingerprint: string;
  readonly policy: string;
  readonly validFrom: string | null;
  readonly validUntil: string | null;
}

/** Result of `import-key`. */
export interface ImportKeyResult {
  readonly outcome: 'imported' | 'unchanged';
  readonly database: string;
  readonly schema: string;
  readonly path: string;
  /** Keys of the file that the database did not have. */
  readonly added: ImportedKeyInfo[];
  /** Keys the database had without an end, which now end where the file records. */
  readonly ended: ImportedKeyInfo[];
  /** Keys of the database that --force deleted because the file has another key for their period. */
  readonly replaced: ImportedKeyInfo[];
  /** Keys the database already had, unchanged. */
  readonly unchanged: ImportedKeyInfo[];
  readonly warnings: string[];
}

/** Relation of one key of the file to the database's keys. */
type Match =
  | { kind: 'same'; key: ImportedKey; stored: KeyInfo }
  | { kind: 'new'; key: ImportedKey }
  | { kind: 'conflict'; key: ImportedKey; stored: KeyInfo | null; forgotten: ForgottenKey | null; reason: string };

function info(key: { fingerprint: string; policy: string; validFrom: Date | null; validUntil: Date | null }): ImportedKeyInfo {
  return { fingerprint: key.fingerprint, policy: key.policy, validFrom: key.validFrom?.toISOString() ?? null, validUntil: key.validUntil?.toISOString() ?? null };
}

function sameStart(a: Date | null, b: Date | null): boolean {
  return (a?.getTime() ?? null) === (b?.getTime() ?? null);
}

/**
 * Matches each key of the file with the database: by fingerprint first (the
 * same key), then by period start (a different key for the same period, or a
 * forgotten period), which is a conflict.
 */
function matchKeys(keys: readonly ImportedKey[], stored: readonly KeyInfo[], forgotten: readonly ForgottenKey[]): Match[] {
  return keys.map((key): Match => {
    const period = describePeriod(key.validFrom, key.validUntil);
    const same = stored.find((candidate) => candidate.fingerprint === key.fingerprint);
    if (same) {
      if (same.policy === key.policy && sameStart(same.validFrom, key.validFrom)) return { kind: 'same', key, stored: same };
      return { kind: 'conflict', key, stored: same, forgotten: null, reason: `key ${key.fingerprint} is stored for ${same.policy} ${describePeriod(same.validFrom, same.validUntil)}, the file has it for ${key.policy} ${period}` };
    }
    const slot = stored.find((candidate) => candidate.policy === key.policy && sameStart(candidate.validFrom, key.validFrom));
    if (slot) return { kind: 'conflict', key, stored: slot, forgotten: null, reason: `${key.policy} ${period} has key ${slot.fingerprint} here and key ${key.fingerprint} in the file` };
    const gone = forgotten.find((candidate) => candidate.policy === key.policy && sameStart(candidate.validFrom, key.validFrom));
    if (gone) return { kind: 'conflict', key, stored: null, forgotten: gone, reason: `${key.policy} ${period} was forgotten here on ${gone.forgottenAt.toISOString()}, the file has key ${key.fingerprint} for it` };
    return { kind: 'new', key };
  });
}

/** Sends the key bytes of the keys to add into the temporary table through COPY, as hex. */
async function copyKeysIn(client: pg.ClientBase, keys: readonly ImportedKey[]): Promise<void> {
  for (const statement of templateStatements('import-keys-table.sql', {})) await execute(client, statement);
  const [copy] = templateStatements('import-keys-copy.sql', {});
  const lines = keys.map((key, position) => `${position}\t${key.secret.toString('hex')}\n`);
  const stream = client.query(copyFrom(copy.sql));
  await pipeline(Readable.from(lines), stream);
}

async function warningsFor(path: string, sourcePolicy: string | null, targetPolicy: string | null): Promise<string[]> {
  const warnings: string[] = [];
  const { mode } = await stat(path);
  if ((mode & 0o077) !== 0) warnings.push(`${path} can be read by other users (mode ${(mode & 0o777).toString(8)}); delete it or chmod 600 it.`);
  if (sourcePolicy && targetPolicy && sourcePolicy !== targetPolicy) {
    warnings.push(`The file comes from a database with key rotation ${sourcePolicy}, this one records ${targetPolicy}: new rows get the same pseudonyms in both only with the same --rotate.`);
  }
  return warnings;
}

/**
 * Adds the keys of an export file to the schema, so that this database
 * computes the same pseudonyms as the one exported from. Creates the schema
 * and key table when missing, so that it can run before the first apply.
 * A key of the file that differs from the database's key for the same period,
 * or whose period was forgotten here, fails the import unless `force` is
 * set, which deletes the database's key. Importing the same keys again
 * changes nothing. The key bytes reach the server through COPY and never
 * appear in a statement or its parameters.
 */
export async function importKeys(client: pg.ClientBase, settings: ImportKeySettings): Promise<ImportKeyResult> {
  const path = resolve(settings.cwd, settings.in);
  const text = await readFile(path, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new ToolError('INVALID_OPTION', `Cannot read key file ${path}: ${error.code === 'ENOENT' ? 'it does not exist' : error.message}.`, {
      fix: 'Give the file that "insights-privacy export-key --out" wrote.',
    });
  });
  const { file, keys } = parseKeyFile(text, path);
  const context = await readKeyContext(client, settings);
  const schema = ident(settings.schema);

  const outcome = await runLocked(client, settings.lock, async () => {
    for (const statement of [...templateStatements('schema.sql', { schema }), ...templateStatements('add-key.sql', { schema })]) await execute(client, statement);
    const locked = await readKeyContext(client, settings);
    const matches = matchKeys(keys, locked.installation.keys, locked.installation.forgottenKeys);

    const conflicts = matches.filter((match) => match.kind === 'conflict');
    if (conflicts.length > 0 && !settings.force) {
      throw new ToolError('KEY_CONFLICT', `Import rejected, nothing changed: ${conflicts.map((match) => match.reason).join('; ')}.`, {
        fix: 'Check that the file belongs to this database. To make this database use the file\'s keys anyway, pass --force: it deletes the keys named above, and pseudonyms stored under them can no longer be linked.',
      });
    }

    const replaced = conflicts.flatMap((match) => (match.stored ? [match.stored] : []));
    const statements: Statement[] = [];
    if (replaced.length > 0) statements.push(...templateStatements('import-delete-keys.sql', { schema }, [replaced.map((key) => key.id)]));
    const revived = conflicts.filter((match) => match.forgotten !== null);
    if (revived.length > 0) {
      statements.push(...templateStatements('import-delete-forgotten.sql', { schema }, [JSON.stringify(revived.map((match) => ({ policy: match.key.policy, valid_from: match.key.validFrom })))]));
    }
    for (const statement of statements) await execute(client, statement);

    const toAdd = matches.filter((match) => match.kind !== 'same').map((match) => match.key);
    if (toAdd.length > 0) await addKeys(client, settings.schema, toAdd);

    const ending = matches.flatMap((match) => (match.kind === 'same' && match.stored.validUntil === null && match.key.validUntil !== null ? [match.key] : []));
    if (ending.length > 0) {
      const [end] = templateStatements('import-end-keys.sql', { schema }, [JSON.stringify(ending.map((key) => ({ fingerprint: key.fingerprint, valid_until: key.validUntil })))]);
      await execute(client, end);
    }

    const unchanged = matches.flatMap((match) => (match.kind === 'same' && !ending.includes(match.key) ? [match.key] : []));
    return { statements: [], result: { toAdd, ending, replaced, unchanged } };
  });

  const warnings = await warningsFor(path, file.source.policy, context.installation.state?.mode === 'anonymize' ? context.policy : null);
  if (outcome.replaced.length > 0 && !(await rewriteKeyTable(client, settings.schema, settings.lock, await serverTime(client)))) {
    warnings.push(`The key table was not rewritten, so the replaced keys may remain in its file until "VACUUM FULL ${settings.schema}.keys" runs as the table's owner.`);
  }
  const changed = outcome.toAdd.length + outcome.ending.length + outcome.replaced.length > 0;
  return {
    outcome: changed ? 'imported' : 'unchanged',
    database: context.database,
    schema: settings.schema,
    path,
    added: outcome.toAdd.map(info),
    ended: outcome.ending.map(info),
    replaced: outcome.replaced.map(info),
    unchanged: outcome.unchanged.map(info),
    warnings,
  };
}

/** Inserts keys through the COPY table and add_key(), and checks the fingerprints the database computed. */
async function addKeys(client: pg.ClientBase, schemaName: string, keys: readonly ImportedKey[]): Promise<void> {
  await copyKeysIn(client, keys);
  const metadata = keys.map((key, position) => ({ position, policy: key.policy, valid_from: key.validFrom, valid_until: key.validUntil }));
  const [insert] = templateStatements('import-keys.sql', { schema: ident(schemaName) }, [JSON.stringify(metadata)]);
  const { rows } = await execute<{ position: number; id: number | null }>(client, insert);
  const ids = rows.flatMap((row) => (row.id === null ? [] : [row.id]));
  const stored = await queryRows<{ id: number; fingerprint: string }>(client, 'queries/key-fingerprints.sql', [ids], { schema: ident(schemaName) });
  const fingerprints = new Map(stored.map((row) => [row.id, row.fingerprint]));

  for (const row of rows) {
    const key = keys[row.position];
    if (row.id === null) {
      throw new ToolError('KEY_CONFLICT', `Import rejected, nothing changed: ${key.policy} ${describePeriod(key.validFrom, key.validUntil)} got a key from a writer while the import ran.`, {
        fix: 'Run import-key again; it then reports the conflict with that key.',
      });
    }
    if (fingerprints.get(row.id) !== key.fingerprint) {
      throw new ToolError('STATE_INVALID', `The database computed another fingerprint for key ${key.fingerprint}; nothing changed.`, { fix: 'Report this as a bug.' });
    }
  }
}
