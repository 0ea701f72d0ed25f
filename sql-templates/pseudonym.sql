-- Maps a user id to its keyed pseudonym:
--   HMAC-SHA256(key, domain label || the 16 bytes of the id),
-- truncated to 16 bytes, with the RFC 9562 version field set to 8 and the
-- variant bits set to 10. A pseudonym passes through unchanged, so rows
-- copied between protected tables are never hashed twice. Without a key the
-- function raises an error: a failed write is better than a stored real id.
CREATE OR REPLACE FUNCTION {{schema}}.pseudonym(id uuid)
RETURNS uuid
LANGUAGE plpgsql
STABLE STRICT PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $ip_body$
DECLARE
  secret bytea;
  digest bytea;
BEGIN
  IF {{schema}}.is_pseudonym(id) THEN
    RETURN id;
  END IF;

  SELECT k.key INTO secret FROM {{schema}}.keys AS k ORDER BY k.id DESC LIMIT 1;
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

REVOKE ALL ON FUNCTION {{schema}}.pseudonym(uuid) FROM PUBLIC;
