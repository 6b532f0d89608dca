-- name: transitions
-- description: Emotion transitions within calls: how often one segment's emotion is followed by a different one on the same channel (e.g. neutral -> angry), per role, and in how many calls.
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
WITH ordered AS (
    SELECT call_id, role, emotion, negative,
           lag(emotion) OVER w AS previous_emotion,
           lag(negative) OVER w AS previous_negative
    FROM filtered_segments($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence)
    WINDOW w AS (PARTITION BY call_id, role ORDER BY start_s)
)
SELECT role,
       previous_emotion AS from_emotion,
       emotion AS to_emotion,
       count(*) AS transitions,
       count(DISTINCT call_id) AS calls,
       negative AND NOT previous_negative AS turns_negative
FROM ordered
WHERE previous_emotion IS NOT NULL AND previous_emotion <> emotion
GROUP BY ALL
ORDER BY transitions DESC, role, from_emotion, to_emotion;
