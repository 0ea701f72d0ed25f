-- A BEFORE row trigger that returns NULL skips the row: the writer sees a
-- successful statement and nothing is stored. Existing rows stay as they are.
CREATE OR REPLACE FUNCTION {{function}}()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $ip_body$
BEGIN
  RETURN NULL;
END
$ip_body$;

REVOKE ALL ON FUNCTION {{function}}() FROM PUBLIC;
