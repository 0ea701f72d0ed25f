-- Parameters: $1 the cut-off. Deletes every key whose period ended at or
-- before it, and records the period and fingerprint of each, so that
-- pseudonym() raises an error for the period instead of making a new key.
-- A key without an end (the one in use under policy none) is never deleted.
WITH deleted AS (
  DELETE FROM {{schema}}.keys AS k
  WHERE k.valid_until IS NOT NULL
    AND k.valid_until <= $1::timestamptz
  RETURNING k.fingerprint, k.policy, k.valid_from, k.valid_until, k.created_at
)
INSERT INTO {{schema}}.forgotten_keys (fingerprint, policy, valid_from, valid_until, created_at)
SELECT d.fingerprint, d.policy, d.valid_from, d.valid_until, d.created_at
FROM deleted AS d
RETURNING fingerprint, policy, valid_from, valid_until;
