import type pg from "pg";
import { asc, eq, inArray, getTableColumns } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { INTERRUPTED_WHILE_WAITING_SQL, openWaitsSql, START_EVENTS, startKey } from "../resume-state.ts";
import type { RunRow } from "../schema.ts";
import type { ResumeReads, ResumeState, StoredCheckpoint, SuspendedRun } from "../store.ts";
import { runs, stepCheckpoints } from "./schema.ts";

const { ownerNode: _owner, leaseUntil: _until, leaseEpoch: _epoch, ...RUN_COLUMNS } = getTableColumns(runs);

const AFTER_LATEST_RESUME = (run: string) =>
  `coalesce((SELECT max(x.event_index) FROM events x WHERE x.run_id = ${run} AND x.event = 'WorkflowResumed'), -1)`;

/** The same reads as ResumeStateReader on SQLite, in PostgreSQL's SQL. */
export class PgResumeStateReader implements ResumeReads {
  constructor(
    private readonly pool: pg.Pool,
    private readonly orm: NodePgDatabase,
  ) {}

  async suspendedRuns(runIds?: readonly string[]): Promise<SuspendedRun[]> {
    const { rows } = await this.pool.query<{ run_id: string; workflow_id: string; cancel_requested_at: string | null; wait_key: string | null; output: unknown }>(
      openWaitsSql(runIds ? "AND r.run_id = ANY($1::text[])" : ""),
      runIds ? [runIds] : [],
    );
    const byRun = new Map<string, SuspendedRun>();
    for (const row of rows) {
      let run = byRun.get(row.run_id);
      if (!run) {
        run = { runId: row.run_id, workflowId: row.workflow_id, cancelRequestedAt: row.cancel_requested_at === null ? null : Number(row.cancel_requested_at), waits: [] };
        byRun.set(row.run_id, run);
      }
      if (row.wait_key !== null && row.output !== null) run.waits.push({ key: row.wait_key, record: row.output });
    }
    return [...byRun.values()];
  }

  async interruptedWhileWaiting(): Promise<Set<string>> {
    const { rows } = await this.pool.query<{ run_id: string }>(INTERRUPTED_WHILE_WAITING_SQL);
    return new Set(rows.map((row) => row.run_id));
  }

  async latestStepStart(runId: string, stepPath: string): Promise<number | null> {
    const { rows } = await this.pool.query<{ event_index: number | null }>(
      "SELECT max(event_index) AS event_index FROM events WHERE run_id = $1 AND event = 'StepStarted' AND step_path = $2",
      [runId, stepPath],
    );
    return rows[0]?.event_index ?? null;
  }

  async readForWake(runId: string): Promise<ResumeState> {
    const state: ResumeState = { checkpoints: await this.checkpoints(runId), interruptedSteps: [], started: new Set() };
    const names = [...START_EVENTS, "StepRetrying", "StepContinued"];
    const { rows } = await this.pool.query<{ event: string; step_path: string; iteration: string | null; decision: string | null }>(
      `SELECT event, step_path, payload::jsonb ->> 'iteration' AS iteration,
              CASE event WHEN 'StepContinued' THEN payload::jsonb ->> 'decision' END AS decision
         FROM events
        WHERE run_id = $1 AND event = ANY($2::text[]) AND event_index > ${AFTER_LATEST_RESUME("$1")}
        ORDER BY event_index`,
      [runId, names],
    );
    for (const row of rows) {
      if (row.event === "StepRetrying" || (row.event === "StepContinued" && row.decision === "retry")) {
        state.started.delete(startKey("StepStarted", row.step_path));
        state.started.delete(startKey("RunStarted", row.step_path));
      } else {
        state.started.add(startKey(row.event, row.step_path, row.iteration === null ? null : Number(row.iteration)));
      }
    }
    return state;
  }

  async unfinishedRuns(): Promise<RunRow[]> {
    return this.orm.select(RUN_COLUMNS).from(runs).where(inArray(runs.status, ["pending", "running"])).orderBy(asc(runs.createdAt));
  }

  private checkpoints(runId: string): Promise<StoredCheckpoint[]> {
    return this.orm
      .select({ path: stepCheckpoints.stepPath, stepName: stepCheckpoints.stepName, output: stepCheckpoints.output })
      .from(stepCheckpoints)
      .where(eq(stepCheckpoints.runId, runId))
      .orderBy(asc(stepCheckpoints.eventIndex));
  }

  async read(runId: string): Promise<ResumeState> {
    const checkpoints = await this.checkpoints(runId);
    const { rows } = await this.pool.query<{ event_index: number; step_path: string; step_name: string }>(
      `SELECT e.event_index, e.step_path, e.payload::jsonb ->> 'step_name' AS step_name
         FROM events e
        WHERE e.run_id = $1 AND e.event = 'StepStarted' AND e.event_index > ${AFTER_LATEST_RESUME("$1")}
          AND NOT EXISTS (SELECT 1 FROM step_checkpoints c WHERE c.run_id = $1 AND c.step_path = e.step_path)
        ORDER BY e.event_index`,
      [runId],
    );
    return { checkpoints, interruptedSteps: rows.map((row) => ({ index: row.event_index, path: row.step_path, name: row.step_name })), started: new Set() };
  }
}
