import { constants } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import type pg from 'pg';
import { ToolError } from '../core/errors.js';
import { queryRows } from '../core/execute.js';
import { keyFileFormat, keyFileVersion, type KeyFile } from '../core/key-file.js';
import { isKeyPolicy } from '../core/keys.js';
import { ident } from '../core/sql.js';
import { readKeyContext } from './key-common.js';

/** Settings of `export-key`, validated by the caller. */
export interface ExportKeySettings {
  readonly schema: string;
  readonly profile: string;
  /** The file to write, relative to `cwd`. */
  readonly out: string;
  readonly cwd: string;
  /** Replace an existing file. */
  readonly force: boolean;
}

/** Result of `export-key`, without the keys, which only the file contains. */
export interface ExportKeyResult {
  readonly outcome: 'exported';
  readonly database: string;
  readonly schema: string;
  /** Absolute path of the file. */
  readonly path: string;
  readonly keys: { fingerprint: string; policy: string; validFrom: string | null; validUntil: string | null }[];
}

/** Message the CLI prints to stderr after every export. */
export function secretFileWarning(path: string): string {
  return `warning: ${path} contains the pseudonym keys in plain form. With it and the users table anyone can turn the stored pseudonyms back into user ids. Keep it like a password, copy it only to the database that needs it, and delete it after "import-key".`;
}

/**
 * Creates the file with mode 0600 and writes the text. The exclusive flag
 * makes opening fail when the path exists, including a symbolic link, so the
 * keys never land in a file that others can read or that points elsewhere.
 */
async function writeSecretFile(path: string, text: string, force: boolean): Promise<void> {
  let handle;
  try {
    if (force) await unlink(path).catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? undefined : Promise.reject(error)));
    handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      throw new ToolError('INVALID_OPTION', `File ${path} exists; export-key does not overwrite it.`, { fix: 'Choose another --out path, or pass --force to replace the file.' });
    }
    throw new ToolError('INVALID_OPTION', `Cannot create ${path}: ${(error as Error).message}.`, { fix: 'Choose a path in a folder you can write to.', cause: error });
  }
  try {
    // The umask may have cleared bits of 0600, never added any; chmod makes the mode exact.
    await handle.chmod(0o600);
    await handle.writeFile(text, 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes every key of the schema, with its period and fingerprint, to a new
 * file (format in docs/how-it-works.md). The key bytes travel only in the
 * query result and the file: never in a statement, a message or a log line.
 */
export async function exportKeys(client: pg.ClientBase, settings: ExportKeySettings): Promise<ExportKeyResult> {
  const context = await readKeyContext(client, settings);
  if (context.installation.keys.length === 0) {
    throw new ToolError('INVALID_OPTION', `Schema ${settings.schema} in database ${context.database} has no key to export.`, {
      fix: 'Check --database-url and --schema; keys exist once "insights-privacy apply --mode anonymize" has run (period keys once a row of the period was written).',
    });
  }
  const path = resolve(settings.cwd, settings.out);

  const rows = await queryRows<{ key: Buffer; fingerprint: string; policy: string; valid_from: Date | null; valid_until: Date | null; created_at: Date }>(
    client,
    'export-keys.sql',
    [],
    { schema: ident(settings.schema) },
  );
  const file: KeyFile = {
    format: keyFileFormat,
    version: keyFileVersion,
    exportedAt: context.now.toISOString(),
    source: { database: context.database, schema: settings.schema, policy: context.installation.state?.mode === 'anonymize' ? context.policy : null },
    keys: rows.map((row) => ({
      fingerprint: row.fingerprint,
      policy: isKeyPolicy(row.policy) ? row.policy : 'none',
      validFrom: row.valid_from?.toISOString() ?? null,
      validUntil: row.valid_until?.toISOString() ?? null,
      createdAt: row.created_at.toISOString(),
      key: row.key.toString('base64'),
    })),
  };
  await writeSecretFile(path, `${JSON.stringify(file, null, 2)}\n`, settings.force);

  return {
    outcome: 'exported',
    database: context.database,
    schema: settings.schema,
    path,
    keys: file.keys.map(({ fingerprint, policy, validFrom, validUntil }) => ({ fingerprint, policy, validFrom, validUntil })),
  };
}
