/**
 * The PostgreSQL schema: the same tables, columns and meanings as the SQLite one
 * (src/store/schema.ts), so that people query both alike. Times are epoch milliseconds
 * (bigint, read as numbers); JSON columns are jsonb; `events.payload` stays text: it is
 * the frame exactly as sent.
 */
import { sql } from "drizzle-orm";
import { bigint, index, integer, jsonb, pgTable, primaryKey, serial, text } from "drizzle-orm/pg-core";
import { RUN_STATUSES } from "../../protocol/run-status.ts";

const millis = (name: string) => bigint(name, { mode: "number" });

/** One row per workflow run; `last_event_index` is -1 until the first event. */
export const runs = pgTable(
  "runs",
  {
    runId: text("run_id").primaryKey(),
    workflowId: text("workflow_id").notNull(),
    workflowName: text("workflow_name").notNull(),
    sessionId: text("session_id").notNull(),
    userId: text("user_id"),
    status: text("status", { enum: RUN_STATUSES }).notNull().default("pending"),
    input: text("input").notNull().default(""),
    additionalData: jsonb("additional_data").$type<unknown>(),
    output: jsonb("output").$type<unknown>(),
    error: text("error"),
    lastEventIndex: integer("last_event_index").notNull().default(-1),
    attempt: integer("attempt").notNull().default(1),
    crashResumes: integer("crash_resumes").notNull().default(0),
    pausedAt: millis("paused_at"),
    cancelRequestedAt: millis("cancel_requested_at"),
    waitKind: text("wait_kind"),
    waitName: text("wait_name"),
    waitUntil: millis("wait_until"),
    /** PostgreSQL only (many nodes): the node that executes the run, until when, and how many times it changed hands. */
    ownerNode: text("owner_node"),
    leaseUntil: millis("lease_until"),
    leaseEpoch: integer("lease_epoch").notNull().default(0),
    createdAt: millis("created_at").notNull(),
    updatedAt: millis("updated_at").notNull(),
    startedAt: millis("started_at"),
    finishedAt: millis("finished_at"),
    /** When retention (or `flowd prune`) began removing the finished run's events: from then on reading them answers RUN_EXPIRED. */
    prunedAt: millis("pruned_at"),
    /** The W3C traceparent of the run's first span (OpenTelemetry), which a resumed attempt links to; null if nothing traced it. */
    traceParent: text("trace_parent"),
    /** A removal under way, finished after a crash: "events" (a prune) or "run" (a delete, which ends with this row). */
    removing: text("removing", { enum: ["events", "run"] }),
    /** When a finished run's streamed deltas were folded into RunContentCompacted events (FLOWD_COMPACT_AFTER). */
    compactedAt: millis("compacted_at"),
  },
  (t) => [
    index("runs_workflow_created_idx").on(t.workflowId, t.createdAt),
    index("runs_status_idx").on(t.status),
    index("runs_session_idx").on(t.sessionId),
    // A user's own runs, newest first (FLOWD_USER_ISOLATION lists).
    index("runs_user_created_idx").on(t.userId, t.createdAt),
    // What the pruner looks up: finished runs not pruned yet, and removals a crash interrupted.
    index("runs_unpruned_finished_idx").on(t.finishedAt).where(sql`pruned_at IS NULL`),
    index("runs_removing_idx").on(t.removing).where(sql`removing IS NOT NULL`),
    index("runs_lease_idx").on(t.leaseUntil),
  ],
);

/**
 * The run event log: `(run_id, event_index)` is the key, indices are 0..N-1 per run (I1).
 * No foreign key to `runs`, unlike SQLite: PostgreSQL checks one with a query per
 * inserted row, and the batch writer has already updated (and locked) each run row it
 * inserts events for, in the same transaction. Nothing cascades: whatever deletes a run
 * must delete its events itself.
 */
export const events = pgTable(
  "events",
  {
    runId: text("run_id").notNull(),
    eventIndex: integer("event_index").notNull(),
    event: text("event").notNull(),
    stepPath: text("step_path"),
    payload: text("payload").notNull(),
    createdAt: millis("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.runId, t.eventIndex] })],
);

/** What a resumed run skips (see the SQLite schema). */
export const stepCheckpoints = pgTable(
  "step_checkpoints",
  {
    runId: text("run_id")
      .notNull()
      .references(() => runs.runId, { onDelete: "cascade" }),
    stepPath: text("step_path").notNull(),
    stepName: text("step_name"),
    output: jsonb("output").$type<unknown>(),
    attempt: integer("attempt").notNull(),
    eventIndex: integer("event_index").notNull(),
    createdAt: millis("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.runId, t.stepPath] })],
);

/**
 * Idempotency keys of starts (see the SQLite schema). No foreign key to `runs`: with many
 * nodes a start takes its key before its run's row is committed (see
 * RunRecords.reserveIdempotencyKey).
 */
export const idempotencyKeys = pgTable(
  "idempotency_keys",
  {
    workflowId: text("workflow_id").notNull(),
    key: text("key").notNull(),
    requestHash: text("request_hash").notNull(),
    runId: text("run_id").notNull(),
    createdAt: millis("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.workflowId, t.key] })],
);

/** Signals kept for a run's next wait for their name (see the SQLite schema). */
export const signals = pgTable(
  "signals",
  {
    signalId: serial("signal_id").primaryKey(),
    runId: text("run_id")
      .notNull()
      .references(() => runs.runId, { onDelete: "cascade" }),
    name: text("name").notNull(),
    payload: jsonb("payload").$type<unknown>(),
    createdAt: millis("created_at").notNull(),
  },
  (t) => [index("signals_run_name_idx").on(t.runId, t.name, t.signalId)],
);
