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

-- The 95 % interval of a group's customer negative share (negative_share), as its half
-- width: over two or more calls, the spread of the calls around the group's share (a
-- ratio estimate's variance, with the n / (n - 1) small-sample factor); for a single call,
-- that call's own stored 95 % interval (none in older folders: no interval). A systematic
-- bias of the model is in neither (docs/analytics.md measures it on the call benchmark).
CREATE MACRO share_spread(share, group_share, speech) AS
    sum(speech * speech * (share - group_share) ^ 2);
CREATE MACRO share_half_width(calls, spread, speech, low, high) AS
    CASE WHEN calls >= 2 THEN 1.96 * sqrt(spread * calls / (calls - 1)) / nullif(speech, 0)
         WHEN calls = 1 THEN (high - low) / 2
    END;
