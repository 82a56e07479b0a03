import { asc, eq, inArray } from "drizzle-orm";
import type { Db } from "./db.ts";
import { runs, stepCheckpoints, type RunRow } from "./schema.ts";

/** A stored checkpoint, as a resumed run reads it. */
export interface StoredCheckpoint {
  path: string;
  stepName: string | null;
  output: unknown;
}

/** A step that started in the latest attempt and never completed. */
export interface InterruptedStep {
  index: number;
  path: string;
  name: string;
}

/** What resuming a run needs to know from the database. */
export interface ResumeState {
  /** In the order they were written. */
  checkpoints: StoredCheckpoint[];
  /** In the order they started. */
  interruptedSteps: InterruptedStep[];
}

/** Reads checkpoints and interrupted steps of runs, and the runs left unfinished. */
export class ResumeStateReader {
  private readonly selectStepStarts;

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
  }

  /** Runs left `pending` or `running` by the previous process, oldest first. */
  unfinishedRuns(): RunRow[] {
    return this.db.orm
      .select()
      .from(runs)
      .where(inArray(runs.status, ["pending", "running"]))
      .orderBy(asc(runs.createdAt))
      .all();
  }

  /** The checkpoints and interrupted steps of one run. */
  read(runId: string): ResumeState {
    const checkpoints = this.db.orm
      .select({ path: stepCheckpoints.stepPath, stepName: stepCheckpoints.stepName, output: stepCheckpoints.output })
      .from(stepCheckpoints)
      .where(eq(stepCheckpoints.runId, runId))
      .orderBy(asc(stepCheckpoints.eventIndex))
      .all();
    const interruptedSteps = this.selectStepStarts
      .all(runId, runId, runId)
      .map((row) => ({ index: row.event_index, path: row.step_path, name: row.step_name }));
    return { checkpoints, interruptedSteps };
  }
}
