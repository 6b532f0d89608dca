-- name: hour_of_day
-- description: Hour-of-day pattern (in the connection's time zone, UTC unless set; from the call's start time): calls, customer-negative share and escalation rate per hour.
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
SELECT hour(started_at) AS hour,
       count(*) AS calls,
       negative_share(customer_negative_share, speech_s_customer) AS customer_negative_share,
       avg(escalated::INTEGER) AS escalation_rate
FROM filtered_calls($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence)
WHERE started_at IS NOT NULL
GROUP BY hour
ORDER BY hour;
