-- Parameters: $1 jsonb array of {policy, valid_from}. Removes the record of
-- forgotten periods that import-key --force gives a key again.
DELETE FROM {{schema}}.forgotten_keys AS f
USING jsonb_to_recordset($1::jsonb) AS m(policy text, valid_from timestamptz)
WHERE f.policy = m.policy
  AND f.valid_from IS NOT DISTINCT FROM m.valid_from;
