-- Replaces every user identifier of a new or updated row with its pseudonym.
-- SECURITY DEFINER lets writers use the key without any privilege on it.
CREATE OR REPLACE FUNCTION {{function}}()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $ip_body$
BEGIN
{{assignments}}
  RETURN NEW;
END
$ip_body$;

REVOKE ALL ON FUNCTION {{function}}() FROM PUBLIC;
