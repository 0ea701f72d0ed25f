-- Maps a user id to its keyed pseudonym:
--   HMAC-SHA256(key, domain label || the 16 bytes of the id),
-- truncated to 16 bytes, with the RFC 9562 version field set to 8 and the
-- variant bits set to 10. The HMAC is pgcrypto's hmac() or, for servers
-- without pgcrypto, the same HMAC on core sha256() from the padded keys
-- stored with each key; both give the same pseudonym for the same key, so a
-- database can switch between them and keep every pseudonym. A pseudonym
-- passes through unchanged, so rows copied between protected tables are
-- never hashed twice. Without a key the function raises an error: a failed
-- write is better than a stored real id.
--
-- row_time selects the key as key_id() does. The first query selects it
-- inline, which finds the key of every row whose key exists. Only when that
-- query finds none does the function call key_id(), which creates the key
-- of a new period or raises an error. The trigger functions compute the
-- same pseudonym inline and call this function only in that case. VOLATILE
-- because key_id() may create a period's key, and each statement of a
-- VOLATILE function sees that new row and keys that concurrent writers
-- committed. The one-argument form of earlier versions is dropped so that
-- pseudonym(id) resolves to this function.
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
  digest bytea;
BEGIN
  IF {{isPseudonym}} THEN
    RETURN id;
  END IF;

  SELECT {{digest}} INTO digest
  {{keySelection}};
  IF digest IS NULL THEN
    selected_key := {{schema}}.key_id(row_time);
    SELECT {{digest}} INTO digest
    FROM {{schema}}.keys AS k
    WHERE k.id = selected_key;
  END IF;
  IF digest IS NULL THEN
    RAISE EXCEPTION 'insights-privacy: no pseudonym key in schema %', {{schemaName}}
      USING HINT = 'Run "insights-privacy apply --mode anonymize" to create one.';
  END IF;

  RETURN {{uuid}};
END
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.pseudonym(uuid, timestamptz) FROM PUBLIC;
