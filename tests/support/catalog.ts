import type pg from 'pg';

// What enforcement consists of in the catalog, without values that differ
// between two databases given the same change: oids, keys, fingerprints and
// timestamps. Two databases that went through the same changes, by apply or
// by a migration, have equal snapshots. $1 is the tool's schema, $2 the
// usage tables (schema-qualified).
const enforcementSnapshotSql = `
WITH tool AS (SELECT n.oid, n.nspname, n.nspacl, n.nspowner FROM pg_catalog.pg_namespace AS n WHERE n.nspname = $1),
usage AS (SELECT c.oid FROM pg_catalog.pg_class AS c WHERE c.oid = ANY ($2::regclass[])),
tool_relations AS (SELECT c.* FROM pg_catalog.pg_class AS c JOIN tool ON c.relnamespace = tool.oid)
SELECT json_build_object(
  'schema', (SELECT json_build_object('acl', tool.nspacl::text, 'owner', tool.nspowner::regrole::text, 'comment', pg_catalog.obj_description(tool.oid, 'pg_namespace')) FROM tool),
  'extensions', (SELECT json_agg(e.extname || ' in ' || e.extnamespace::regnamespace::text ORDER BY e.extname) FROM pg_catalog.pg_extension AS e),
  'triggers', (SELECT json_agg(json_build_array(t.tgrelid::regclass::text, t.tgname, t.tgenabled, pg_catalog.pg_get_triggerdef(t.oid), pg_catalog.obj_description(t.oid, 'pg_trigger'))
                               ORDER BY t.tgrelid::regclass::text, t.tgname)
               FROM pg_catalog.pg_trigger AS t WHERE NOT t.tgisinternal AND t.tgrelid IN (SELECT oid FROM usage)),
  'constraints', (SELECT json_agg(json_build_array(con.conrelid::regclass::text, con.conname, con.contype, pg_catalog.pg_get_constraintdef(con.oid), con.convalidated,
                                                   pg_catalog.obj_description(con.oid, 'pg_constraint'))
                                  ORDER BY con.conrelid::regclass::text, con.conname)
                  FROM pg_catalog.pg_constraint AS con
                  WHERE con.conrelid IN (SELECT oid FROM usage) OR con.conrelid IN (SELECT oid FROM tool_relations)),
  'functions', (SELECT json_agg(json_build_array(p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid), pg_catalog.pg_get_function_result(p.oid), p.prosrc,
                                                 p.prosecdef, p.proconfig, p.provolatile, p.proacl::text, p.proowner::regrole::text)
                                ORDER BY p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid))
                FROM pg_catalog.pg_proc AS p JOIN tool ON p.pronamespace = tool.oid
                WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend AS d WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')),
  'relations', (SELECT json_agg(json_build_array(r.relname, r.relkind, r.relacl::text, r.relowner::regrole::text) ORDER BY r.relname) FROM tool_relations AS r),
  'columns', (SELECT json_agg(json_build_array(r.relname, a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
                                               a.attgenerated, a.attstattarget, pg_catalog.pg_get_expr(ad.adbin, ad.adrelid))
                              ORDER BY r.relname, a.attnum)
              FROM tool_relations AS r
              JOIN pg_catalog.pg_attribute AS a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
              LEFT JOIN pg_catalog.pg_attrdef AS ad ON ad.adrelid = r.oid AND ad.adnum = a.attnum
              WHERE r.relkind = 'r'),
  'indexes', (SELECT json_agg(pg_catalog.pg_get_indexdef(i.indexrelid) ORDER BY pg_catalog.pg_get_indexdef(i.indexrelid))
              FROM pg_catalog.pg_index AS i WHERE i.indrelid IN (SELECT oid FROM tool_relations))
)::text AS snapshot`;

/** The parts of the snapshot read from the tool's tables, when they exist. */
interface RecordedRows {
  state: unknown;
  keys: unknown;
}

async function recordedRows(client: pg.ClientBase, schema: string): Promise<RecordedRows> {
  const { rows } = await client.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [`"${schema}".state`]);
  if (!rows[0].present) return { state: null, keys: null };

  const state = await client.query(`SELECT s.mode, s.profile, s.scope, s.options, s.tool_version, s.applied_by FROM "${schema}".state AS s`);
  const keys = await client.query(`SELECT k.policy, k.valid_from, k.valid_until FROM "${schema}".keys AS k ORDER BY k.id`);
  return { state: state.rows, keys: keys.rows };
}

/**
 * Reads what enforcement consists of. From the usage tables it takes the
 * triggers and the constraints, with validation and comments. From the
 * tool's schema it takes the functions (body, SECURITY DEFINER, settings and
 * ACL), tables, columns, indexes and the schema's ACL. It adds where each
 * extension lives, the recorded state and the key periods. Key bytes,
 * fingerprints and timestamps are left out, because they differ between any
 * two installations.
 */
export async function enforcementSnapshot(client: pg.ClientBase, schema: string, usageTables: readonly string[]): Promise<Record<string, unknown>> {
  const { rows } = await client.query<{ snapshot: string }>(enforcementSnapshotSql, [schema, usageTables]);
  const snapshot = JSON.parse(rows[0].snapshot) as Record<string, unknown>;
  return { ...snapshot, ...(await recordedRows(client, schema)) };
}
