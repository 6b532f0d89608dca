-- name: top_escalated
-- description: The escalated calls, steepest rise of customer negative emotion first (escalation_slope: customer negative probability per minute).
-- params: date_from date, date_to date, queue text, agent text, role text, emotion text,
-- params: min_confidence float = 0
-- params: limit int = 20
SELECT call_id, call_date, started_at, agent_id, queue, duration_s,
       escalation_slope, customer_negative_share,
       peak_negative_emotion, peak_negative_confidence, peak_negative_at_s, source_file
FROM filtered_calls($date_from, $date_to, $queue, $agent, $role, $emotion, $min_confidence)
WHERE escalated
ORDER BY escalation_slope DESC NULLS LAST, peak_negative_confidence DESC NULLS LAST, call_id
LIMIT $limit;
