-- Parameters: $1 a time. Counts the other client sessions of this database
-- whose transaction began before it and still has a snapshot, because VACUUM
-- FULL copies row versions that such a snapshot may still see. Sessions of other
-- roles show no snapshot without pg_read_all_stats, so they are not counted.
SELECT count(*) AS sessions
FROM pg_catalog.pg_stat_activity AS a
WHERE a.datname = current_database()
  AND a.pid <> pg_catalog.pg_backend_pid()
  AND a.backend_type = 'client backend'
  AND a.backend_xmin IS NOT NULL
  AND a.xact_start < $1::timestamptz;
