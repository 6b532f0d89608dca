-- name: calls_list
-- description: The calls matching the filters, newest first (the first `limit`, and the call `call_id` wherever it ranks), with their metadata and how many calls match (for the call explorer).
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
-- params: limit int = 500, call_id text
WITH matching AS (
    SELECT call_id, call_date, started_at, agent_id, queue, duration_s, n_segments,
           speech_s_agent, speech_s_customer, customer_negative_share,
           customer_negative_share_low, customer_negative_share_high, escalated,
           live_alert_at_s, escalation_slope, peak_negative_emotion, peak_negative_confidence,
           peak_negative_at_s, customer_channel, source_file, model_name, model_version,
           scored_at,
           row_number() OVER (ORDER BY started_at DESC NULLS LAST, call_id) AS rank,
           count(*) OVER () AS matching_calls
    FROM filtered_calls($date_from, $date_to, $queue, $agent, $role, $emotion,
                        $min_confidence)
)
SELECT * EXCLUDE (rank)
FROM matching
WHERE rank <= $limit OR call_id = $call_id
ORDER BY rank;
