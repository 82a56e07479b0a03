import type { Database, Statement } from "better-sqlite3";
import { and, asc, eq, isNull, lt, notInArray, sql } from "drizzle-orm";
import { Errors } from "../errors.ts";
import { FINISHED_STATUSES, type RunStatus } from "../protocol/run-status.ts";
import { planFolds, type DeltaRow } from "./compaction.ts";
import type { Db } from "./db.ts";
import { runs } from "./schema.ts";
import type { CompactStep, ExpiredFilter, ExpiredRun, RunRetention } from "./store.ts";

const FINISHED = [...FINISHED_STATUSES] as RunStatus[];

/** Retention on SQLite: each step one short transaction on the server's connection, between group commits. */
export class SqliteRetention implements RunRetention {
  private readonly status: Statement<[string], { status: RunStatus }>;
  private readonly markDeleted: Statement<[number, string]>;
  private readonly step: (runId: string, maxEvents: number, now: number) => { deleted: number; done: boolean } | null;
  private readonly begin: (runId: string, now: number) => void;
  private readonly fold: (runId: string, from: number, maxRows: number, now: number) => CompactStep;

  constructor(private readonly db: Db) {
    const sqlite: Database = db.sqlite;
    // Only a finished run that is not pruned yet, or whose removal is under way.
    const markPruned = sqlite.prepare<[number, string], { removing: "events" | "run" }>(
      `UPDATE runs SET pruned_at = coalesce(pruned_at, ?), removing = coalesce(removing, 'events')
       WHERE run_id = ? AND status IN ('completed', 'error', 'cancelled') AND (pruned_at IS NULL OR removing IS NOT NULL) RETURNING removing`,
    );
    // The oldest `maxEvents` of the run's events: a range of the primary key.
    const deleteOldest = sqlite.prepare<[string, string, number]>("DELETE FROM events WHERE run_id = ? AND event_index < (SELECT coalesce(min(event_index), 0) FROM events WHERE run_id = ?) + ?");
    const anyEvent = sqlite.prepare<[string], { one: number }>("SELECT 1 AS one FROM events WHERE run_id = ? LIMIT 1");
    // What only a run that goes on needs (checkpoints, kept signals) goes with its last events;
    // idempotency keys stay with a pruned run (they expire by their own TTL: a repeat of its start still finds it).
    const forget = ["step_checkpoints", "signals"].map((table) => sqlite.prepare<[string]>(`DELETE FROM ${table} WHERE run_id = ?`));
    const forgetRun = ["idempotency_keys", "runs"].map((table) => sqlite.prepare<[string]>(`DELETE FROM ${table} WHERE run_id = ?`));
    const removed = sqlite.prepare<[string]>("UPDATE runs SET removing = NULL WHERE run_id = ?");
    this.status = sqlite.prepare("SELECT status FROM runs WHERE run_id = ?");
    this.markDeleted = sqlite.prepare(`UPDATE runs SET pruned_at = coalesce(pruned_at, ?), removing = 'run' WHERE run_id = ?`);
    this.step = sqlite.transaction((runId: string, maxEvents: number, now: number) => {
      const marked = markPruned.get(now, runId);
      if (!marked) return null;
      const deleted = deleteOldest.run(runId, runId, maxEvents).changes;
      const done = anyEvent.get(runId) === undefined;
      if (done) {
        for (const statement of forget) statement.run(runId);
        if (marked.removing === "run") for (const statement of forgetRun) statement.run(runId);
        else removed.run(runId);
      }
      return { deleted, done };
    });
    const window = sqlite.prepare<[string, number, number], DeltaRow>(
      `SELECT event_index AS "index", payload FROM events WHERE run_id = ? AND event IN ('RunContent', 'RunContentCompacted') AND event_index >= ? ORDER BY event_index LIMIT ?`,
    );
    const replace = sqlite.prepare<[string, string, number]>("UPDATE events SET event = 'RunContentCompacted', payload = ? WHERE run_id = ? AND event_index = ?");
    const folded = sqlite.prepare<[string, number, number]>("DELETE FROM events WHERE run_id = ? AND event_index > ? AND event_index <= ?");
    const compacted = sqlite.prepare<[number, string]>("UPDATE runs SET compacted_at = ? WHERE run_id = ? AND status IN ('completed', 'error', 'cancelled')");
    this.fold = sqlite.transaction((runId: string, from: number, maxRows: number, now: number): CompactStep => {
      const rows = window.all(runId, from, maxRows);
      const { folds, tail } = planFolds(rows);
      let removed = 0;
      let tailBytes = 0;
      for (const { first, last, frame } of folds) {
        replace.run(frame, runId, first);
        removed += folded.run(runId, first, last).changes;
        if (first === tail) tailBytes = frame.length;
      }
      if (rows.length < maxRows || tail === null) {
        compacted.run(now, runId);
        return { removed, next: null, tailBytes };
      }
      return { removed, next: tail, tailBytes };
    });
    this.begin = sqlite.transaction((runId: string, now: number) => {
      const run = this.status.get(runId);
      if (!run) throw Errors.runNotFound(runId);
      if (!FINISHED_STATUSES.has(run.status)) throw Errors.runNotFinished(runId, run.status, "deleted");
      this.markDeleted.run(now, runId);
    });
  }

  async expired(filter: ExpiredFilter): Promise<ExpiredRun[]> {
    const rows = this.db.orm
      .select({ runId: runs.runId, workflowId: runs.workflowId, finishedAt: runs.finishedAt, lastEventIndex: runs.lastEventIndex })
      .from(runs)
      .where(
        and(
          // `+status`: not by the status index, which would read every finished run; the partial index on finished_at has only unpruned ones.
          sql`+${runs.status} IN ${FINISHED}`,
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
      .prepare<[number], { run_id: string }>("SELECT run_id FROM runs WHERE removing IS NOT NULL LIMIT ?")
      .all(limit);
    return rows.map((row) => row.run_id);
  }

  async pruneStep(runId: string, maxEvents: number, now: number): Promise<{ deleted: number; done: boolean } | null> {
    return this.step(runId, maxEvents, now);
  }

  async beginDelete(runId: string, now: number): Promise<void> {
    this.begin(runId, now);
  }

  async compactable(finishedBefore: number, limit: number): Promise<string[]> {
    return this.db.sqlite
      .prepare<[number, number], { run_id: string }>(
        "SELECT run_id FROM runs WHERE +status IN ('completed', 'error', 'cancelled') AND pruned_at IS NULL AND compacted_at IS NULL AND finished_at < ? ORDER BY finished_at LIMIT ?",
      )
      .all(finishedBefore, limit)
      .map((row) => row.run_id);
  }

  async compactStep(runId: string, from: number, maxRows: number, now: number): Promise<CompactStep> {
    return this.fold(runId, from, maxRows, now);
  }

  async reclaimSpace(maxPages: number): Promise<void> {
    this.db.sqlite.pragma(`incremental_vacuum(${Math.max(1, Math.floor(maxPages))})`);
  }
}
