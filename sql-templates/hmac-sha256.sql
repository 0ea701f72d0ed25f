-- HMAC-SHA256 (RFC 2104) on core sha256() (PostgreSQL 11+), for a key of any
-- length: SHA256((K' XOR opad) || SHA256((K' XOR ipad) || message)). It gives
-- the same result as pgcrypto's hmac(message, key, 'sha256'), which the tests
-- check against the RFC 4231 test vectors. 92 is the opad byte 0x5c and 54 the
-- ipad byte 0x36. The pseudonym function does not call this function: it
-- reads both padded keys from the keys table instead.
CREATE OR REPLACE FUNCTION {{schema}}.hmac_sha256(key bytea, message bytea)
RETURNS bytea
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $ip_body$
SELECT sha256({{schema}}.hmac_key_pad(key, 92) || sha256({{schema}}.hmac_key_pad(key, 54) || message))
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.hmac_sha256(bytea, bytea) FROM PUBLIC;
