-- Parameters: $1 key ids. Deletes the keys that import-key --force replaces.
DELETE FROM {{schema}}.keys AS k
WHERE k.id = ANY ($1::integer[]);
