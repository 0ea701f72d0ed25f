-- Whether any app stats row has a user id that no user has (a pseudonym).
SELECT EXISTS (
  SELECT 1 FROM {{appStats}} AS s
  WHERE NOT EXISTS (SELECT 1 FROM {{users}} AS u WHERE u.id = s.user_id)
) AS orphans;
