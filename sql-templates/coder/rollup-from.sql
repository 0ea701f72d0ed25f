(SELECT date_trunc('hour', COALESCE(max(u.start_time) - interval '1 hour', (SELECT min(a.created_at) FROM {{agentStats}} AS a)))
 FROM {{usageStats}} AS u)
