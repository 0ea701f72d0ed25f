{{column}} = CASE WHEN raw.{{minutes}} > twin.{{minutes}} THEN COALESCE(raw.{{column}}, twin.{{column}})
                    ELSE COALESCE(twin.{{column}}, raw.{{column}}) END
