CREATE TABLE "events" (
	"run_id" text NOT NULL,
	"event_index" integer NOT NULL,
	"event" text NOT NULL,
	"step_path" text,
	"payload" text NOT NULL,
	"created_at" bigint NOT NULL,
	CONSTRAINT "events_run_id_event_index_pk" PRIMARY KEY("run_id","event_index")
);
--> statement-breakpoint
CREATE TABLE "idempotency_keys" (
	"workflow_id" text NOT NULL,
	"key" text NOT NULL,
	"request_hash" text NOT NULL,
	"run_id" text NOT NULL,
	"created_at" bigint NOT NULL,
	CONSTRAINT "idempotency_keys_workflow_id_key_pk" PRIMARY KEY("workflow_id","key")
);
--> statement-breakpoint
CREATE TABLE "runs" (
	"run_id" text PRIMARY KEY NOT NULL,
	"workflow_id" text NOT NULL,
	"workflow_name" text NOT NULL,
	"session_id" text NOT NULL,
	"user_id" text,
	"status" text DEFAULT 'pending' NOT NULL,
	"input" text DEFAULT '' NOT NULL,
	"additional_data" jsonb,
	"output" jsonb,
	"error" text,
	"last_event_index" integer DEFAULT -1 NOT NULL,
	"attempt" integer DEFAULT 1 NOT NULL,
	"crash_resumes" integer DEFAULT 0 NOT NULL,
	"paused_at" bigint,
	"cancel_requested_at" bigint,
	"wait_kind" text,
	"wait_name" text,
	"wait_until" bigint,
	"created_at" bigint NOT NULL,
	"updated_at" bigint NOT NULL,
	"started_at" bigint,
	"finished_at" bigint
);
--> statement-breakpoint
CREATE TABLE "signals" (
	"signal_id" serial PRIMARY KEY NOT NULL,
	"run_id" text NOT NULL,
	"name" text NOT NULL,
	"payload" jsonb,
	"created_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "step_checkpoints" (
	"run_id" text NOT NULL,
	"step_path" text NOT NULL,
	"step_name" text,
	"output" jsonb,
	"attempt" integer NOT NULL,
	"event_index" integer NOT NULL,
	"created_at" bigint NOT NULL,
	CONSTRAINT "step_checkpoints_run_id_step_path_pk" PRIMARY KEY("run_id","step_path")
);
--> statement-breakpoint
ALTER TABLE "events" ADD CONSTRAINT "events_run_id_runs_run_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("run_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD CONSTRAINT "idempotency_keys_run_id_runs_run_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("run_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "signals" ADD CONSTRAINT "signals_run_id_runs_run_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("run_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "step_checkpoints" ADD CONSTRAINT "step_checkpoints_run_id_runs_run_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("run_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "runs_workflow_created_idx" ON "runs" USING btree ("workflow_id","created_at");--> statement-breakpoint
CREATE INDEX "runs_status_idx" ON "runs" USING btree ("status");--> statement-breakpoint
CREATE INDEX "runs_session_idx" ON "runs" USING btree ("session_id");--> statement-breakpoint
CREATE INDEX "signals_run_name_idx" ON "signals" USING btree ("run_id","name","signal_id");