-- Maps a user id to its keyed pseudonym:
--   HMAC-SHA256(key, domain label || the 16 bytes of the id),
-- truncated to 16 bytes, with the RFC 9562 version field set to 8 and the
-- variant bits set to 10. A pseudonym passes through unchanged, so rows
-- copied between protected tables are never hashed twice. Without a key the
-- function raises an error: a failed write is better than a stored real id.
-- row_time selects the key (see key-id.sql); the triggers pass the row's own
-- timestamp. VOLATILE because key_id() may create a period's key, and each
-- statement of a VOLATILE function sees that new row and keys that
-- concurrent writers committed. The one-argument form of earlier versions
-- is dropped so that pseudonym(id) resolves to this function.
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
  secret bytea;
  digest bytea;
BEGIN
  IF {{schema}}.is_pseudonym(id) THEN
    RETURN id;
  END IF;

  selected_key := {{schema}}.key_id(row_time);
  SELECT k.key INTO secret FROM {{schema}}.keys AS k WHERE k.id = selected_key;
  IF secret IS NULL THEN
    RAISE EXCEPTION 'insights-privacy: no pseudonym key in schema %', {{schemaName}}
      USING HINT = 'Run "insights-privacy apply --mode anonymize" to create one.';
  END IF;

  digest := {{hmac}}(convert_to({{domainLabel}}, 'UTF8') || uuid_send(id), secret, 'sha256'::text);
  digest := set_byte(digest, 6, (get_byte(digest, 6) & 15) | 128);
  digest := set_byte(digest, 8, (get_byte(digest, 8) & 63) | 128);
  RETURN encode(substr(digest, 1, 16), 'hex')::uuid;
END
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.pseudonym(uuid, timestamptz) FROM PUBLIC;
