-- A pseudonym can never match users.id, so the foreign key cannot stay. A
-- NOT VALID check constraint keeps its name, so an application migration
-- that drops the constraint by name still succeeds; the comment records the
-- original definition for "apply --mode off".
ALTER TABLE {{table}} DROP CONSTRAINT {{constraint}};

ALTER TABLE {{table}} ADD CONSTRAINT {{constraint}} CHECK ({{column}} IS NOT NULL) NOT VALID;

COMMENT ON CONSTRAINT {{constraint}} ON {{table}} IS {{comment}};
