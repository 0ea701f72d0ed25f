-- A pseudonym is an RFC 9562 version-8 UUID. Real ids are version 4 (Coder
-- uses random UUIDs), so the version nibble tells the two apart. The
-- function has no SET clause, so that the planner can inline it into the
-- queries of cut-over and backfill. It needs none: it is not SECURITY
-- DEFINER, and every name in it is schema-qualified, so the caller's
-- search_path cannot change its result.
CREATE OR REPLACE FUNCTION {{schema}}.is_pseudonym(id uuid)
RETURNS boolean
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
AS $ip_body$
SELECT {{test}}
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.is_pseudonym(uuid) FROM PUBLIC;
