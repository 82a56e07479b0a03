import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";
import { sql } from "drizzle-orm";
import { RUN_STATUSES } from "../protocol/run-status.ts";

// Column names are snake_case on purpose: people query these tables by hand, so they are API.
// Times are integer epoch milliseconds.

/** One row per workflow run; `last_event_index` is -1 until the first event. */
export const runs = sqliteTable(
  "runs",
  {
    runId: text("run_id").primaryKey(),
    workflowId: text("workflow_id").notNull(),
    workflowName: text("workflow_name").notNull(),
    sessionId: text("session_id").notNull(),
    userId: text("user_id"),
    status: text("status", { enum: RUN_STATUSES }).notNull().default("pending"),
    input: text("input").notNull().default(""),
    additionalData: text("additional_data", { mode: "json" }).$type<unknown>(),
    output: text("output", { mode: "json" }).$type<unknown>(),
    error: text("error"),
    lastEventIndex: integer("last_event_index").notNull().default(-1),
    attempt: integer("attempt").notNull().default(1),
    /** Resumes after an unclean stop (crash, kill -9); the crash loop guard limits these. */
    crashResumes: integer("crash_resumes").notNull().default(0),
    /** Set when a graceful shutdown paused the run; such a resume does not count as a crash. */
    pausedAt: integer("paused_at"),
    cancelRequestedAt: integer("cancel_requested_at"),
    /**
     * What a `waiting` or `paused` run waits for: `timer`, `signal`, `confirmation`,
     * `user_input`, `route_choice`, `tool_confirmation` or `error_decision`; null otherwise.
     */
    waitKind: text("wait_kind"),
    /** The signal's name, or the step (or tool) a person is asked about. */
    waitName: text("wait_name"),
    /** When the wait ends by itself (a timer's wake time, a timeout), epoch ms; null if never. */
    waitUntil: integer("wait_until"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
    startedAt: integer("started_at"),
    finishedAt: integer("finished_at"),
    /** When retention (or `flowd prune`) began removing the finished run's events: from then on reading them answers RUN_EXPIRED. */
    prunedAt: integer("pruned_at"),
    /** The W3C traceparent of the run's first span (OpenTelemetry), which a resumed attempt links to; null if nothing traced it. */
    traceParent: text("trace_parent"),
    /** A removal under way, finished after a crash: "events" (a prune) or "run" (a delete, which ends with this row). */
    removing: text("removing", { enum: ["events", "run"] }),
    /** When a finished run's streamed deltas were folded into RunContentCompacted events (FLOWD_COMPACT_AFTER). */
    compactedAt: integer("compacted_at"),
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
  ],
);

/**
 * Signals sent to a run that was not waiting for them (a mailbox): the first wait for
 * that name takes the oldest, and deletes it in the transaction that records the wait's end.
 */
export const signals = sqliteTable(
  "signals",
  {
    signalId: integer("signal_id").primaryKey({ autoIncrement: true }),
    runId: text("run_id")
      .notNull()
      .references(() => runs.runId, { onDelete: "cascade" }),
    name: text("name").notNull(),
    payload: text("payload", { mode: "json" }).$type<unknown>(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [index("signals_run_name_idx").on(t.runId, t.name, t.signalId)],
);

/** The run event log: `(run_id, event_index)` is the key, indices are 0..N-1 per run (I1). */
export const events = sqliteTable(
  "events",
  {
    runId: text("run_id")
      .notNull()
      .references(() => runs.runId, { onDelete: "cascade" }),
    eventIndex: integer("event_index").notNull(),
    event: text("event").notNull(),
    stepPath: text("step_path"),
    payload: text("payload").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.runId, t.eventIndex] })],
);

/** A run row as the rest of the code sees it. */
export type RunRow = typeof runs.$inferSelect;


/**
 * What a resumed run skips: a completed node's output (leaf step, composite, loop
 * iteration) or a decision (`<path>#decision`: a Condition's result, a Router's choice),
 * written in the same transaction as the event that reports it.
 */
export const stepCheckpoints = sqliteTable(
  "step_checkpoints",
  {
    runId: text("run_id")
      .notNull()
      .references(() => runs.runId, { onDelete: "cascade" }),
    stepPath: text("step_path").notNull(),
    /** The step whose output this is; null for decisions and loop iterations. */
    stepName: text("step_name"),
    output: text("output", { mode: "json" }).$type<unknown>(),
    /** The attempt that completed it. */
    attempt: integer("attempt").notNull(),
    /** The event written with it. */
    eventIndex: integer("event_index").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.runId, t.stepPath] })],
);

/**
 * The server that owns the database (one row at most): a second server, whatever path
 * it opens the file by (a symlink, a hard link), finds it here and refuses to start while
 * that one lives. Deleted at a graceful stop; a killed owner's row is taken over.
 */
export const serverLock = sqliteTable("server_lock", {
  /** Always 1: there is one owner. */
  slot: integer("slot").primaryKey(),
  hostname: text("hostname").notNull(),
  pid: integer("pid").notNull(),
  /** When the owning process started, as the kernel says (tells a reused pid from the owner). */
  processStart: text("process_start"),
  /** The owner's pid namespace: a pid means something only to processes in the same one (containers). */
  pidNamespace: text("pid_namespace"),
  acquiredAt: integer("acquired_at").notNull(),
  /** The owner's last heartbeat: an owner on another host or in another container is gone once this is old. */
  checkedAt: integer("checked_at").notNull(),
});

/**
 * Idempotency keys of starts (`Idempotency-Key`, `idempotency_key`): a repeat of a start
 * within FLOWD_IDEMPOTENCY_TTL returns the run the first one started. Written in the same
 * transaction as that run's row; an expired key is replaced by the next start that uses it.
 */
export const idempotencyKeys = sqliteTable(
  "idempotency_keys",
  {
    workflowId: text("workflow_id").notNull(),
    key: text("key").notNull(),
    /** A hash of what the start asked for (message, additional_data): a repeat must ask the same. */
    requestHash: text("request_hash").notNull(),
    runId: text("run_id")
      .notNull()
      .references(() => runs.runId, { onDelete: "cascade" }),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.workflowId, t.key] })],
);
