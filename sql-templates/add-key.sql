-- Stores one key with its rotation policy and period, and returns its id, or
-- NULL when the policy already has a key that starts at period_start. Every
-- key that rotate-key, a period's first use and import-key add goes through
-- here; apply's first key comes from create-key.sql.
CREATE OR REPLACE FUNCTION {{schema}}.add_key(secret bytea, key_policy text, period_start timestamptz, period_end timestamptz)
RETURNS integer
LANGUAGE sql
VOLATILE PARALLEL UNSAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $ip_body$
INSERT INTO {{schema}}.keys (key, fingerprint, policy, valid_from, valid_until)
VALUES (secret,
        encode(substr(sha256(convert_to('insights-privacy key fingerprint', 'UTF8') || secret), 1, 8), 'hex'),
        key_policy,
        period_start,
        period_end)
ON CONFLICT (policy, valid_from) DO NOTHING
RETURNING id
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.add_key(bytea, text, timestamptz, timestamptz) FROM PUBLIC;
