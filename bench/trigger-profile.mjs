// Breaks the cost of the anonymize trigger down into its parts. It applies
// anonymize (pgcrypto, key rotation none) to the fixture's 2026 tables on an
// embedded PostgreSQL 18. Then it replaces the body of the trigger function
// of workspace_agent_stats with one variant after another. Under each it
// times Coder's agent stats batch insert (INSERT … SELECT FROM unnest of
// 1024-row arrays) and single-row INSERTs, each in its own transaction. The
// variants take turns in every round, in an order that shifts by one each
// round. Round 0 is a warm-up.
//
// Two figures per variant: the wall time of the statements and the CPU time
// of the server process that ran them, read from /proc/PID/schedstat, which
// waiting for a CPU on a loaded machine does not inflate. Both are reported
// per row or per INSERT, with the difference to variant "off" (no trigger)
// in the same round. The variants that call pseudonym(), is_pseudonym() or
// key_id() measure the functions of the installed version, so run the
// script from a checkout of the version to measure.
//
// Some variants use a fixed dummy key written into their body: they measure
// the cost of the HMAC without a key lookup, and are benchmark code only.
//
//   npm run build && node bench/trigger-profile.mjs [--rounds 9] [--batches 16] [--single-rows 300]
//     [--variants 'name;name;...']
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { applyEnforcement } from '../dist/commands/apply.js';
import { startEmbeddedServer } from '../dist/embedded/server.js';
import { createCoderSchema, insertAgentStats, maxBatchRows, seedPopulation } from '../dist/fixture/index.js';

const { values: options } = parseArgs({
  options: {
    rounds: { type: 'string', default: '9' },
    batches: { type: 'string', default: '16' },
    'single-rows': { type: 'string', default: '300' },
    variants: { type: 'string' },
  },
});
const rounds = Number(options.rounds);
const batches = Number(options.batches);
const singleRows = Number(options['single-rows']);
for (const [name, value] of [['rounds', rounds], ['batches', batches], ['single-rows', singleRows]]) {
  if (!Number.isInteger(value) || value < 1) {
    console.error(`Invalid --${name} "${options[name]}": expected a positive integer`);
    process.exit(2);
  }
}

const schema = 'insights_privacy';
const dummyKey = `'\\x${'5a'.repeat(32)}'::pg_catalog.bytea`;
const label = `pg_catalog.decode('${Buffer.from('insights-privacy:user_id:v1\n', 'utf8').toString('hex')}', 'hex')`;
const notPseudonym = 'pg_catalog.get_byte(pg_catalog.uuid_send(NEW.user_id), 6) OPERATOR(pg_catalog.>>) 4 OPERATOR(pg_catalog.<>) 8';

// The key of policy none for the row, as key_id() selects it.
const noneKeyWhere = `
    WHERE k.policy OPERATOR(pg_catalog.=) 'none'
      AND (k.valid_from IS NULL OR k.valid_from OPERATOR(pg_catalog.<=) NEW.created_at)
      AND (k.valid_until IS NULL OR NEW.created_at OPERATOR(pg_catalog.<) k.valid_until)
    ORDER BY k.valid_from DESC NULLS LAST, k.id DESC
    LIMIT 1`;

/** Turns a 32-byte digest expression into the pseudonym UUID: version 8, variant 10. */
function uuidFrom(digest) {
  return `pg_catalog.encode(pg_catalog.substr(pg_catalog.set_byte(pg_catalog.set_byte(${digest}, 6, pg_catalog.get_byte(${digest}, 6) OPERATOR(pg_catalog.&) 15 OPERATOR(pg_catalog.|) 128), 8, pg_catalog.get_byte(${digest}, 8) OPERATOR(pg_catalog.&) 63 OPERATOR(pg_catalog.|) 128), 1, 16), 'hex')::pg_catalog.uuid`;
}

const pgcryptoDigest = (key) => `${schema}.hmac(${label} OPERATOR(pg_catalog.||) pg_catalog.uuid_send(NEW.user_id), ${key}, 'sha256')`;
const coreDigest = `pg_catalog.sha256(k.outer_key_pad OPERATOR(pg_catalog.||) pg_catalog.sha256(k.inner_key_pad OPERATOR(pg_catalog.||) ${label} OPERATOR(pg_catalog.||) pg_catalog.uuid_send(NEW.user_id)))`;

const searchPath = 'SET search_path = pg_catalog, pg_temp';

// Other key selections of policy none, for comparison with noneKeyWhere:
// the open key without an ORDER BY, the key by primary key, and an exact
// selection that finds the latest start with an anti-join instead of a sort.
const openKeyWhere = `
    WHERE k.policy OPERATOR(pg_catalog.=) 'none' AND k.valid_until IS NULL
      AND (k.valid_from IS NULL OR k.valid_from OPERATOR(pg_catalog.<=) NEW.created_at)`;
const byIdWhere = 'WHERE k.id OPERATOR(pg_catalog.=) 1';
const contains = (alias) =>
  `${alias}.policy OPERATOR(pg_catalog.=) 'none' AND (${alias}.valid_from IS NULL OR ${alias}.valid_from OPERATOR(pg_catalog.<=) NEW.created_at) AND (${alias}.valid_until IS NULL OR NEW.created_at OPERATOR(pg_catalog.<) ${alias}.valid_until)`;
const antiJoinWhere = `
    WHERE ${contains('k')}
      AND NOT EXISTS (SELECT FROM ${schema}.keys AS later WHERE ${contains('later')}
        AND (later.valid_from OPERATOR(pg_catalog.>) k.valid_from
             OR (k.valid_from IS NULL AND later.valid_from IS NOT NULL)
             OR (later.valid_from IS NOT DISTINCT FROM k.valid_from AND later.id OPERATOR(pg_catalog.>) k.id)))`;
const periodWhere = `
    WHERE k.policy OPERATOR(pg_catalog.=) 'monthly'
      AND k.valid_from OPERATOR(pg_catalog.=) (pg_catalog.date_trunc('month', NEW.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')`;

const lookup = (where, extra = {}) => ({ set: false, declare: 'secret pg_catalog.bytea;', body: `SELECT k.key INTO secret FROM ${schema}.keys AS k ${where};\nRETURN NEW;`, ...extra });

/** A trigger that selects the key in one query and computes the HMAC and the UUID in PL/pgSQL expressions. */
const twoStep = (where, digestOf, extra = {}) => ({
  set: false,
  declare: 'secret pg_catalog.bytea; digest pg_catalog.bytea;',
  body: `IF ${notPseudonym} THEN
  SELECT k.key INTO secret FROM ${schema}.keys AS k ${where};
  digest := ${digestOf('secret')};
  NEW.user_id := ${uuidFrom('digest')};
END IF;
RETURN NEW;`,
  ...extra,
});

/** A trigger that computes the digest in the key query and the UUID in a PL/pgSQL expression, as the templates do. */
const oneQuery = (where, digestOf, extra = {}) => ({
  set: false,
  declare: 'digest pg_catalog.bytea;',
  body: `IF ${notPseudonym} THEN
  SELECT ${digestOf('k.key')} INTO digest FROM ${schema}.keys AS k ${where};
  NEW.user_id := ${uuidFrom('digest')};
END IF;
RETURN NEW;`,
  ...extra,
});

/** Trigger function variants: body statements, declarations, volatility and whether the function fixes its search_path. */
const variants = {
  off: null,
  'return-new, SET': { set: true, body: 'RETURN NEW;' },
  'return-new': { set: false, body: 'RETURN NEW;' },
  'pseudonym() call, SET': { set: true, body: `NEW.user_id := ${schema}.pseudonym(NEW.user_id, NEW.created_at);\nRETURN NEW;` },
  'is_pseudonym() call, SET': { set: true, body: `IF ${schema}.is_pseudonym(NEW.user_id) THEN RETURN NEW; END IF;\nRETURN NEW;` },
  'key_id() call, SET': { set: true, body: `PERFORM ${schema}.key_id(NEW.created_at);\nRETURN NEW;` },
  'byte test': { set: false, body: `IF ${notPseudonym} THEN NULL; END IF;\nRETURN NEW;` },
  'lookup none, sort': lookup(noneKeyWhere),
  'lookup none, sort, STABLE': lookup(noneKeyWhere, { volatility: 'STABLE' }),
  'lookup none, anti-join': lookup(antiJoinWhere),
  'lookup open key, no sort': lookup(openKeyWhere),
  'lookup by primary key': lookup(byIdWhere),
  'lookup monthly period': lookup(periodWhere),
  'hmac pgcrypto, dummy key': { set: false, declare: 'digest pg_catalog.bytea;', body: `digest := ${pgcryptoDigest(dummyKey)};\nRETURN NEW;` },
  'hmac core, dummy key': {
    set: false,
    declare: 'digest pg_catalog.bytea;',
    body: `digest := pg_catalog.sha256(${dummyKey} OPERATOR(pg_catalog.||) pg_catalog.sha256(${dummyKey} OPERATOR(pg_catalog.||) ${label} OPERATOR(pg_catalog.||) pg_catalog.uuid_send(NEW.user_id)));\nRETURN NEW;`,
  },
  'hmac + uuid, dummy key': {
    set: false,
    declare: 'digest pg_catalog.bytea;',
    body: `digest := ${pgcryptoDigest(dummyKey)};\nNEW.user_id := ${uuidFrom('digest')};\nRETURN NEW;`,
  },
  'one query, sort, pgcrypto': oneQuery(noneKeyWhere, pgcryptoDigest),
  'one query, sort, pgcrypto, SET': oneQuery(noneKeyWhere, pgcryptoDigest, { set: true }),
  'one query, sort, core': oneQuery(noneKeyWhere, () => coreDigest),
  'two steps, sort, pgcrypto': twoStep(noneKeyWhere, pgcryptoDigest),
  'one query, sort, NULL filter, pgcrypto': oneQuery(`${noneKeyWhere.replace('WHERE ', 'WHERE NEW.created_at IS NOT NULL AND ')}`, pgcryptoDigest),
  'two steps, sort, core': {
    set: false,
    declare: 'inner_pad pg_catalog.bytea; outer_pad pg_catalog.bytea; digest pg_catalog.bytea;',
    body: `IF ${notPseudonym} THEN
  SELECT k.inner_key_pad, k.outer_key_pad INTO inner_pad, outer_pad FROM ${schema}.keys AS k ${noneKeyWhere};
  digest := pg_catalog.sha256(outer_pad OPERATOR(pg_catalog.||) pg_catalog.sha256(inner_pad OPERATOR(pg_catalog.||) ${label} OPERATOR(pg_catalog.||) pg_catalog.uuid_send(NEW.user_id)));
  NEW.user_id := ${uuidFrom('digest')};
END IF;
RETURN NEW;`,
  },
  'one query, anti-join, pgcrypto': oneQuery(antiJoinWhere, pgcryptoDigest),
  'one query, open key, pgcrypto': oneQuery(openKeyWhere, pgcryptoDigest),
  'one query, monthly, pgcrypto': oneQuery(periodWhere, pgcryptoDigest),
};

const selected = options.variants ? ['off', ...options.variants.split(';').filter((name) => name !== 'off')] : Object.keys(variants);
for (const name of selected) {
  if (!(name in variants)) {
    console.error(`Invalid variant "${name}": expected some of ${Object.keys(variants).join('; ')}`);
    process.exit(2);
  }
}

function functionSql(variant) {
  return `CREATE OR REPLACE FUNCTION ${schema}.enforce_workspace_agent_stats()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER ${variant.volatility ?? 'VOLATILE'} ${variant.set ? searchPath : ''}
AS $body$
${variant.declare ? `DECLARE ${variant.declare}` : ''}
BEGIN
${variant.body}
END
$body$`;
}

/** Reads the CPU time in nanoseconds that a process has run, from /proc/PID/schedstat. */
async function cpuNanoseconds(pid) {
  const text = await readFile(`/proc/${pid}/schedstat`, 'utf8');
  return Number(text.split(' ')[0]);
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

const server = await startEmbeddedServer();
try {
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  await admin.query('CREATE DATABASE trigger_profile');
  await admin.end();
  const client = new pg.Client({ connectionString: server.databaseUrl('trigger_profile') });
  await client.connect();
  try {
    await client.query('SET synchronous_commit = off');
    await createCoderSchema(client, '2026');
    const population = await seedPopulation(client, { users: 200, templates: 5, workspacesPerUser: 1 });
    await applyEnforcement(client, { mode: 'anonymize', scope: 'source', hmac: 'pgcrypto', schema, profile: 'coder', dryRun: false, lock: { lockTimeoutMs: 5000, retries: 0 } });
    // Keys of the monthly variants, for this month and the one before.
    await client.query(`
      INSERT INTO ${schema}.keys (key, fingerprint, policy, valid_from, valid_until)
      SELECT ${schema}.random_key(), 'benchmark', 'monthly', (m AT TIME ZONE 'UTC'), ((m + interval '1 month') AT TIME ZONE 'UTC')
      FROM (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') - step * interval '1 month' AS m FROM generate_series(0, 1) AS step) AS months`);
    const { rows } = await client.query('SELECT pg_backend_pid() AS pid');
    const pid = rows[0].pid;
    const rowCount = batches * maxBatchRows;

    const samples = Object.fromEntries(selected.map((name) => [name, { wall: [], cpu: [], single: [] }]));
    for (let round = 0; round <= rounds; round += 1) {
      const order = selected.map((_, index) => selected[(index + round) % selected.length]);
      for (const name of order) {
        const variant = variants[name];
        if (variant) {
          await client.query(functionSql(variant));
          await client.query('ALTER TABLE workspace_agent_stats ENABLE ALWAYS TRIGGER zz_insights_privacy');
        } else {
          await client.query('ALTER TABLE workspace_agent_stats DISABLE TRIGGER zz_insights_privacy');
        }
        await client.query('TRUNCATE workspace_agent_stats');
        const end = Date.now();
        const reports = Array.from({ length: rowCount }, (_, index) => {
          const workspace = population.workspaces[index % population.workspaces.length];
          return {
            id: randomUUID(),
            createdAt: new Date(end - (rowCount - index) * 100),
            userId: workspace.ownerId,
            agentId: workspace.agentId,
            workspaceId: workspace.id,
            templateId: workspace.templateId,
            connectionCount: 1,
            sessionCounts: { ssh: 1 },
          };
        });
        const cpuBefore = await cpuNanoseconds(pid);
        const started = process.hrtime.bigint();
        await insertAgentStats(client, '2026', reports);
        const wall = Number(process.hrtime.bigint() - started);
        const cpu = (await cpuNanoseconds(pid)) - cpuBefore;

        // Single-row INSERTs, each its own transaction, as prepared statements.
        const singleCpuBefore = await cpuNanoseconds(pid);
        for (let index = 0; index < singleRows; index += 1) {
          const workspace = population.workspaces[index % population.workspaces.length];
          await client.query({
            name: 'single_row',
            text: `INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, template_id, connection_count) VALUES ($1, $2, $3, $4, $5, $6, 1)`,
            values: [randomUUID(), new Date(end - index), workspace.ownerId, workspace.agentId, workspace.id, workspace.templateId],
          });
        }
        const singleCpu = (await cpuNanoseconds(pid)) - singleCpuBefore;
        if (round === 0) continue;
        samples[name].wall.push(wall / rowCount / 1e3);
        samples[name].cpu.push(cpu / rowCount / 1e3);
        samples[name].single.push(singleCpu / singleRows / 1e3);
      }
      process.stdout.write(round === 0 ? 'warm-up done' : ` ${round}`);
    }
    process.stdout.write('\n');

    console.log(`batch: ${rowCount} rows per run in ${batches} statements; single: ${singleRows} one-row INSERTs per run; ${rounds} rounds`);
    console.log('µs per row (batch) or per INSERT (single), median over rounds; "+" is the difference to off in the same round');
    console.log(`${'variant'.padEnd(34)}${'wall'.padStart(8)}${'+'.padStart(8)}${'cpu'.padStart(8)}${'+'.padStart(8)}${'cpu/off'.padStart(9)}${'single cpu'.padStart(12)}${'+'.padStart(8)}`);
    const extra = (name, kind) => median(samples[name][kind].map((value, round) => value - samples.off[kind][round]));
    for (const name of selected) {
      const { wall, cpu, single } = samples[name];
      const cpuRatio = median(cpu.map((value, round) => value / samples.off.cpu[round]));
      console.log(
        `${name.padEnd(34)}${median(wall).toFixed(2).padStart(8)}${extra(name, 'wall').toFixed(2).padStart(8)}${median(cpu).toFixed(2).padStart(8)}${extra(name, 'cpu').toFixed(2).padStart(8)}${cpuRatio.toFixed(3).padStart(9)}${median(single).toFixed(1).padStart(12)}${extra(name, 'single').toFixed(1).padStart(8)}`,
      );
    }
  } finally {
    await client.end();
  }
} finally {
  await server.stop();
}
