-- Filter macros shared by the canned queries (dashboard/queries/*.sql).
--
-- Every canned query takes the same dashboard filters, bound as parameters; NULL means
-- "any", and the agent or queue '(none)' means the calls without one (the agents and
-- queues tables list them under that name). Call-level filters (dates, queue, agent) select calls; an emotion keeps the
-- calls that have at least one segment with that emotion (of the role, if one is given,
-- at or above the minimum confidence). Segment-level filters (role, minimum confidence)
-- then select the segments of those calls. Dates are days in the connection's time zone
-- (call_date); the conditions on utc_date, a day wider, only let DuckDB skip the files of
-- UTC days that cannot hold such calls.

CREATE MACRO filtered_calls(f_date_from, f_date_to, f_queue, f_agent, f_role, f_emotion,
                            f_min_confidence) AS TABLE
SELECT c.*
FROM calls AS c
WHERE (f_date_from IS NULL OR (c.call_date >= CAST(f_date_from AS DATE)
                              AND c.utc_date >= CAST(f_date_from AS DATE) - 1))
  AND (f_date_to IS NULL OR (c.call_date <= CAST(f_date_to AS DATE)
                            AND c.utc_date <= CAST(f_date_to AS DATE) + 1))
  AND (f_queue IS NULL OR coalesce(c.queue, '(none)') = f_queue)
  AND (f_agent IS NULL OR coalesce(c.agent_id, '(none)') = f_agent)
  AND (f_emotion IS NULL OR c.call_id IN (
        SELECT s.call_id
        FROM segments AS s
        WHERE s.emotion = f_emotion
          AND (f_role IS NULL OR s.role = f_role)
          AND s.confidence >= coalesce(f_min_confidence, 0)
          AND (f_date_from IS NULL OR s.utc_date >= CAST(f_date_from AS DATE) - 1)
          AND (f_date_to IS NULL OR s.utc_date <= CAST(f_date_to AS DATE) + 1)));

-- Segments of the filtered calls, with their duration and whether the emotion is negative
-- (emotion_labels.negative: labels.json's valence, or the default negative set).
CREATE MACRO filtered_segments(f_date_from, f_date_to, f_queue, f_agent, f_role, f_emotion,
                               f_min_confidence) AS TABLE
SELECT s.*,
       s.end_s - s.start_s AS duration_s,
       coalesce(l.negative, false) AS negative
FROM segments AS s
LEFT JOIN emotion_labels AS l ON l.label = s.emotion
WHERE (f_role IS NULL OR s.role = f_role)
  AND s.confidence >= coalesce(f_min_confidence, 0)
  AND (f_date_from IS NULL OR s.utc_date >= CAST(f_date_from AS DATE) - 1)
  AND (f_date_to IS NULL OR s.utc_date <= CAST(f_date_to AS DATE) + 1)
  AND s.call_id IN (
        SELECT call_id
        FROM filtered_calls(f_date_from, f_date_to, f_queue, f_agent, f_role, f_emotion,
                            f_min_confidence));

-- Speech-time weighted customer negative share of a group of calls.
CREATE MACRO negative_share(share, speech) AS
    sum(share * speech) / nullif(sum(speech) FILTER (WHERE share IS NOT NULL), 0);

-- One call's part of the variance of its group's customer negative share (negative_share):
-- how far the call lies from the group's share (the spread over calls of a ratio estimate)
-- plus the call's own uncertainty (its stored 95 % interval; none in older folders),
-- weighted by its customer speech. The group's 95 % interval is the share
-- +- 1.96 * sqrt(sum of the parts) / (its customer speech), so a figure over 5 calls reads
-- wider than one over 500.
CREATE MACRO share_variance_part(share, group_share, speech, low, high) AS
    speech * speech * ((share - group_share) ^ 2 + coalesce(((high - low) / 3.92) ^ 2, 0));
