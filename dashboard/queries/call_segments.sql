-- name: call_segments
-- description: The segments of one call in time order (role and minimum confidence filters apply), with each segment's duration and whether its emotion is negative.
-- params: call_id text, role text, min_confidence float = 0
SELECT *
FROM filtered_segments(NULL, NULL, NULL, NULL, $role, NULL, $min_confidence)
WHERE call_id = $call_id
ORDER BY start_s, channel;
