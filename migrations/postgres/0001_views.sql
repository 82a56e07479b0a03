-- Views for people who query runs with psql: UTC timestamps, durations in seconds, the same
-- names and columns as on SQLite, so the README's queries run on both.
CREATE VIEW run_overview AS
SELECT
  r.run_id,
  r.workflow_id,
  r.status,
  r.last_event_index + 1 AS events,
  r.attempt,
  to_timestamp(r.created_at / 1000.0) AT TIME ZONE 'UTC' AS created,
  to_timestamp(r.started_at / 1000.0) AT TIME ZONE 'UTC' AS started,
  to_timestamp(r.finished_at / 1000.0) AT TIME ZONE 'UTC' AS finished,
  round((coalesce(r.finished_at, r.updated_at) - coalesce(r.started_at, r.created_at)) / 1000.0, 3) AS duration_s,
  r.error,
  r.session_id,
  r.user_id,
  r.wait_kind,
  r.wait_name,
  to_timestamp(r.wait_until / 1000.0) AT TIME ZONE 'UTC' AS wait_until
FROM runs r;
--> statement-breakpoint
-- One row per step execution that ended (completed or failed), from its StepCompleted/StepError event.
CREATE VIEW step_timings AS
SELECT
  e.run_id,
  e.step_path,
  e.payload::jsonb ->> 'step_name' AS step_name,
  CASE e.event WHEN 'StepCompleted' THEN 'completed' ELSE 'error' END AS outcome,
  (e.payload::jsonb ->> 'duration_ms')::numeric AS duration_ms,
  to_timestamp((e.created_at - (e.payload::jsonb ->> 'duration_ms')::numeric) / 1000.0) AT TIME ZONE 'UTC' AS started,
  to_timestamp(e.created_at / 1000.0) AT TIME ZONE 'UTC' AS finished,
  e.event_index
FROM events e
WHERE e.event IN ('StepCompleted', 'StepError');
--> statement-breakpoint
CREATE VIEW event_log AS
SELECT
  e.run_id,
  e.event_index,
  e.event,
  e.step_path,
  to_timestamp(e.created_at / 1000.0) AT TIME ZONE 'UTC' AS at,
  e.payload
FROM events e;
