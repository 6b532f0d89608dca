-- name: run_status
-- description: Nightly runs: how many, the last one (id, finish time, status, files scored and failed, model) and the error count, in all and in the last run.
SELECT (SELECT count(*) FROM runs) AS runs,
       last.run_id AS last_run_id,
       last.finished_at AS last_run_finished_at,
       last.files_scored AS last_run_files_scored,
       last.files_failed AS last_run_files_failed,
       last.model_name AS last_run_model,
       last.status AS last_run_status,
       (SELECT count(*) FROM errors) AS errors,
       (SELECT count(*) FROM errors WHERE run_id = last.run_id) AS last_run_errors
FROM (SELECT 1) AS one
LEFT JOIN (SELECT * FROM runs ORDER BY finished_at DESC LIMIT 1) AS last ON true;
