-- Returns 32 bytes for a new key from pgcrypto's gen_random_bytes(), which
-- reads the server's cryptographic random source (pg_strong_random).
CREATE OR REPLACE FUNCTION {{schema}}.random_key()
RETURNS bytea
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ip_body$
SELECT {{genRandomBytes}}(32)
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.random_key() FROM PUBLIC;
