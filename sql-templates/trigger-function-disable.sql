-- A BEFORE row trigger that returns NULL skips the row: the writer sees a
-- successful statement and nothing is stored. Existing rows stay as they are.
-- The function names nothing, so it needs no SET search_path clause, which
-- would cost every row written.
CREATE OR REPLACE FUNCTION {{function}}()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $ip_body$
BEGIN
  RETURN NULL;
END
$ip_body$;

REVOKE ALL ON FUNCTION {{function}}() FROM PUBLIC;
