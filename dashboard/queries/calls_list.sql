-- name: calls_list
-- description: The calls matching the filters, newest first, with their metadata (for the call explorer).
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
-- params: limit int = 500
SELECT call_id, call_date, started_at, agent_id, queue, duration_s, n_segments,
       speech_s_agent, speech_s_customer, customer_negative_share, escalated,
       escalation_slope, peak_negative_emotion, peak_negative_confidence,
       peak_negative_at_s, customer_channel, source_file, model_name, model_version,
       scored_at
FROM filtered_calls($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence)
ORDER BY started_at DESC NULLS LAST, call_id
LIMIT $limit;
