ALTER TABLE "idempotency_keys" DROP CONSTRAINT "idempotency_keys_run_id_runs_run_id_fk";
