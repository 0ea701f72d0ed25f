/**
 * Exit codes of the command-line tool. They are part of the interface that
 * deployment pipelines rely on, so a value never changes meaning.
 */
export const ExitCode = {
  /** The command did what was asked; for `status --check`, enforcement matches the recorded mode. */
  ok: 0,
  /** `status --check` found enforcement missing or drifted. */
  checkFailed: 1,
  /**
   * Invalid input, connection failure, missing privilege or a database error.
   * The failed transaction changed nothing, but the batches a backfill
   * committed before the error stay, and so does the mode that apply
   * committed before its backfill.
   */
  error: 2,
  /** The user declined the confirmation, or no confirmation was possible without `--yes`. */
  aborted: 3,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** Stable, machine-readable error codes; each maps to one kind of fix. */
export type ErrorCode =
  | 'INVALID_OPTION'
  | 'INVALID_CONFIG'
  | 'CONNECTION_FAILED'
  | 'NOT_A_CODER_DATABASE'
  | 'UNSUPPORTED_SERVER'
  | 'MISSING_PRIVILEGE'
  | 'MISSING_EXTENSION'
  | 'LOCK_TIMEOUT'
  | 'SQL_FAILED'
  | 'STATE_INVALID'
  | 'ABORTED'
  | 'DEMO_FAILED'
  | 'KEY_FILE_INVALID'
  | 'KEY_CONFLICT';

/**
 * An error the user can act on: what failed, on which value, and the fix.
 * The entry point prints `message` and `fix` and exits with `exitCode`;
 * no stack trace is shown unless `--verbose` is set.
 */
export class ToolError extends Error {
  readonly code: ErrorCode;
  readonly fix: string | undefined;
  readonly exitCode: ExitCodeValue;

  constructor(code: ErrorCode, message: string, options: { fix?: string; cause?: unknown; exitCode?: ExitCodeValue } = {}) {
    super(message, { cause: options.cause });
    this.name = 'ToolError';
    this.code = code;
    this.fix = options.fix;
    this.exitCode = options.exitCode ?? (code === 'ABORTED' ? ExitCode.aborted : ExitCode.error);
  }
}

/** Fields of a PostgreSQL error as node-postgres reports them. */
export interface DatabaseErrorFields {
  code?: string;
  detail?: string;
  hint?: string;
  message: string;
}

/** Narrows an unknown error to a PostgreSQL error with a SQLSTATE. */
export function isDatabaseError(error: unknown): error is Error & DatabaseErrorFields {
  const code = error instanceof Error ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
}
