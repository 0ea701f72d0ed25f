-- Every key with its period, for export-key. The only statement that reads
-- key bytes out of the database; they travel in the result, which the server
-- does not log.
SELECT k.key, k.fingerprint, k.policy, k.valid_from, k.valid_until, k.created_at
FROM {{schema}}.keys AS k
ORDER BY k.policy, k.valid_from NULLS FIRST, k.id;
