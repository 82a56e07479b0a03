import type pg from "pg";
import { and, asc, eq, inArray, isNull, lt, notInArray } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { Errors } from "../../errors.ts";
import { FINISHED_STATUSES, type RunStatus } from "../../protocol/run-status.ts";
import type { CompactStep, ExpiredFilter, ExpiredRun, RunRetention } from "../store.ts";
import { planFolds, type DeltaRow } from "../compaction.ts";
import { runs } from "./schema.ts";

const FINISHED = [...FINISHED_STATUSES] as RunStatus[];

/** The first index a step of a prune keeps: the run's oldest event's, plus how many go ($2). */
const KEPT_FROM = "(SELECT coalesce(min(event_index), 0) FROM events WHERE run_id = $1) + $2";

/**
 * One step of a prune in one statement: the run marked pruned (only if finished, and not
 * pruned already unless its removal is under way) and locked, its oldest events deleted,
 * and with its last ones its checkpoints and kept signals, and for a delete its idempotency
 * keys and row. Every part reads the statement's snapshot, so `done` (no event from
 * KEPT_FROM on) is what the step leaves.
 */
const PRUNE_STEP = `WITH target AS (
    SELECT run_id, coalesce(removing, 'events') AS removing, NOT EXISTS (SELECT 1 FROM events WHERE run_id = $1 AND event_index >= ${KEPT_FROM}) AS done
    FROM runs WHERE run_id = $1 AND status IN ('completed', 'error', 'cancelled') AND (pruned_at IS NULL OR removing IS NOT NULL) FOR UPDATE
  ),
  marked AS (
    UPDATE runs SET pruned_at = coalesce(pruned_at, $3), removing = CASE WHEN t.done THEN NULL ELSE t.removing END
    FROM target t WHERE runs.run_id = t.run_id AND NOT (t.done AND t.removing = 'run')
  ),
  gone AS (
    DELETE FROM events WHERE run_id = $1 AND EXISTS (SELECT 1 FROM target) AND event_index < ${KEPT_FROM} RETURNING 1
  ),
  checkpoints AS (DELETE FROM step_checkpoints WHERE run_id = $1 AND EXISTS (SELECT 1 FROM target WHERE done)),
  kept_signals AS (DELETE FROM signals WHERE run_id = $1 AND EXISTS (SELECT 1 FROM target WHERE done)),
  keys AS (DELETE FROM idempotency_keys WHERE run_id = $1 AND EXISTS (SELECT 1 FROM target WHERE done AND removing = 'run')),
  run_row AS (DELETE FROM runs WHERE run_id = $1 AND EXISTS (SELECT 1 FROM target WHERE done AND removing = 'run'))
  SELECT EXISTS (SELECT 1 FROM target) AS marked, (SELECT count(*) FROM gone)::int AS deleted, coalesce((SELECT done FROM target), false) AS done`;

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
      "SELECT run_id FROM runs WHERE removing IS NOT NULL LIMIT $1",
      [limit],
    );
    return rows.map((row) => row.run_id);
  }

  async pruneStep(runId: string, maxEvents: number, now: number): Promise<{ deleted: number; done: boolean } | null> {
    const { rows } = await this.pool.query<{ marked: boolean; deleted: number; done: boolean }>({ name: "flowd-prune-step", text: PRUNE_STEP, values: [runId, maxEvents, now] });
    const row = rows[0]!;
    return row.marked ? { deleted: row.deleted, done: row.done } : null;
  }

  async beginDelete(runId: string, now: number): Promise<void> {
    const { rows } = await this.pool.query<{ status: RunStatus }>(
      // The row as it was before the update: a run that is not finished is left as it is.
      `WITH before AS (SELECT status FROM runs WHERE run_id = $1 FOR UPDATE),
       marked AS (UPDATE runs SET pruned_at = coalesce(pruned_at, $2), removing = 'run' WHERE run_id = $1 AND status IN ('completed', 'error', 'cancelled'))
       SELECT status FROM before`,
      [runId, now],
    );
    const run = rows[0];
    if (!run) throw Errors.runNotFound(runId);
    if (!FINISHED_STATUSES.has(run.status)) throw Errors.runNotFinished(runId, run.status, "deleted");
  }

  async compactable(finishedBefore: number, limit: number): Promise<string[]> {
    const { rows } = await this.pool.query<{ run_id: string }>(
      "SELECT run_id FROM runs WHERE status IN ('completed', 'error', 'cancelled') AND pruned_at IS NULL AND compacted_at IS NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2",
      [finishedBefore, limit],
    );
    return rows.map((row) => row.run_id);
  }

  async compactStep(runId: string, from: number, maxRows: number, now: number): Promise<CompactStep> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      // Locked: a step of another node's compaction of this run waits, and this one reads what that one left.
      await client.query("SELECT 1 FROM runs WHERE run_id = $1 FOR UPDATE", [runId]);
      const { rows } = await client.query<DeltaRow>(
        `SELECT event_index AS "index", payload FROM events WHERE run_id = $1 AND event IN ('RunContent', 'RunContentCompacted') AND event_index >= $2 ORDER BY event_index LIMIT $3`,
        [runId, from, maxRows],
      );
      const { folds, tail } = planFolds(rows);
      let removed = 0;
      let tailBytes = 0;
      for (const { first, last, frame } of folds) {
        await client.query("UPDATE events SET event = 'RunContentCompacted', payload = $1 WHERE run_id = $2 AND event_index = $3", [frame, runId, first]);
        removed += (await client.query("DELETE FROM events WHERE run_id = $1 AND event_index > $2 AND event_index <= $3", [runId, first, last])).rowCount ?? 0;
        if (first === tail) tailBytes = frame.length;
      }
      const done = rows.length < maxRows || tail === null;
      if (done) await client.query("UPDATE runs SET compacted_at = $1 WHERE run_id = $2 AND status IN ('completed', 'error', 'cancelled')", [now, runId]);
      await client.query("COMMIT");
      return { removed, next: done ? null : tail, tailBytes };
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
