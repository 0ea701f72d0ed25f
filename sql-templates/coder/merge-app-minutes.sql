{{column}} = (
    SELECT jsonb_object_agg(apps.key, apps.minutes)
    FROM (
      SELECT e.key, LEAST({{bucketMinutes}}, sum((e.value)::numeric)) AS minutes
      FROM (SELECT * FROM jsonb_each(twin.{{column}}) UNION ALL SELECT * FROM jsonb_each(raw.{{column}})) AS e
      GROUP BY e.key
    ) AS apps
  )
