-- name: transitions
-- description: Emotion transitions within calls: how often one segment's emotion is followed by a different one on the same channel (e.g. neutral -> angry), per role; turns_negative marks a change from a non-negative to a negative emotion.
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
WITH ordered AS (
    SELECT role,
           lag(emotion) OVER (PARTITION BY call_id, channel ORDER BY start_s) AS from_emotion,
           emotion AS to_emotion
    FROM filtered_segments($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence)
),
counted AS (
    SELECT role, from_emotion, to_emotion, count(*) AS transitions
    FROM ordered
    WHERE from_emotion <> to_emotion
    GROUP BY ALL
)
SELECT c.*,
       coalesce(t.negative, false) AND NOT coalesce(f.negative, false) AS turns_negative
FROM counted AS c
LEFT JOIN emotion_labels AS f ON f.label = c.from_emotion
LEFT JOIN emotion_labels AS t ON t.label = c.to_emotion
ORDER BY transitions DESC, role, from_emotion, to_emotion;
