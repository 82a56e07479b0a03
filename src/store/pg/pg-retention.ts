import type pg from "pg";
import { and, asc, eq, inArray, isNull, lt, notInArray } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { Errors } from "../../errors.ts";
import { FINISHED_STATUSES, type RunStatus } from "../../protocol/run-status.ts";
import type { ExpiredFilter, ExpiredRun, RunRetention } from "../store.ts";
import { planFolds, type DeltaRow } from "../compaction.ts";
import { runs } from "./schema.ts";

const FINISHED = [...FINISHED_STATUSES] as RunStatus[];

/** The first index a step of a prune keeps: the run's oldest event's, plus how many go ($2). */
const KEPT_FROM = "(SELECT coalesce(min(event_index), 0) FROM events WHERE run_id = $1) + $2";

/**
 * One step of a prune in one statement: the run marked pruned (only if finished), its
 * oldest events deleted, and with its last ones its checkpoints and kept signals. Every
 * part reads the statement's snapshot, so `left` (events from KEPT_FROM on) is what stays.
 */
const PRUNE_STEP = `WITH marked AS (
    UPDATE runs SET pruned_at = coalesce(pruned_at, $3) WHERE run_id = $1 AND status IN ('completed', 'error', 'cancelled') RETURNING run_id
  ),
  gone AS (
    DELETE FROM events WHERE run_id = $1 AND EXISTS (SELECT 1 FROM marked) AND event_index < ${KEPT_FROM} RETURNING 1
  ),
  last AS (SELECT NOT EXISTS (SELECT 1 FROM events WHERE run_id = $1 AND event_index >= ${KEPT_FROM}) AS done),
  checkpoints AS (DELETE FROM step_checkpoints WHERE run_id = $1 AND EXISTS (SELECT 1 FROM marked) AND (SELECT done FROM last)),
  kept_signals AS (DELETE FROM signals WHERE run_id = $1 AND EXISTS (SELECT 1 FROM marked) AND (SELECT done FROM last))
  SELECT EXISTS (SELECT 1 FROM marked) AS marked, (SELECT count(*) FROM gone)::int AS deleted, (SELECT done FROM last) AS done`;

/** Retention on PostgreSQL: the same steps as on SQLite, any node may take them (each is idempotent). */
export class PgRetention implements RunRetention {
  constructor(
    private readonly pool: pg.Pool,
    private readonly orm: NodePgDatabase,
  ) {}

  async expired(filter: ExpiredFilter): Promise<ExpiredRun[]> {
    const rows = await this.orm
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
      .limit(filter.limit);
    return rows.map((row) => ({ runId: row.runId, workflowId: row.workflowId, finishedAt: row.finishedAt ?? 0, events: row.lastEventIndex + 1 }));
  }

  async unfinishedPrunes(limit: number): Promise<string[]> {
    const { rows } = await this.pool.query<{ run_id: string }>(
      "SELECT run_id FROM runs r WHERE pruned_at IS NOT NULL AND EXISTS (SELECT 1 FROM events e WHERE e.run_id = r.run_id) LIMIT $1",
      [limit],
    );
    return rows.map((row) => row.run_id);
  }

  async pruneStep(runId: string, maxEvents: number, now: number): Promise<{ deleted: number; done: boolean } | null> {
    const { rows } = await this.pool.query<{ marked: boolean; deleted: number; done: boolean }>({ name: "flowd-prune-step", text: PRUNE_STEP, values: [runId, maxEvents, now] });
    const row = rows[0]!;
    return row.marked ? { deleted: row.deleted, done: row.done } : null;
  }

  async deleteRun(runId: string): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      const { rows } = await client.query<{ status: RunStatus }>("SELECT status FROM runs WHERE run_id = $1 FOR UPDATE", [runId]);
      const run = rows[0];
      if (!run) throw Errors.runNotFound(runId);
      if (!FINISHED_STATUSES.has(run.status)) throw Errors.runNotFinished(runId, run.status, "deleted");
      for (const table of ["events", "step_checkpoints", "signals", "idempotency_keys", "runs"]) {
        await client.query(`DELETE FROM ${table} WHERE run_id = $1`, [runId]);
      }
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }

  async compactable(finishedBefore: number, limit: number): Promise<string[]> {
    const { rows } = await this.pool.query<{ run_id: string }>(
      "SELECT run_id FROM runs WHERE status IN ('completed', 'error', 'cancelled') AND pruned_at IS NULL AND compacted_at IS NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2",
      [finishedBefore, limit],
    );
    return rows.map((row) => row.run_id);
  }

  async compactRun(runId: string, now: number): Promise<number> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      // Locked: two nodes compacting the same run do it once.
      const { rows: run } = await client.query("SELECT 1 FROM runs WHERE run_id = $1 AND compacted_at IS NULL FOR UPDATE", [runId]);
      let removed = 0;
      if (run.length > 0) {
        const { rows } = await client.query<DeltaRow>("SELECT event_index AS \"index\", payload FROM events WHERE run_id = $1 AND event = 'RunContent' ORDER BY event_index", [runId]);
        for (const { first, last, frame } of planFolds(rows)) {
          await client.query("UPDATE events SET event = 'RunContentCompacted', payload = $1 WHERE run_id = $2 AND event_index = $3", [frame, runId, first]);
          removed += (await client.query("DELETE FROM events WHERE run_id = $1 AND event_index > $2 AND event_index <= $3", [runId, first, last])).rowCount ?? 0;
        }
        await client.query("UPDATE runs SET compacted_at = $1 WHERE run_id = $2", [now, runId]);
      }
      await client.query("COMMIT");
      return removed;
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }

  async reclaimSpace(): Promise<void> {
    // PostgreSQL's autovacuum reuses the space.
  }
}
