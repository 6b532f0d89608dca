-- name: overview
-- description: One row for the period: calls, audio hours, speech hours per role, escalated calls, customer-negative share, agents, queues and the first and last call day.
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
SELECT count(*) AS calls,
       coalesce(sum(duration_s), 0) / 3600 AS audio_hours,
       coalesce(sum(speech_s_agent), 0) / 3600 AS agent_speech_hours,
       coalesce(sum(speech_s_customer), 0) / 3600 AS customer_speech_hours,
       count(*) FILTER (WHERE escalated) AS escalated_calls,
       negative_share(customer_negative_share, speech_s_customer) AS customer_negative_share,
       count(DISTINCT agent_id) AS agents,
       count(DISTINCT queue) AS queues,
       min(call_date) AS first_day,
       max(call_date) AS last_day
FROM filtered_calls($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence);
