-- name: emotion_share
-- description: Share of each emotion by role, as a fraction of that role's scored speech time.
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
SELECT role,
       emotion,
       count(*) AS segments,
       sum(duration_s) AS speech_s,
       sum(duration_s) / sum(sum(duration_s)) OVER (PARTITION BY role) AS share
FROM filtered_segments($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence)
GROUP BY role, emotion
ORDER BY role, share DESC, emotion;
