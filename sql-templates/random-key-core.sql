-- Returns 32 bytes for a new key without pgcrypto. Core gen_random_uuid()
-- (PostgreSQL 13+) fills a version-4 UUID from pg_strong_random, the same
-- cryptographic source as pgcrypto's gen_random_bytes(); 122 of its 128 bits
-- are random. Three UUIDs give SHA-256 366 random input bits, more than its
-- 256 output bits, so the key carries close to the full 256 bits of entropy.
CREATE OR REPLACE FUNCTION {{schema}}.random_key()
RETURNS bytea
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $ip_body$
SELECT sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.random_key() FROM PUBLIC;
