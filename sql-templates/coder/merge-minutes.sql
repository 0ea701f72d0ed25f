{{column}} = LEAST({{bucketMinutes}}, COALESCE(twin.{{column}}, 0) + COALESCE(raw.{{column}}, 0))
