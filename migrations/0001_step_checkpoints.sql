CREATE TABLE `step_checkpoints` (
	`run_id` text NOT NULL,
	`step_path` text NOT NULL,
	`step_name` text,
	`output` text,
	`attempt` integer NOT NULL,
	`event_index` integer NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`run_id`, `step_path`),
	FOREIGN KEY (`run_id`) REFERENCES `runs`(`run_id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
ALTER TABLE `runs` ADD `crash_resumes` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `runs` ADD `paused_at` integer;