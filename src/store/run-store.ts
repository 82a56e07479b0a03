import { and, count, desc, eq, gte, inArray, sql, type SQL } from "drizzle-orm";
import { Errors } from "../errors.ts";
import type { Db } from "./db.ts";
import { idempotencyKeys, runs, signals, type RunRow } from "./schema.ts";

import type { RunFilter, RunRecords, StoredSignal, WaitColumns } from "./store.ts";

/**
 * Run rows: lookup, listing and cancel requests. Rows are created by EventLog.createRun
 * (in the group commit of the run's first event) and advanced only by its events.
 */
export class RunStore implements RunRecords {
  // Every reconnect and run request looks a run up: compiled once, not on every call.
  private readonly selectRun;

  constructor(private readonly db: Db) {
    this.selectRun = db.orm.select().from(runs).where(eq(runs.runId, sql.placeholder("runId"))).prepare();
  }

  /** The run row, or undefined for an unknown id. */
  async get(runId: string): Promise<RunRow | undefined> {
    return this.selectRun.get({ runId });
  }

  /** Newest first. */
  async suspendedCounts(): Promise<{ paused: number; waiting: number }> {
    const rows = await this.db.orm
      .select({ status: runs.status, count: count() })
      .from(runs)
      .where(inArray(runs.status, ["paused", "waiting"]))
      .groupBy(runs.status)
      .all();
    const of = (status: string): number => Number(rows.find((row) => row.status === status)?.count ?? 0);
    return { paused: of("paused"), waiting: of("waiting") };
  }

  async list(filter: RunFilter = {}): Promise<RunRow[]> {
    const conditions: SQL[] = [];
    if (filter.workflowId) conditions.push(eq(runs.workflowId, filter.workflowId));
    if (filter.sessionId) conditions.push(eq(runs.sessionId, filter.sessionId));
    if (filter.status) conditions.push(eq(runs.status, filter.status));
    if (filter.userId !== undefined) conditions.push(eq(runs.userId, filter.userId));
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
  /** One process writes a SQLite file: the key is stored with the run's row (EventLog), and read before (idempotentStart). */
  async reserveIdempotencyKey(): Promise<null> {
    return null;
  }

  async idempotentStart(workflowId: string, key: string, notBefore: number): Promise<{ run: RunRow; requestHash: string } | undefined> {
    return this.db.orm
      .select({ run: runs, requestHash: idempotencyKeys.requestHash })
      .from(idempotencyKeys)
      .innerJoin(runs, eq(runs.runId, idempotencyKeys.runId))
      .where(and(eq(idempotencyKeys.workflowId, workflowId), eq(idempotencyKeys.key, key), gte(idempotencyKeys.createdAt, notBefore)))
      .get();
  }

  /** Marks a run that a graceful shutdown stopped between steps: its resume is not a crash. */
  async markPaused(runId: string): Promise<void> {
    const now = Date.now();
    this.db.orm.update(runs).set({ pausedAt: now, updatedAt: now }).where(eq(runs.runId, runId)).run();
  }

  /**
   * Marks a run suspended again on waits its earlier execution opened (no new event says
   * so: a Parallel branch went on while another still waits).
   */
  async markSuspended(runId: string, wait: WaitColumns): Promise<void> {
    const now = Date.now();
    this.db.orm.update(runs).set({ ...wait, updatedAt: now }).where(eq(runs.runId, runId)).run();
  }

  /** Keeps a signal for the run's next wait for `name`; committed when this returns. Refused past `limit` kept signals. */
  async keepSignal(runId: string, name: string, payload: unknown, limit: number): Promise<number> {
    const kept = this.db.orm.select({ n: sql<number>`count(*)` }).from(signals).where(eq(signals.runId, runId)).get()?.n ?? 0;
    if (kept >= limit) throw Errors.tooManySignals(runId, limit);
    const row = this.db.orm.insert(signals).values({ runId, name, payload, createdAt: Date.now() }).returning({ signalId: signals.signalId }).get();
    return row.signalId;
  }

  /** The oldest kept signal named `name` for the run, skipping `taken` ones (claimed by a write not yet committed). */
  async oldestSignal(runId: string, name: string, taken: ReadonlySet<number>): Promise<StoredSignal | undefined> {
    const rows = this.db.orm
      .select({ signalId: signals.signalId, payload: signals.payload })
      .from(signals)
      .where(and(eq(signals.runId, runId), eq(signals.name, name)))
      .orderBy(signals.signalId)
      .limit(taken.size + 1)
      .all();
    return rows.find((row) => !taken.has(row.signalId));
  }

  /** Records that a cancel was asked for, so it is honoured even if the process dies first. */
  async markCancelRequested(runId: string): Promise<void> {
    const now = Date.now();
    this.db.orm.update(runs).set({ cancelRequestedAt: now, updatedAt: now }).where(eq(runs.runId, runId)).run();
  }
}
