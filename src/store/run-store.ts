import { and, desc, eq, type SQL } from "drizzle-orm";
import type { RunStatus } from "../protocol/run-status.ts";
import type { Db } from "./db.ts";
import { runs, type RunRow } from "./schema.ts";

/** What creating a run needs. */
export interface NewRun {
  runId: string;
  workflowId: string;
  workflowName: string;
  sessionId: string;
  userId: string | null;
  input: string;
  additionalData: unknown;
}

/** Filters for listing runs. */
export interface RunFilter {
  workflowId?: string;
  sessionId?: string;
  status?: RunStatus;
  limit?: number;
  offset?: number;
}

/** Run rows: creation, lookup, listing and cancel requests. Events go through EventLog only. */
export class RunStore {
  // Creating a run is on the path of every start: a prepared statement, not a query built per call.
  private readonly insertRun;
  private readonly syncLevel: number;

  constructor(private readonly db: Db) {
    this.syncLevel = db.sqlite.readonly ? 0 : (db.sqlite.pragma("synchronous", { simple: true }) as number);
    this.insertRun = db.sqlite.prepare<[string, string, string, string, string | null, string, string | null, number, number]>(
      `INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
  }

  /**
   * Inserts a run in `pending` with no events. Its commit skips the fsync: nobody has
   * been told about the run yet, and the WAL is written in order, so the next group
   * commit (which carries WorkflowStarted, the first thing anyone sees) makes it durable.
   * With synchronous=FULL an fsync per new run would otherwise cost ~1 ms each.
   */
  create(run: NewRun): RunRow {
    const now = Date.now();
    const { sqlite } = this.db;
    const sync = this.syncLevel;
    if (sync > 1) sqlite.pragma("synchronous = NORMAL");
    const additionalData = run.additionalData ?? null;
    try {
      this.insertRun.run(
        run.runId,
        run.workflowId,
        run.workflowName,
        run.sessionId,
        run.userId,
        run.input,
        additionalData === null ? null : JSON.stringify(additionalData),
        now,
        now,
      );
    } finally {
      if (sync > 1) sqlite.pragma(`synchronous = ${sync}`);
    }
    // The row as the column defaults make it.
    return {
      ...run,
      additionalData,
      status: "pending",
      output: null,
      error: null,
      lastEventIndex: -1,
      attempt: 1,
      crashResumes: 0,
      pausedAt: null,
      cancelRequestedAt: null,
      createdAt: now,
      updatedAt: now,
      startedAt: null,
      finishedAt: null,
    };
  }

  /** The run row, or undefined for an unknown id. */
  get(runId: string): RunRow | undefined {
    return this.db.orm.select().from(runs).where(eq(runs.runId, runId)).get();
  }

  /** Newest first. */
  list(filter: RunFilter = {}): RunRow[] {
    const conditions: SQL[] = [];
    if (filter.workflowId) conditions.push(eq(runs.workflowId, filter.workflowId));
    if (filter.sessionId) conditions.push(eq(runs.sessionId, filter.sessionId));
    if (filter.status) conditions.push(eq(runs.status, filter.status));
    return this.db.orm
      .select()
      .from(runs)
      .where(and(...conditions))
      .orderBy(desc(runs.createdAt))
      .limit(filter.limit ?? 100)
      .offset(filter.offset ?? 0)
      .all();
  }

  /** Marks a run that a graceful shutdown stopped between steps: its resume is not a crash. */
  markPaused(runId: string): void {
    const now = Date.now();
    this.db.orm.update(runs).set({ pausedAt: now, updatedAt: now }).where(eq(runs.runId, runId)).run();
  }

  /** Records that a cancel was asked for, so it is honoured even if the process dies first. */
  markCancelRequested(runId: string): void {
    const now = Date.now();
    this.db.orm.update(runs).set({ cancelRequestedAt: now, updatedAt: now }).where(eq(runs.runId, runId)).run();
  }
}
