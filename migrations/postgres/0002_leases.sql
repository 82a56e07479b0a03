ALTER TABLE "runs" ADD COLUMN "owner_node" text;--> statement-breakpoint
ALTER TABLE "runs" ADD COLUMN "lease_until" bigint;--> statement-breakpoint
ALTER TABLE "runs" ADD COLUMN "lease_epoch" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX "runs_lease_idx" ON "runs" USING btree ("lease_until");