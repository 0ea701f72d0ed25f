-- BEFORE row triggers fire in name order; the "zz_" prefix makes this one
-- fire after the table's other BEFORE triggers, so none of them can put a
-- real id back. ENABLE ALWAYS keeps it firing under
-- session_replication_role = replica.
DROP TRIGGER IF EXISTS {{trigger}} ON {{table}};

CREATE TRIGGER {{trigger}}
  BEFORE {{events}} ON {{table}}
  FOR EACH ROW EXECUTE FUNCTION {{function}}();

ALTER TABLE {{table}} ENABLE ALWAYS TRIGGER {{trigger}};

COMMENT ON TRIGGER {{trigger}} ON {{table}} IS {{comment}};
