import { and, desc, eq, gte, sql, type SQL } from "drizzle-orm";
import type { RunStatus } from "../protocol/run-status.ts";
import type { Db } from "./db.ts";
import { idempotencyKeys, runs, type RunRow } from "./schema.ts";

/** Filters for listing runs. */
export interface RunFilter {
  workflowId?: string;
  sessionId?: string;
  status?: RunStatus;
  limit?: number;
  offset?: number;
}

/**
 * Run rows: lookup, listing and cancel requests. Rows are created by EventLog.createRun
 * (in the group commit of the run's first event) and advanced only by its events.
 */
export class RunStore {
  // Every reconnect and run request looks a run up: compiled once, not on every call.
  private readonly selectRun;

  constructor(private readonly db: Db) {
    this.selectRun = db.orm.select().from(runs).where(eq(runs.runId, sql.placeholder("runId"))).prepare();
  }

  /** The run row, or undefined for an unknown id. */
  get(runId: string): RunRow | undefined {
    return this.selectRun.get({ runId });
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

  /** The run a start with this key created at or after `notBefore` (epoch ms), with what that start asked for. */
  idempotentStart(workflowId: string, key: string, notBefore: number): { run: RunRow; requestHash: string } | undefined {
    return this.db.orm
      .select({ run: runs, requestHash: idempotencyKeys.requestHash })
      .from(idempotencyKeys)
      .innerJoin(runs, eq(runs.runId, idempotencyKeys.runId))
      .where(and(eq(idempotencyKeys.workflowId, workflowId), eq(idempotencyKeys.key, key), gte(idempotencyKeys.createdAt, notBefore)))
      .get();
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
