-- The statements below were planned for one recorded enforcement; on any
-- other they could remove keys or fail half-way, so the migration stops.
DO $ip_body$
DECLARE
  recorded text;
BEGIN
  IF to_regclass({{stateTable}}) IS NOT NULL THEN
    SELECT s.mode || coalesce(' (scope ' || s.scope || ')', '') INTO recorded FROM {{schema}}.state AS s;
  END IF;
  IF coalesce(recorded, 'off') <> {{expected}} THEN
    RAISE EXCEPTION 'insights-privacy: this migration was generated for a database with enforcement %, but this database has %', {{expected}}, coalesce(recorded, 'off')
      USING HINT = 'Generate the migration again against this database with "insights-privacy generate", or use "insights-privacy apply".';
  END IF;
END
$ip_body$;
