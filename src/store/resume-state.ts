import { asc, eq, inArray } from "drizzle-orm";
import type { Db } from "./db.ts";
import { runs, stepCheckpoints, type RunRow } from "./schema.ts";
import type { ResumeReads, ResumeState, StoredCheckpoint, SuspendedRun } from "./store.ts";

export type { ResumeState, SuspendedRun };

/** The checkpoint path under which a wait's start is stored; its outcome is stored under `key` itself. */
export const WAIT_SUFFIX = "@wait";

/** Events that open a node (or an iteration, or an agent's run): a run that goes on after a wait does not send them twice. */
export const START_EVENTS = [
  "StepStarted",
  "StepsExecutionStarted",
  "ParallelExecutionStarted",
  "ConditionExecutionStarted",
  "LoopExecutionStarted",
  "LoopIterationStarted",
  "RouterExecutionStarted",
  "RunStarted",
] as const;

/**
 * Runs that wait (`waiting`, `paused`), each with its open waits (a wait's start stored as
 * `<key>@wait`, its outcome not), oldest first; `andWhere` narrows the runs. The same SQL
 * on SQLite and PostgreSQL.
 */
export function openWaitsSql(andWhere: string): string {
  return `SELECT r.run_id, r.workflow_id, r.cancel_requested_at,
                 substr(c.step_path, 1, length(c.step_path) - ${WAIT_SUFFIX.length}) AS wait_key, c.output
            FROM runs r LEFT JOIN step_checkpoints c
              ON c.run_id = r.run_id AND c.step_path LIKE '%${WAIT_SUFFIX}'
             AND NOT EXISTS (SELECT 1 FROM step_checkpoints d WHERE d.run_id = c.run_id
                               AND d.step_path = substr(c.step_path, 1, length(c.step_path) - ${WAIT_SUFFIX.length}))
           WHERE r.status IN ('waiting', 'paused') ${andWhere}
           ORDER BY r.run_id, c.event_index`;
}

/**
 * Waiting or paused runs with a step started in their latest attempt, not completed, and
 * not waiting itself: another branch was running when the process stopped. The same SQL
 * on SQLite and PostgreSQL.
 */
export const INTERRUPTED_WHILE_WAITING_SQL = `SELECT DISTINCT r.run_id
           FROM runs r JOIN events e ON e.run_id = r.run_id AND e.event = 'StepStarted'
          WHERE r.status IN ('waiting', 'paused')
            AND e.event_index > coalesce((SELECT max(x.event_index) FROM events x WHERE x.run_id = r.run_id AND x.event = 'WorkflowResumed'), -1)
            AND NOT EXISTS (SELECT 1 FROM step_checkpoints c WHERE c.run_id = r.run_id AND c.step_path = e.step_path)
            AND NOT EXISTS (
              SELECT 1 FROM step_checkpoints w
               WHERE w.run_id = r.run_id AND w.step_path LIKE '%${WAIT_SUFFIX}'
                 AND substr(w.step_path, 1, length(e.step_path) + 1) IN (e.step_path || '~', e.step_path || '!', e.step_path || '#')
                 AND NOT EXISTS (SELECT 1 FROM step_checkpoints d WHERE d.run_id = r.run_id
                                   AND d.step_path = substr(w.step_path, 1, length(w.step_path) - ${WAIT_SUFFIX.length})))`;

/** What identifies a start event within an attempt: its name, its node's path, and its loop iteration if any. */
export function startKey(event: string, stepPath: string, iteration?: number | null): string {
  return iteration === undefined || iteration === null ? `${event}@${stepPath}` : `${event}@${stepPath}#${iteration}`;
}

/** Reads checkpoints and interrupted steps of runs, and the runs left unfinished. */
export class ResumeStateReader implements ResumeReads {
  private readonly selectStepStarts;
  private readonly selectOpenWaits;
  private readonly selectInterruptedWhileWaiting;
  private readonly selectLatestStepStart;
  private readonly selectStarts;

  constructor(private readonly db: Db) {
    // Step starts since the latest WorkflowResumed (or the start), with no checkpoint for their path.
    this.selectStepStarts = db.sqlite.prepare<[string, string, string], { event_index: number; step_path: string; step_name: string }>(
      `SELECT e.event_index, e.step_path, json_extract(e.payload, '$.step_name') AS step_name
         FROM events e
        WHERE e.run_id = ? AND e.event = 'StepStarted'
          AND e.event_index > coalesce(
                (SELECT max(event_index) FROM events WHERE run_id = ? AND event = 'WorkflowResumed'), -1)
          AND NOT EXISTS (SELECT 1 FROM step_checkpoints c WHERE c.run_id = ? AND c.step_path = e.step_path)
        ORDER BY e.event_index`,
    );
    this.selectOpenWaits = db.sqlite.prepare<[], [string, string, number | null, string | null, string | null]>(openWaitsSql("")).raw(true);
    // A step started in this attempt, not completed, and not waiting itself: another branch of a
    // waiting run was running when the process stopped.
    this.selectInterruptedWhileWaiting = db.sqlite.prepare<[], [string]>(INTERRUPTED_WHILE_WAITING_SQL).raw(true);
    this.selectLatestStepStart = db.sqlite.prepare<[string, string], { event_index: number }>(
      "SELECT max(event_index) AS event_index FROM events WHERE run_id = ? AND event = 'StepStarted' AND step_path = ?",
    );
    // Start events (and retries) since the latest WorkflowResumed: what this attempt has sent.
    this.selectStarts = db.sqlite.prepare<[string, string], { event: string; step_path: string; iteration: number | null; decision: string | null }>(
      `SELECT event, step_path, json_extract(payload, '$.iteration') AS iteration,
              CASE event WHEN 'StepContinued' THEN json_extract(payload, '$.decision') END AS decision
         FROM events
        WHERE run_id = ? AND event IN (${[...START_EVENTS, "StepRetrying", "StepContinued"].map((e) => `'${e}'`).join(", ")})
          AND event_index > coalesce((SELECT max(event_index) FROM events WHERE run_id = ? AND event = 'WorkflowResumed'), -1)
        ORDER BY event_index`,
    );
  }

  /**
   * Runs that wait (`waiting`, `paused`), with their open waits (a wait's start stored, its
   * outcome not): what the scheduler and wakers need. One read of only what start-up needs:
   * there may be many, and whole rows read ten times slower.
   */
  async suspendedRuns(runIds?: readonly string[]): Promise<SuspendedRun[]> {
    const byRun = new Map<string, SuspendedRun>();
    const only = runIds ? new Set(runIds) : null;
    for (const [runId, workflowId, cancelRequestedAt, key, output] of this.selectOpenWaits.iterate()) {
      if (only && !only.has(runId)) continue;
      let run = byRun.get(runId);
      if (!run) {
        run = { runId, workflowId, cancelRequestedAt, waits: [] };
        byRun.set(runId, run);
      }
      if (key !== null && output !== null) run.waits.push({ key, record: JSON.parse(output) as unknown });
    }
    return [...byRun.values()];
  }

  /**
   * Waiting or paused runs that had a step running besides their wait (a Parallel branch)
   * when the process stopped: they resume as after a crash, and wait again where they waited.
   */
  async interruptedWhileWaiting(): Promise<Set<string>> {
    return new Set(this.selectInterruptedWhileWaiting.all().map(([runId]) => runId));
  }

  /** The index of the step's latest StepStarted, or null. */
  async latestStepStart(runId: string, stepPath: string): Promise<number | null> {
    return this.selectLatestStepStart.get(runId, stepPath)?.event_index ?? null;
  }

  /** Like `read`, for a run that goes on after a wait: with the start events it need not send again. */
  async readForWake(runId: string): Promise<ResumeState> {
    // Nothing was interrupted: the run stopped on its own, at a wait.
    const state: ResumeState = { checkpoints: this.checkpoints(runId), interruptedSteps: [], started: new Set() };
    for (const row of this.selectStarts.all(runId, runId)) {
      if (row.event === "StepRetrying" || (row.event === "StepContinued" && row.decision === "retry")) {
        // The next attempt of that step starts afresh.
        state.started.delete(startKey("StepStarted", row.step_path));
        state.started.delete(startKey("RunStarted", row.step_path));
      } else {
        state.started.add(startKey(row.event, row.step_path, row.iteration));
      }
    }
    return state;
  }

  /** Runs left `pending` or `running` by the previous process, oldest first. */
  async unfinishedRuns(): Promise<RunRow[]> {
    return this.db.orm
      .select()
      .from(runs)
      .where(inArray(runs.status, ["pending", "running"]))
      .orderBy(asc(runs.createdAt))
      .all();
  }

  /** The run's checkpoints, in the order they were written. */
  private checkpoints(runId: string): StoredCheckpoint[] {
    return this.db.orm
      .select({ path: stepCheckpoints.stepPath, stepName: stepCheckpoints.stepName, output: stepCheckpoints.output })
      .from(stepCheckpoints)
      .where(eq(stepCheckpoints.runId, runId))
      .orderBy(asc(stepCheckpoints.eventIndex))
      .all();
  }

  /** The checkpoints and interrupted steps of one run. */
  async read(runId: string): Promise<ResumeState> {
    const checkpoints = this.checkpoints(runId);
    const interruptedSteps = this.selectStepStarts
      .all(runId, runId, runId)
      .map((row) => ({ index: row.event_index, path: row.step_path, name: row.step_name }));
    return { checkpoints, interruptedSteps, started: new Set() };
  }
}
