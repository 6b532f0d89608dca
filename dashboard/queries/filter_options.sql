-- name: filter_options
-- description: The values the dashboard filters offer: first and last call day, queues, agents, roles and emotions.
SELECT (SELECT min(call_date) FROM calls) AS first_day,
       (SELECT max(call_date) FROM calls) AS last_day,
       coalesce((SELECT list(DISTINCT queue ORDER BY queue) FROM calls
                 WHERE queue IS NOT NULL), []) AS queues,
       coalesce((SELECT list(DISTINCT agent_id ORDER BY agent_id) FROM calls
                 WHERE agent_id IS NOT NULL), []) AS agents,
       coalesce((SELECT list(DISTINCT role ORDER BY role) FROM segments), []) AS roles,
       coalesce((SELECT list(label ORDER BY position) FROM emotion_labels
                 WHERE position IS NOT NULL), []) AS emotions;
