-- Parameters: $1 jsonb array of {position, policy, valid_from, valid_until},
-- one per key to add; the key bytes come from the COPY table. Returns each
-- new key's id, or NULL where the period got a key meanwhile.
SELECT m.position, {{schema}}.add_key(decode(t.key_hex, 'hex'), m.policy, m.valid_from, m.valid_until) AS id
FROM jsonb_to_recordset($1::jsonb) AS m(position integer, policy text, valid_from timestamptz, valid_until timestamptz)
JOIN pg_temp.insights_privacy_import AS t ON t.position = m.position
ORDER BY m.position;
