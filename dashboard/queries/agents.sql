-- name: agents
-- description: Per-agent table ('(none)': the calls without an agent): calls, audio hours, customer-negative share (weighted by customer speech) with its 95 % interval and whether it rests on fewer than 10 calls, escalation rate, the change of both vs the previous period of equal length, and the customer-negative share of each day of the range (for sparklines; NULL on a day without calls or customer speech).
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
spread AS (
    SELECT d.agent_id,
           share_half_width(count(*), share_spread(d.customer_negative_share,
                                                   p.customer_negative_share,
                                                   d.speech_s_customer),
                            sum(d.speech_s_customer), any_value(d.customer_negative_share_low),
                            any_value(d.customer_negative_share_high)) AS half_width,
           count(*) AS calls_with_customer
    FROM dated AS d
    JOIN per_period AS p ON p.agent_id IS NOT DISTINCT FROM d.agent_id AND p.period = d.period
    WHERE d.period = 'current' AND d.customer_negative_share IS NOT NULL
    GROUP BY d.agent_id
),
days AS (
    SELECT CAST(unnest(generate_series(d0, d1, INTERVAL 1 DAY)) AS DATE) AS call_date
    FROM bounds
),
per_day AS (
    SELECT agent_id, call_date,
           negative_share(customer_negative_share, speech_s_customer) AS share
    FROM dated
    WHERE period = 'current'
    GROUP BY agent_id, call_date
),
daily AS (
    SELECT a.agent_id, list(p.share ORDER BY days.call_date) AS daily_negative_share
    FROM (SELECT DISTINCT agent_id FROM per_day) AS a
    CROSS JOIN days
    LEFT JOIN per_day AS p
           ON p.agent_id IS NOT DISTINCT FROM a.agent_id AND p.call_date = days.call_date
    GROUP BY a.agent_id
)
SELECT coalesce(cur.agent_id, '(none)') AS agent_id,
       cur.calls,
       cur.audio_hours,
       cur.customer_negative_share,
       CASE WHEN sp.half_width IS NOT NULL
            THEN greatest(0, cur.customer_negative_share - sp.half_width) END
           AS negative_share_low,
       CASE WHEN sp.half_width IS NOT NULL
            THEN least(1, cur.customer_negative_share + sp.half_width) END
           AS negative_share_high,
       coalesce(sp.calls_with_customer, 0) < 10 AS few_calls,
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
LEFT JOIN spread AS sp ON sp.agent_id IS NOT DISTINCT FROM cur.agent_id
WHERE cur.period = 'current'
ORDER BY cur.calls DESC, 1;
