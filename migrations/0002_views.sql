-- Views for people who query runs with the sqlite3 shell: readable UTC times, durations in seconds.
CREATE VIEW `run_overview` AS
SELECT
  r.run_id,
  r.workflow_id,
  r.status,
  r.last_event_index + 1 AS events,
  r.attempt,
  strftime('%Y-%m-%d %H:%M:%f', r.created_at / 1000.0, 'unixepoch') AS created,
  strftime('%Y-%m-%d %H:%M:%f', r.started_at / 1000.0, 'unixepoch') AS started,
  strftime('%Y-%m-%d %H:%M:%f', r.finished_at / 1000.0, 'unixepoch') AS finished,
  round((coalesce(r.finished_at, r.updated_at) - coalesce(r.started_at, r.created_at)) / 1000.0, 3) AS duration_s,
  r.error,
  r.session_id,
  r.user_id
FROM runs r;
--> statement-breakpoint
-- One row per step execution that ended (completed or failed), from its StepCompleted/StepError event.
CREATE VIEW `step_timings` AS
SELECT
  e.run_id,
  e.step_path,
  json_extract(e.payload, '$.step_name') AS step_name,
  CASE e.event WHEN 'StepCompleted' THEN 'completed' ELSE 'error' END AS outcome,
  json_extract(e.payload, '$.duration_ms') AS duration_ms,
  strftime('%Y-%m-%d %H:%M:%f', (e.created_at - json_extract(e.payload, '$.duration_ms')) / 1000.0, 'unixepoch') AS started,
  strftime('%Y-%m-%d %H:%M:%f', e.created_at / 1000.0, 'unixepoch') AS finished,
  e.event_index
FROM events e
WHERE e.event IN ('StepCompleted', 'StepError');
--> statement-breakpoint
CREATE VIEW `event_log` AS
SELECT
  e.run_id,
  e.event_index,
  e.event,
  e.step_path,
  strftime('%Y-%m-%d %H:%M:%f', e.created_at / 1000.0, 'unixepoch') AS at,
  e.payload
FROM events e;
