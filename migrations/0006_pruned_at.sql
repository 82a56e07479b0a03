ALTER TABLE `runs` ADD `pruned_at` integer;--> statement-breakpoint
CREATE INDEX `runs_finished_idx` ON `runs` (`finished_at`);--> statement-breakpoint
DROP VIEW `run_overview`;--> statement-breakpoint
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
  r.user_id,
  r.wait_kind,
  r.wait_name,
  strftime('%Y-%m-%d %H:%M:%f', r.wait_until / 1000.0, 'unixepoch') AS wait_until,
  strftime('%Y-%m-%d %H:%M:%f', r.pruned_at / 1000.0, 'unixepoch') AS pruned
FROM runs r;
