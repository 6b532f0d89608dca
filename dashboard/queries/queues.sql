-- name: queues
-- description: Queue comparison: calls, agents, audio hours, mean call length, customer-negative share with its 95 % interval and whether it rests on fewer than 10 calls, escalation rate and the customer-negative share of each day of the range per queue (for sparklines; NULL on a day without calls or customer speech; '(none)': the calls without a queue).
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
WITH selected AS (
    SELECT *
    FROM filtered_calls($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence)
),
share AS (
    SELECT queue, negative_share(customer_negative_share, speech_s_customer) AS share
    FROM selected
    GROUP BY queue
),
spread AS (
    SELECT s.queue,
           share_half_width(count(*), share_spread(s.customer_negative_share, g.share,
                                                   s.speech_s_customer),
                            sum(s.speech_s_customer), any_value(s.customer_negative_share_low),
                            any_value(s.customer_negative_share_high)) AS half_width,
           count(*) AS calls_with_customer
    FROM selected AS s
    JOIN share AS g ON g.queue IS NOT DISTINCT FROM s.queue
    WHERE s.customer_negative_share IS NOT NULL
    GROUP BY s.queue
),
days AS (
    SELECT CAST(unnest(generate_series(
               coalesce(CAST($date_from AS DATE), min(call_date)),
               coalesce(CAST($date_to AS DATE), max(call_date)), INTERVAL 1 DAY)) AS DATE)
           AS call_date
    FROM calls
),
per_day AS (
    SELECT queue, call_date,
           negative_share(customer_negative_share, speech_s_customer) AS share
    FROM selected
    GROUP BY queue, call_date
),
daily AS (
    SELECT q.queue, list(p.share ORDER BY days.call_date) AS daily_negative_share
    FROM (SELECT DISTINCT queue FROM per_day) AS q
    CROSS JOIN days
    LEFT JOIN per_day AS p ON p.queue IS NOT DISTINCT FROM q.queue AND p.call_date = days.call_date
    GROUP BY q.queue
)
SELECT coalesce(s.queue, '(none)') AS queue,
       count(*) AS calls,
       count(DISTINCT s.agent_id) AS agents,
       sum(s.duration_s) / 3600 AS audio_hours,
       avg(s.duration_s) AS mean_duration_s,
       negative_share(s.customer_negative_share, s.speech_s_customer) AS customer_negative_share,
       CASE WHEN any_value(sp.half_width) IS NOT NULL
            THEN greatest(0, any_value(g.share) - any_value(sp.half_width)) END
           AS negative_share_low,
       CASE WHEN any_value(sp.half_width) IS NOT NULL
            THEN least(1, any_value(g.share) + any_value(sp.half_width)) END
           AS negative_share_high,
       coalesce(any_value(sp.calls_with_customer), 0) < 10 AS few_calls,
       avg(s.escalated::INTEGER) AS escalation_rate,
       count(*) FILTER (WHERE s.escalated) AS escalated_calls,
       any_value(d.daily_negative_share) AS daily_negative_share
FROM selected AS s
LEFT JOIN daily AS d ON d.queue IS NOT DISTINCT FROM s.queue
LEFT JOIN share AS g ON g.queue IS NOT DISTINCT FROM s.queue
LEFT JOIN spread AS sp ON sp.queue IS NOT DISTINCT FROM s.queue
GROUP BY s.queue
ORDER BY calls DESC, 1;
