ALTER TABLE "events" DROP CONSTRAINT "events_run_id_runs_run_id_fk";
