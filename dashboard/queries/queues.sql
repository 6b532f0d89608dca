-- name: queues
-- description: Queue comparison: calls, agents, audio hours, mean call length, customer-negative share, escalation rate and the daily customer-negative share per queue ('(none)': the calls without one).
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
WITH selected AS (
    SELECT *
    FROM filtered_calls($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence)
),
daily AS (
    SELECT queue, list(share ORDER BY call_date) AS daily_negative_share
    FROM (
        SELECT queue, call_date,
               negative_share(customer_negative_share, speech_s_customer) AS share
        FROM selected
        GROUP BY queue, call_date
    )
    GROUP BY queue
)
SELECT coalesce(s.queue, '(none)') AS queue,
       count(*) AS calls,
       count(DISTINCT s.agent_id) AS agents,
       sum(s.duration_s) / 3600 AS audio_hours,
       avg(s.duration_s) AS mean_duration_s,
       negative_share(s.customer_negative_share, s.speech_s_customer) AS customer_negative_share,
       avg(s.escalated::INTEGER) AS escalation_rate,
       count(*) FILTER (WHERE s.escalated) AS escalated_calls,
       any_value(d.daily_negative_share) AS daily_negative_share
FROM selected AS s
LEFT JOIN daily AS d ON d.queue IS NOT DISTINCT FROM s.queue
GROUP BY s.queue
ORDER BY calls DESC, 1;
