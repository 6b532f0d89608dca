-- name: daily_negative
-- description: Daily share of negative customer emotion: customer speech time in segments with a negative emotion over all customer speech time, with the day's number of calls. The filters choose the calls as on every page (an emotion of the chosen role); the share is always over the customer's segments.
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
WITH chosen AS (
    SELECT call_id, call_date
    FROM filtered_calls($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence)
),
day_calls AS (
    SELECT call_date, count(*) AS calls
    FROM chosen
    GROUP BY call_date
),
day_speech AS (
    SELECT call_date,
           sum(duration_s) AS customer_speech_s,
           coalesce(sum(duration_s) FILTER (WHERE negative), 0) AS negative_speech_s
    FROM filtered_segments($date_from, $date_to, $queue, $agent, 'customer', NULL,
                           $min_confidence)
    WHERE call_id IN (SELECT call_id FROM chosen)
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
