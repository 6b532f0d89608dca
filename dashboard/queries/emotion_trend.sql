-- name: emotion_trend
-- description: Emotion trend: share of each emotion in each role's speech time per day or per week (grain = day | week; weeks start on Monday).
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
-- params: grain text = day
WITH bucketed AS (
    SELECT CASE $grain WHEN 'week' THEN date_trunc('week', call_date)::DATE
                       WHEN 'day' THEN call_date
                       ELSE error('grain must be day or week, not ' || $grain) END AS period,
           role, emotion, duration_s
    FROM filtered_segments($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence)
)
SELECT period,
       role,
       emotion,
       sum(duration_s) AS speech_s,
       sum(duration_s) / sum(sum(duration_s)) OVER (PARTITION BY period, role) AS share
FROM bucketed
GROUP BY period, role, emotion
ORDER BY period, role, emotion;
