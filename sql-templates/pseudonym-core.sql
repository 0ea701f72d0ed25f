-- The same pseudonym as pseudonym.sql, for servers without pgcrypto: HMAC-SHA256
-- on core sha256() (PostgreSQL 11+), computed as
--   SHA256((K' XOR opad) || SHA256((K' XOR ipad) || message))
-- from the two padded keys that the keys table stores with each key, so each
-- call costs two sha256() calls. The key selection by row_time, the message,
-- the truncation and the UUID bits are those of pseudonym.sql, and both
-- functions return the same pseudonym for the same key, so a database can
-- switch between them and keep every pseudonym. VOLATILE for the reason given
-- in pseudonym.sql: key_id() may create a period's key.
DROP FUNCTION IF EXISTS {{schema}}.pseudonym(uuid);

CREATE OR REPLACE FUNCTION {{schema}}.pseudonym(id uuid, row_time timestamptz DEFAULT now())
RETURNS uuid
LANGUAGE plpgsql
VOLATILE STRICT PARALLEL UNSAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $ip_body$
DECLARE
  selected_key integer;
  inner_pad bytea;
  outer_pad bytea;
  digest bytea;
BEGIN
  IF {{schema}}.is_pseudonym(id) THEN
    RETURN id;
  END IF;

  selected_key := {{schema}}.key_id(row_time);
  SELECT k.inner_key_pad, k.outer_key_pad INTO inner_pad, outer_pad FROM {{schema}}.keys AS k WHERE k.id = selected_key;
  IF inner_pad IS NULL OR outer_pad IS NULL THEN
    RAISE EXCEPTION 'insights-privacy: no pseudonym key in schema %', {{schemaName}}
      USING HINT = 'Run "insights-privacy apply --mode anonymize" to create one.';
  END IF;

  digest := sha256(outer_pad || sha256(inner_pad || convert_to({{domainLabel}}, 'UTF8') || uuid_send(id)));
  digest := set_byte(digest, 6, (get_byte(digest, 6) & 15) | 128);
  digest := set_byte(digest, 8, (get_byte(digest, 8) & 63) | 128);
  RETURN encode(substr(digest, 1, 16), 'hex')::uuid;
END
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.pseudonym(uuid, timestamptz) FROM PUBLIC;
