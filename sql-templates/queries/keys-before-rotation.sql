-- The key table of versions before key rotation, which has no period
-- columns: every key there is of policy none without bounds.
SELECT k.id, k.fingerprint, k.created_at, 'none' AS policy, NULL::timestamptz AS valid_from, NULL::timestamptz AS valid_until
FROM {{schema}}.keys AS k
ORDER BY k.id DESC;
