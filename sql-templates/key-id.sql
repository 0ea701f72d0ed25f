-- Selects the key that pseudonymizes a row stamped row_time, under the
-- rotation policy that apply rendered into the constant key_policy:
-- - none: the key of policy none whose [valid_from, valid_until) contains
--   row_time (fragments/key-none.sql).
-- - daily, weekly, monthly, yearly: the key of the UTC-aligned period that
--   contains row_time (fragments/key-period.sql), created here on its first
--   use. Concurrent first uses insert with ON CONFLICT DO NOTHING and then
--   read the row that won, so a period never gets two keys.
-- A row_time whose key forget-keys deleted raises an error rather than get
-- a new key: new rows of a forgotten period must not become linkable.
CREATE OR REPLACE FUNCTION {{schema}}.key_id(row_time timestamptz)
RETURNS integer
LANGUAGE plpgsql
VOLATILE STRICT PARALLEL UNSAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $ip_body$
DECLARE
  key_policy constant text := {{policy}};
  utc_start timestamp;
  found_key integer;
BEGIN
  SELECT k.id INTO found_key
  {{keySelection}};
  IF found_key IS NOT NULL THEN
    RETURN found_key;
  END IF;

  IF EXISTS (SELECT 1 FROM {{schema}}.forgotten_keys AS f
             WHERE f.policy = key_policy
               AND (f.valid_from IS NULL OR f.valid_from <= row_time)
               AND row_time < f.valid_until) THEN
    RAISE EXCEPTION 'insights-privacy: the pseudonym key for rows stamped % was deleted by forget-keys', row_time
      USING HINT = 'Rows of a forgotten key period cannot be pseudonymized any more; write them with a timestamp in a period that has a key, or not at all.';
  END IF;

  IF key_policy = 'none' THEN
    RAISE EXCEPTION 'insights-privacy: no pseudonym key in schema % for rows stamped %', {{schemaName}}, row_time
      USING HINT = 'Run "insights-privacy apply --mode anonymize" to create one.';
  END IF;

  -- The period's bounds, on timestamp without time zone as in the key
  -- selection, so that the session's TimeZone setting cannot move them.
  utc_start := date_trunc({{periodUnit}}, row_time AT TIME ZONE 'UTC');
  found_key := {{schema}}.add_key({{schema}}.random_key(), key_policy, utc_start AT TIME ZONE 'UTC', (utc_start + {{periodLength}}) AT TIME ZONE 'UTC');
  IF found_key IS NOT NULL THEN
    RETURN found_key;
  END IF;

  -- A concurrent first use inserted the period's key first: read the winner.
  SELECT k.id INTO found_key
  {{keySelection}};
  RETURN found_key;
END
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.key_id(timestamptz) FROM PUBLIC;
