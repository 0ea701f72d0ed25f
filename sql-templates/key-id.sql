-- Selects the key that pseudonymizes a row stamped row_time, under the
-- rotation policy that apply rendered into {{policy}}:
-- - none: the key of policy none whose [valid_from, valid_until) contains
--   row_time, a NULL bound being open; the latest start wins. apply creates
--   the first key with no start, and rotate-key adds one that starts at the
--   next half hour.
-- - daily, weekly, monthly, yearly: the key of the UTC-aligned period that
--   contains row_time, created here on its first use. Concurrent first uses
--   insert with ON CONFLICT DO NOTHING and then read the row that won, so a
--   period never gets two keys.
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
  period_start timestamptz;
  period_end timestamptz;
  found_key integer;
BEGIN
  IF key_policy = 'none' THEN
    SELECT k.id INTO found_key
    FROM {{schema}}.keys AS k
    WHERE k.policy = 'none'
      AND (k.valid_from IS NULL OR k.valid_from <= row_time)
      AND (k.valid_until IS NULL OR row_time < k.valid_until)
    ORDER BY k.valid_from DESC NULLS LAST, k.id DESC
    LIMIT 1;
  ELSE
    -- Timestamp arithmetic without a time zone, so that the session's
    -- TimeZone setting cannot move a period boundary.
    utc_start := date_trunc({{periodUnit}}, row_time AT TIME ZONE 'UTC');
    period_start := utc_start AT TIME ZONE 'UTC';
    period_end := (utc_start + {{periodLength}}) AT TIME ZONE 'UTC';
    SELECT k.id INTO found_key
    FROM {{schema}}.keys AS k
    WHERE k.policy = key_policy AND k.valid_from = period_start;
  END IF;

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

  found_key := {{schema}}.add_key({{schema}}.random_key(), key_policy, period_start, period_end);
  IF found_key IS NULL THEN
    SELECT k.id INTO found_key
    FROM {{schema}}.keys AS k
    WHERE k.policy = key_policy AND k.valid_from = period_start;
  END IF;
  RETURN found_key;
END
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.key_id(timestamptz) FROM PUBLIC;
