import type { Database, Statement } from "better-sqlite3";
import { and, asc, eq, inArray, isNull, lt, notInArray } from "drizzle-orm";
import { Errors } from "../errors.ts";
import { FINISHED_STATUSES, type RunStatus } from "../protocol/run-status.ts";
import { planFolds, type DeltaRow } from "./compaction.ts";
import type { Db } from "./db.ts";
import { runs } from "./schema.ts";
import type { ExpiredFilter, ExpiredRun, RunRetention } from "./store.ts";

const FINISHED = [...FINISHED_STATUSES] as RunStatus[];

/** Retention on SQLite: each step one short transaction on the server's connection, between group commits. */
export class SqliteRetention implements RunRetention {
  private readonly markPruned: Statement<[number, string]>;
  private readonly deleteOldest: Statement<[string, string, number]>;
  private readonly anyEvent: Statement<[string], { one: number }>;
  private readonly status: Statement<[string], { status: RunStatus }>;
  private readonly forget: ((runId: string) => void)[];
  private readonly step: (runId: string, maxEvents: number, now: number) => { deleted: number; done: boolean } | null;
  private readonly remove: (runId: string) => void;

  constructor(private readonly db: Db) {
    const sqlite: Database = db.sqlite;
    this.markPruned = sqlite.prepare(`UPDATE runs SET pruned_at = coalesce(pruned_at, ?) WHERE run_id = ? AND status IN ('completed', 'error', 'cancelled')`);
    // The oldest `maxEvents` of the run's events: a range of the primary key.
    this.deleteOldest = sqlite.prepare("DELETE FROM events WHERE run_id = ? AND event_index < (SELECT coalesce(min(event_index), 0) FROM events WHERE run_id = ?) + ?");
    this.anyEvent = sqlite.prepare("SELECT 1 AS one FROM events WHERE run_id = ? LIMIT 1");
    this.status = sqlite.prepare("SELECT status FROM runs WHERE run_id = ?");
    // Idempotency keys stay (they expire by their own TTL): a repeat of a pruned run's start still finds it.
    const deletes = ["step_checkpoints", "signals"].map((table) => sqlite.prepare<[string]>(`DELETE FROM ${table} WHERE run_id = ?`));
    this.forget = deletes.map((statement) => (runId: string) => void statement.run(runId));
    const deleteKeys = sqlite.prepare<[string]>("DELETE FROM idempotency_keys WHERE run_id = ?");
    const deleteEvents = sqlite.prepare<[string]>("DELETE FROM events WHERE run_id = ?");
    const deleteRow = sqlite.prepare<[string]>("DELETE FROM runs WHERE run_id = ?");
    this.step = sqlite.transaction((runId: string, maxEvents: number, now: number) => {
      if (this.markPruned.run(now, runId).changes === 0) return null;
      const deleted = this.deleteOldest.run(runId, runId, maxEvents).changes;
      const done = this.anyEvent.get(runId) === undefined;
      // What only a run that goes on needs (checkpoints, kept signals) goes with its last events.
      if (done) for (const forget of this.forget) forget(runId);
      return { deleted, done };
    });
    this.remove = sqlite.transaction((runId: string) => {
      const run = this.status.get(runId);
      if (!run) throw Errors.runNotFound(runId);
      if (!FINISHED_STATUSES.has(run.status)) throw Errors.runNotFinished(runId, run.status, "deleted");
      deleteEvents.run(runId);
      for (const forget of this.forget) forget(runId);
      deleteKeys.run(runId);
      deleteRow.run(runId);
    });
  }

  async expired(filter: ExpiredFilter): Promise<ExpiredRun[]> {
    const rows = this.db.orm
      .select({ runId: runs.runId, workflowId: runs.workflowId, finishedAt: runs.finishedAt, lastEventIndex: runs.lastEventIndex })
      .from(runs)
      .where(
        and(
          inArray(runs.status, FINISHED),
          isNull(runs.prunedAt),
          lt(runs.finishedAt, filter.finishedBefore),
          filter.workflowId === undefined ? undefined : eq(runs.workflowId, filter.workflowId),
          filter.exceptWorkflows && filter.exceptWorkflows.length > 0 ? notInArray(runs.workflowId, [...filter.exceptWorkflows]) : undefined,
        ),
      )
      .orderBy(asc(runs.finishedAt))
      .limit(filter.limit)
      .all();
    return rows.map((row) => ({ runId: row.runId, workflowId: row.workflowId, finishedAt: row.finishedAt ?? 0, events: row.lastEventIndex + 1 }));
  }

  async unfinishedPrunes(limit: number): Promise<string[]> {
    const rows = this.db.sqlite
      .prepare<[number], { run_id: string }>("SELECT run_id FROM runs r WHERE pruned_at IS NOT NULL AND EXISTS (SELECT 1 FROM events e WHERE e.run_id = r.run_id) LIMIT ?")
      .all(limit);
    return rows.map((row) => row.run_id);
  }

  async pruneStep(runId: string, maxEvents: number, now: number): Promise<{ deleted: number; done: boolean } | null> {
    return this.step(runId, maxEvents, now);
  }

  async deleteRun(runId: string): Promise<void> {
    this.remove(runId);
  }

  async compactable(finishedBefore: number, limit: number): Promise<string[]> {
    return this.db.sqlite
      .prepare<[number, number], { run_id: string }>(
        "SELECT run_id FROM runs WHERE status IN ('completed', 'error', 'cancelled') AND pruned_at IS NULL AND compacted_at IS NULL AND finished_at < ? ORDER BY finished_at LIMIT ?",
      )
      .all(finishedBefore, limit)
      .map((row) => row.run_id);
  }

  async compactRun(runId: string, now: number): Promise<number> {
    const sqlite = this.db.sqlite;
    const fold = sqlite.transaction(() => {
      const rows = sqlite
        .prepare<[string], DeltaRow>("SELECT event_index AS \"index\", payload FROM events WHERE run_id = ? AND event = 'RunContent' ORDER BY event_index")
        .all(runId);
      const replace = sqlite.prepare<[string, string, number]>("UPDATE events SET event = 'RunContentCompacted', payload = ? WHERE run_id = ? AND event_index = ?");
      const remove = sqlite.prepare<[string, number, number]>("DELETE FROM events WHERE run_id = ? AND event_index > ? AND event_index <= ?");
      let removed = 0;
      for (const { first, last, frame } of planFolds(rows)) {
        replace.run(frame, runId, first);
        removed += remove.run(runId, first, last).changes;
      }
      sqlite.prepare<[number, string]>("UPDATE runs SET compacted_at = ? WHERE run_id = ? AND status IN ('completed', 'error', 'cancelled')").run(now, runId);
      return removed;
    });
    return fold();
  }

  async reclaimSpace(maxPages: number): Promise<void> {
    this.db.sqlite.pragma(`incremental_vacuum(${Math.max(1, Math.floor(maxPages))})`);
  }
}
