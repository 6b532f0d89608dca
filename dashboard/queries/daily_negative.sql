-- name: daily_negative
-- description: Daily share of negative customer emotion: customer speech time in segments with a negative emotion over all customer speech time, with the day's number of calls (customer segments only, so no role filter).
-- params: date_from date, date_to date, queue text, agent text, emotion text,
-- params: min_confidence float = 0
WITH day_calls AS (
    SELECT call_date, count(*) AS calls
    FROM filtered_calls($date_from, $date_to, $queue, $agent, NULL, $emotion, $min_confidence)
    GROUP BY call_date
),
day_speech AS (
    SELECT call_date,
           sum(duration_s) AS customer_speech_s,
           coalesce(sum(duration_s) FILTER (WHERE negative), 0) AS negative_speech_s
    FROM filtered_segments($date_from, $date_to, $queue, $agent, NULL, $emotion, $min_confidence)
    WHERE role = 'customer'
    GROUP BY call_date
)
SELECT d.call_date,
       d.calls,
       coalesce(s.customer_speech_s, 0) AS customer_speech_s,
       coalesce(s.negative_speech_s, 0) AS negative_speech_s,
       s.negative_speech_s / nullif(s.customer_speech_s, 0) AS negative_share
FROM day_calls AS d
LEFT JOIN day_speech AS s USING (call_date)
ORDER BY d.call_date;
