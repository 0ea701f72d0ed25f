-- Whether any row's user id matches no user (a pseudonym), which keeps a
-- restored foreign key from being validated.
SELECT EXISTS (
  SELECT 1 FROM {{table}} AS t
  WHERE NOT EXISTS (SELECT 1 FROM {{users}} AS u WHERE u.id = t.{{column}})
) AS orphans;
