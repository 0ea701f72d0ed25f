import { z } from 'zod';
import { ToolError } from './errors.js';
import { isKeyPolicy, keyFingerprint, keyLength, type KeyPolicy } from './keys.js';

/** Value of `format` in every key file. */
export const keyFileFormat = 'insights-privacy keys';

/** Version of the key file format that this version writes and reads. */
export const keyFileVersion = 1;

/** One key as the file stores it. */
export interface KeyFileEntry {
  readonly fingerprint: string;
  readonly policy: KeyPolicy;
  /** ISO 8601 start of the key's period, or null for an open start. */
  readonly validFrom: string | null;
  /** ISO 8601 end (exclusive), or null for an open end. */
  readonly validUntil: string | null;
  readonly createdAt: string;
  /** The 32 key bytes in base64. */
  readonly key: string;
}

/** The whole key file, format version 1. */
export interface KeyFile {
  readonly format: typeof keyFileFormat;
  readonly version: typeof keyFileVersion;
  readonly exportedAt: string;
  readonly source: { readonly database: string; readonly schema: string; readonly policy: KeyPolicy | null };
  readonly keys: KeyFileEntry[];
}

/** A key read from a file and checked against its fingerprint. */
export interface ImportedKey {
  readonly fingerprint: string;
  readonly policy: KeyPolicy;
  readonly validFrom: Date | null;
  readonly validUntil: Date | null;
  /** The key bytes; never print or log them. */
  readonly secret: Buffer;
}

const timestamp = z.string().refine((value) => !Number.isNaN(Date.parse(value)), 'not an ISO 8601 timestamp');

const entrySchema = z
  .object({
    fingerprint: z.string().regex(/^[0-9a-f]{16}$/, 'not 16 lower-case hex digits'),
    policy: z.string().refine(isKeyPolicy, 'not one of none, daily, weekly, monthly, yearly'),
    validFrom: timestamp.nullable(),
    validUntil: timestamp.nullable(),
    createdAt: timestamp,
    key: z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, 'not base64'),
  })
  .strict();

const fileSchema = z
  .object({
    format: z.literal(keyFileFormat),
    version: z.number().int(),
    exportedAt: timestamp,
    source: z.object({ database: z.string(), schema: z.string(), policy: z.string().nullable() }).strict(),
    keys: z.array(z.unknown()),
  })
  .strict();

function invalid(path: string, problem: string): ToolError {
  return new ToolError('KEY_FILE_INVALID', `Key file ${path} is invalid: ${problem}.`, {
    fix: 'Use a file written by "insights-privacy export-key", unchanged; export it again if it was edited or damaged.',
  });
}

/**
 * Parses and checks a key file: its format and version, every entry's
 * fields, each key's length, and that each key matches its fingerprint.
 * Messages name entries by position and fingerprint, never by key.
 */
export function parseKeyFile(text: string, path: string): { file: Omit<KeyFile, 'keys'>; keys: ImportedKey[] } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw invalid(path, 'it is not JSON');
  }
  const parsed = fileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw invalid(path, `${issue.path.join('.') || 'the file'}: ${issue.message}`);
  }
  if (parsed.data.version !== keyFileVersion) {
    throw invalid(path, `format version ${parsed.data.version} is not supported; this version of insights-privacy reads version ${keyFileVersion}`);
  }

  const keys = parsed.data.keys.map((raw, index) => {
    const entry = entrySchema.safeParse(raw);
    if (!entry.success) {
      const issue = entry.error.issues[0];
      throw invalid(path, `keys[${index}].${issue.path.join('.')}: ${issue.message}`);
    }
    const secret = Buffer.from(entry.data.key, 'base64');
    if (secret.length !== keyLength) throw invalid(path, `keys[${index}] (fingerprint ${entry.data.fingerprint}) is ${secret.length} bytes long, not ${keyLength}`);
    if (keyFingerprint(secret) !== entry.data.fingerprint) {
      throw invalid(path, `keys[${index}] does not match its fingerprint ${entry.data.fingerprint}`);
    }
    return {
      fingerprint: entry.data.fingerprint,
      policy: entry.data.policy as KeyPolicy,
      validFrom: entry.data.validFrom === null ? null : new Date(entry.data.validFrom),
      validUntil: entry.data.validUntil === null ? null : new Date(entry.data.validUntil),
      secret,
    };
  });

  const slots = new Set<string>();
  for (const key of keys) {
    const slot = `${key.policy} ${key.validFrom?.toISOString() ?? 'open'}`;
    if (slots.has(slot)) throw invalid(path, `two keys share the period start of ${key.fingerprint} (${slot})`);
    slots.add(slot);
  }

  const { keys: _entries, ...header } = parsed.data;
  const policy = isKeyPolicy(header.source.policy) ? header.source.policy : null;
  return { file: { ...header, format: keyFileFormat, version: keyFileVersion, source: { ...header.source, policy } }, keys };
}
