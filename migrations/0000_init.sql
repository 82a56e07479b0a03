CREATE TABLE `events` (
	`run_id` text NOT NULL,
	`event_index` integer NOT NULL,
	`event` text NOT NULL,
	`step_path` text,
	`payload` text NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`run_id`, `event_index`),
	FOREIGN KEY (`run_id`) REFERENCES `runs`(`run_id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `runs` (
	`run_id` text PRIMARY KEY NOT NULL,
	`workflow_id` text NOT NULL,
	`workflow_name` text NOT NULL,
	`session_id` text NOT NULL,
	`user_id` text,
	`status` text DEFAULT 'pending' NOT NULL,
	`input` text DEFAULT '' NOT NULL,
	`additional_data` text,
	`output` text,
	`error` text,
	`last_event_index` integer DEFAULT -1 NOT NULL,
	`attempt` integer DEFAULT 1 NOT NULL,
	`cancel_requested_at` integer,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`started_at` integer,
	`finished_at` integer
);
--> statement-breakpoint
CREATE INDEX `runs_workflow_created_idx` ON `runs` (`workflow_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `runs_status_idx` ON `runs` (`status`);--> statement-breakpoint
CREATE INDEX `runs_session_idx` ON `runs` (`session_id`);