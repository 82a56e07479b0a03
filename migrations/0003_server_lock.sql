CREATE TABLE `server_lock` (
	`slot` integer PRIMARY KEY NOT NULL,
	`hostname` text NOT NULL,
	`pid` integer NOT NULL,
	`process_start` text,
	`acquired_at` integer NOT NULL,
	`checked_at` integer NOT NULL
);
