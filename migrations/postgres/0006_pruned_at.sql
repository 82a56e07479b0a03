ALTER TABLE "runs" ADD COLUMN "pruned_at" bigint;--> statement-breakpoint
CREATE INDEX "runs_finished_idx" ON "runs" USING btree ("finished_at");--> statement-breakpoint
DROP VIEW run_overview;--> statement-breakpoint
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
  to_timestamp(r.wait_until / 1000.0) AT TIME ZONE 'UTC' AS wait_until,
  to_timestamp(r.pruned_at / 1000.0) AT TIME ZONE 'UTC' AS pruned
FROM runs r;
