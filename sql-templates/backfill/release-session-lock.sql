-- Parameters: $1, $2 the two keys of the lock. Closing the connection
-- releases it too, so a killed run never leaves it behind.
SELECT pg_advisory_unlock($1, $2) AS released;
