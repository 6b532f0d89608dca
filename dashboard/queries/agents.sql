-- name: agents
-- description: Per-agent table ('(none)': the calls without an agent): calls, audio hours, customer-negative share (weighted by customer speech), escalation rate, the change of both vs the previous period of equal length, and the daily customer-negative share (for sparklines).
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
WITH bounds AS (
    SELECT coalesce(CAST($date_from AS DATE), min(call_date)) AS d0,
           coalesce(CAST($date_to AS DATE), max(call_date)) AS d1
    FROM calls
),
dated AS (
    SELECT c.*,
           CASE WHEN c.call_date BETWEEN b.d0 AND b.d1 THEN 'current'
                WHEN c.call_date BETWEEN b.d0 - CAST(b.d1 - b.d0 + 1 AS INTEGER) AND b.d0 - 1 THEN 'previous'
           END AS period
    FROM filtered_calls(NULL, NULL, $queue, $agent, $role, $emotion, $min_confidence) AS c,
         bounds AS b
),
per_period AS (
    SELECT agent_id, period,
           count(*) AS calls,
           sum(duration_s) / 3600 AS audio_hours,
           negative_share(customer_negative_share, speech_s_customer) AS customer_negative_share,
           avg(escalated::INTEGER) AS escalation_rate,
           count(*) FILTER (WHERE escalated) AS escalated_calls
    FROM dated
    WHERE period IS NOT NULL
    GROUP BY agent_id, period
),
daily AS (
    SELECT agent_id, list(share ORDER BY call_date) AS daily_negative_share
    FROM (
        SELECT agent_id, call_date,
               negative_share(customer_negative_share, speech_s_customer) AS share
        FROM dated
        WHERE period = 'current'
        GROUP BY agent_id, call_date
    )
    GROUP BY agent_id
)
SELECT coalesce(cur.agent_id, '(none)') AS agent_id,
       cur.calls,
       cur.audio_hours,
       cur.customer_negative_share,
       cur.escalation_rate,
       cur.escalated_calls,
       prev.calls AS previous_calls,
       cur.customer_negative_share - prev.customer_negative_share AS negative_share_change,
       cur.escalation_rate - prev.escalation_rate AS escalation_rate_change,
       d.daily_negative_share
FROM per_period AS cur
LEFT JOIN per_period AS prev
       ON prev.agent_id IS NOT DISTINCT FROM cur.agent_id AND prev.period = 'previous'
LEFT JOIN daily AS d ON d.agent_id IS NOT DISTINCT FROM cur.agent_id
WHERE cur.period = 'current'
ORDER BY cur.calls DESC, 1;
