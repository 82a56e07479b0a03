CREATE TABLE IF NOT EXISTS `server_lock` (
	`slot` integer PRIMARY KEY NOT NULL,
	`hostname` text NOT NULL,
	`pid` integer NOT NULL,
	`process_start` text,
	`pid_namespace` text,
	`acquired_at` integer NOT NULL,
	`checked_at` integer NOT NULL
);
