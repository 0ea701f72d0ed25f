-- Parameters: $1 jsonb array of {fingerprint, valid_until}. Gives a key the
-- end that the file records for it where the database has none yet: the
-- source rotated after this database's copy of the key was made.
UPDATE {{schema}}.keys AS k
SET valid_until = m.valid_until
FROM jsonb_to_recordset($1::jsonb) AS m(fingerprint text, valid_until timestamptz)
WHERE k.fingerprint = m.fingerprint
  AND k.valid_until IS NULL;
