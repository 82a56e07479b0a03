DROP INDEX `runs_finished_idx`;--> statement-breakpoint
ALTER TABLE `runs` ADD `removing` text;--> statement-breakpoint
CREATE INDEX `runs_unpruned_finished_idx` ON `runs` (`finished_at`) WHERE pruned_at IS NULL;--> statement-breakpoint
CREATE INDEX `runs_removing_idx` ON `runs` (`removing`) WHERE removing IS NOT NULL;--> statement-breakpoint
-- A prune that a crash interrupted before this column existed: the pruner finishes it.
UPDATE `runs` SET `removing` = 'events' WHERE pruned_at IS NOT NULL AND EXISTS (SELECT 1 FROM `events` e WHERE e.run_id = runs.run_id);
