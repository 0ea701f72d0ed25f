import type pg from 'pg';
import type { BackfillAction } from '../core/backfill.js';
import { readBackfillProgress, type RecordedBackfill } from '../core/backfill-progress.js';
import { describeHmac, triggerFunction, triggerFunctionName, protectedTables } from '../core/enforcement.js';
import { expectedPseudonymSetup, findDrift, type Finding } from '../core/findings.js';
import { countRows, currentDatabase, inspectInstallation, roleExposure, type Installation, type RoleExposure, type RowCounts } from '../core/inspect.js';
import { keyState, recordedPolicy, type KeyPolicy, type KeyState } from '../core/keys.js';
import { validateSchemaName } from '../core/preflight.js';
import { getProfile } from '../profiles/index.js';
import type { EnforcedMode, ForeignKeyState, Scope, UsageTable } from '../profiles/types.js';

/** Settings of `status`, validated by the caller. */
export interface StatusSettings {
  readonly schema: string;
  readonly profile: string;
  /** Count identifiable rows per table; each count scans the table. Default true. */
  readonly counts: boolean;
}

/** Per-table part of the status report. */
export interface TableStatus {
  readonly table: string;
  /** Whether the recorded mode protects this table. */
  readonly protected: boolean;
  readonly trigger: 'present' | 'missing';
  /** True when the trigger is ENABLE ALWAYS; null without a trigger. */
  readonly enabledAlways: boolean | null;
  /** True when the trigger function equals what this version generates; null without a function. */
  readonly functionMatches: boolean | null;
  /** Row counts; null when counting was switched off. */
  readonly rows: RowCounts | null;
  /** Roles that can switch enforcement off on this table. */
  readonly canBypass: RoleExposure[];
  /** Roles that can insert and read the table, and so compute the pseudonym of an id they choose. */
  readonly canProbe: RoleExposure[];
  /** The recorded backfill of the rows stored before enforcement; null when none was started. */
  readonly backfill: BackfillStatus | null;
}

/** A table's backfill as recorded in the tool's schema. */
export interface BackfillStatus {
  readonly action: BackfillAction;
  /** `in progress` until the walk reaches the end of the table; an interrupted walk stays in progress. */
  readonly state: 'in progress' | 'finished';
  /** Whether a backfill run holds its lock in this database now; false for an interrupted walk. */
  readonly running: boolean;
  /** For a child table, the table whose walk moves its rows. */
  readonly movesWith: string | null;
  readonly rowsWalked: number;
  /** Rows pseudonymized or deleted, depending on `action`. */
  readonly rowsChanged: number;
  /** Rows merged into a pseudonymized row with the same key (pseudonymize only). */
  readonly rowsMerged: number;
  readonly startedAt: string;
  readonly updatedAt: string;
  readonly finishedAt: string | null;
}

/** State of a foreign key that anonymize replaces. */
export interface ForeignKeyStatus {
  readonly table: string;
  readonly name: string;
  readonly state: 'enforced' | 'enforced, NOT VALID' | 'replaced by placeholder' | 'absent';
}

/** One key as status shows it: its fingerprint and period, never the key. */
export interface KeyStatus {
  readonly fingerprint: string;
  readonly createdAt: string;
  readonly ageDays: number;
  /** The rotation policy that made the key. */
  readonly policy: string;
  /** Start of the rows' timestamps the key covers; null means open. */
  readonly periodStart: string | null;
  /** End (exclusive); null means open. */
  readonly periodEnd: string | null;
  readonly state: KeyState;
}

/** A key period whose key forget-keys deleted. */
export interface ForgottenKeyStatus {
  readonly fingerprint: string;
  readonly policy: string;
  readonly periodStart: string | null;
  readonly periodEnd: string;
  readonly forgottenAt: string;
  readonly forgottenBy: string;
}

/** The report of `status`; its JSON form is versioned by `formatVersion`. */
export interface StatusReport {
  readonly formatVersion: 1;
  readonly database: string;
  readonly application: string;
  readonly schema: string;
  readonly mode: 'anonymize' | 'disable' | 'off';
  readonly scope: Scope | null;
  readonly appliedAt: string | null;
  readonly appliedBy: string | null;
  readonly appliedWithVersion: string | null;
  /**
   * The HMAC implementation in use: "core sha256()" or "pgcrypto (schema …)";
   * null when the recorded mode is not anonymize, or its implementation is missing.
   */
  readonly hmac: string | null;
  /** The recorded key rotation policy; null when anonymize is not recorded. */
  readonly keyPolicy: KeyPolicy | null;
  readonly keys: KeyStatus[];
  readonly forgottenKeys: ForgottenKeyStatus[];
  readonly tables: TableStatus[];
  readonly foreignKeys: ForeignKeyStatus[];
  readonly findings: Finding[];
  readonly notes: string[];
  /** True when enforcement matches the recorded mode (no finding of severity error). */
  readonly ok: boolean;
}

function backfillStatus(recorded: RecordedBackfill | undefined): BackfillStatus | null {
  if (!recorded) return null;
  return {
    action: recorded.action,
    state: recorded.finishedAt ? 'finished' : 'in progress',
    running: recorded.running,
    movesWith: recorded.parentTable,
    rowsWalked: recorded.rowsWalked,
    rowsChanged: recorded.rowsChanged,
    rowsMerged: recorded.rowsMerged,
    startedAt: recorded.startedAt.toISOString(),
    updatedAt: recorded.updatedAt.toISOString(),
    finishedAt: recorded.finishedAt ? recorded.finishedAt.toISOString() : null,
  };
}

function foreignKeyStatus(state: ForeignKeyState): ForeignKeyStatus {
  let status: ForeignKeyStatus['state'] = 'absent';
  if (state.foreignKey) status = state.foreignKey.validated ? 'enforced' : 'enforced, NOT VALID';
  else if (state.placeholder) status = 'replaced by placeholder';
  return { table: state.table.name, name: state.name, state: status };
}

const dayMs = 24 * 60 * 60 * 1000;

/** Tells whether an installed trigger function has the body this version renders; false when pgcrypto is missing, so none can be rendered. */
function functionMatches(body: string, schema: string, table: UsageTable, mode: EnforcedMode, installation: Installation): boolean {
  const setup = mode === 'anonymize' ? expectedPseudonymSetup(installation, installation.state) : undefined;
  if (setup === null) return false;
  return body === triggerFunction(schema, table, mode, setup).body;
}

function hmacInUse(installation: Installation): string | null {
  if (!installation.hmac || !installation.functions.has('pseudonym')) return null;
  if (installation.hmac === 'pgcrypto' && (!installation.crypto || installation.crypto.create)) return null;
  return describeHmac(installation.hmac, installation.crypto);
}

/** Reads what is enforced in the database and how it differs from the recorded mode. */
export async function readStatus(client: pg.ClientBase, settings: StatusSettings): Promise<StatusReport> {
  validateSchemaName(settings.schema);
  const profile = getProfile(settings.profile);
  const detection = await profile.detect(client);
  const installation = await inspectInstallation(client, detection, settings.schema);
  const database = await currentDatabase(client);

  const state = installation.state;
  const mode = state?.mode ?? 'off';
  const scope: Scope = state?.scope ?? 'source';
  const protectedSet = new Set(protectedTables(detection, mode, scope));

  const backfills = installation.schemaPresent ? await readBackfillProgress(client, settings.schema) : [];
  const tables: TableStatus[] = [];
  for (const table of detection.tables) {
    const trigger = installation.triggers.get(table) ?? null;
    const installed = installation.functions.get(triggerFunctionName(table));
    const expectedMode = mode === 'off' ? null : mode;
    const exposure = await roleExposure(client, table);
    tables.push({
      table: table.name,
      protected: protectedSet.has(table),
      trigger: trigger ? 'present' : 'missing',
      enabledAlways: trigger ? trigger.enabled === 'A' : null,
      functionMatches: installed && expectedMode ? functionMatches(installed.body, settings.schema, table, expectedMode, installation) : null,
      rows: settings.counts ? await countRows(client, detection, table) : null,
      canBypass: exposure.filter((role) => role.canBypass),
      canProbe: exposure.filter((role) => !role.canBypass),
      backfill: backfillStatus(backfills.find((recorded) => recorded.tableSchema === table.schema && recorded.table === table.name)),
    });
  }

  const findings = findDrift(detection, installation, settings.schema);
  const now = Date.now();
  const policy = recordedPolicy(state);
  return {
    formatVersion: 1,
    database,
    application: detection.description,
    schema: settings.schema,
    mode,
    scope: mode === 'anonymize' ? scope : null,
    appliedAt: state ? state.appliedAt.toISOString() : null,
    appliedBy: state?.appliedBy ?? null,
    appliedWithVersion: state?.toolVersion ?? null,
    hmac: hmacInUse(installation),
    keyPolicy: mode === 'anonymize' ? policy : null,
    keys: installation.keys.map((key) => ({
      fingerprint: key.fingerprint,
      createdAt: key.createdAt.toISOString(),
      ageDays: Math.floor((now - key.createdAt.getTime()) / dayMs),
      policy: key.policy,
      periodStart: key.validFrom?.toISOString() ?? null,
      periodEnd: key.validUntil?.toISOString() ?? null,
      state: keyState(key, installation.keys, policy, now),
    })),
    forgottenKeys: installation.forgottenKeys.map((key) => ({
      fingerprint: key.fingerprint,
      policy: key.policy,
      periodStart: key.validFrom?.toISOString() ?? null,
      periodEnd: key.validUntil.toISOString(),
      forgottenAt: key.forgottenAt.toISOString(),
      forgottenBy: key.forgottenBy,
    })),
    tables,
    foreignKeys: detection.userForeignKeys.map(foreignKeyStatus),
    findings,
    notes: profile.notes(detection, mode, scope),
    ok: findings.every((finding) => finding.severity !== 'error'),
  };
}
