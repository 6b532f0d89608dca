-- name: filter_options
-- description: The values the dashboard filters offer: first and last call day, queues, agents ('(none)' for calls without one), roles, emotions and their valences (label order; below zero: negative).
SELECT (SELECT min(call_date) FROM calls) AS first_day,
       (SELECT max(call_date) FROM calls) AS last_day,
       coalesce((SELECT list(DISTINCT coalesce(queue, '(none)')
                           ORDER BY coalesce(queue, '(none)')) FROM calls),
                []) AS queues,
       coalesce((SELECT list(DISTINCT coalesce(agent_id, '(none)')
                           ORDER BY coalesce(agent_id, '(none)')) FROM calls),
                []) AS agents,
       coalesce((SELECT list(DISTINCT role ORDER BY role) FROM segments), []) AS roles,
       coalesce((SELECT list(label ORDER BY position) FROM emotion_labels
                 WHERE position IS NOT NULL), []) AS emotions,
       coalesce((SELECT list(valence ORDER BY position) FROM emotion_labels
                 WHERE position IS NOT NULL), []) AS valences;
