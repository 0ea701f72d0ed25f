-- A pseudonym is an RFC 9562 version-8 UUID. Real ids are version 4 (Coder
-- uses random UUIDs), so the version nibble tells the two apart.
CREATE OR REPLACE FUNCTION {{schema}}.is_pseudonym(id uuid)
RETURNS boolean
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $ip_body$
SELECT substr(id::text, 15, 1) = '8'
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.is_pseudonym(uuid) FROM PUBLIC;
