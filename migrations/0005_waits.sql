CREATE TABLE `signals` (
	`signal_id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`run_id` text NOT NULL,
	`name` text NOT NULL,
	`payload` text,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`run_id`) REFERENCES `runs`(`run_id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `signals_run_name_idx` ON `signals` (`run_id`,`name`,`signal_id`);--> statement-breakpoint
ALTER TABLE `runs` ADD `wait_kind` text;--> statement-breakpoint
ALTER TABLE `runs` ADD `wait_name` text;--> statement-breakpoint
ALTER TABLE `runs` ADD `wait_until` integer;--> statement-breakpoint
-- run_overview shows what a waiting or paused run waits for, and until when.
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
  strftime('%Y-%m-%d %H:%M:%f', r.wait_until / 1000.0, 'unixepoch') AS wait_until
FROM runs r;
