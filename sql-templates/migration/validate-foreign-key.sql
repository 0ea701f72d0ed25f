-- apply validates a restored foreign key after its transaction, when no row
-- refers to a missing user (a pseudonym never matches one). A migration has
-- only its own transaction, so the same check and validation run here, while
-- the usage tables are still locked.
DO $ip_body$
BEGIN
  IF NOT EXISTS (
    SELECT 1 FROM {{table}} AS t
    WHERE NOT EXISTS (SELECT 1 FROM {{users}} AS u WHERE u.id = t.{{column}})
  ) THEN
    ALTER TABLE {{table}} VALIDATE CONSTRAINT {{constraint}};
  END IF;
END
$ip_body$;
