-- The down migration of a change that cannot be undone: it fails before
-- anything changes, with the reason.
DO $ip_body$
BEGIN
  RAISE EXCEPTION USING MESSAGE = {{message}}, HINT = {{hint}};
END
$ip_body$;
