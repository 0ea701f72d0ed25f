-- Parameters: $1, $2 the two keys of the lock. The backend that holds the
-- backfill's session lock in this database, for the error message.
SELECT l.pid
FROM pg_catalog.pg_locks AS l
WHERE l.locktype = 'advisory'
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())
  AND l.classid::bigint = $1
  AND l.objid::bigint = $2
  AND l.objsubid = 2
  AND l.granted
LIMIT 1;
