import { randomUUID } from "node:crypto";
import { openDb } from "../src/store/db.ts";

/** The shape of a database to fill for recovery tests and benchmarks. */
export interface SeedPlan {
  finishedRuns: number;
  eventsPerFinishedRun: number;
  /** Runs left `running` as if the server had been killed mid-step. */
  runningRuns: number;
  eventsPerRunningRun: number;
  /** The workflow the running runs belong to; its step 0 is the one they were in. */
  runningWorkflowId: string;
  runningAdditionalData?: unknown;
}

/** What was written. */
export interface SeededRuns {
  finished: string[];
  running: string[];
}

function frame(runId: string, workflowId: string, index: number, body: Record<string, unknown>): string {
  return JSON.stringify({
    event: body.event,
    event_index: index,
    run_id: runId,
    workflow_id: workflowId,
    workflow_name: workflowId,
    session_id: "seed",
    created_at: Math.floor(Date.now() / 1000),
    ...body,
  });
}

/**
 * Fills a flowd database with finished runs and runs left `running`, in the exact row and
 * frame shapes the server writes, fast (one transaction), without running a server.
 */
export function seedDatabase(path: string, plan: SeedPlan): SeededRuns {
  const db = openDb(path);
  const now = Date.now();
  const insertRun = db.sqlite.prepare(
    `INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, status, input, additional_data, output,
                       last_event_index, created_at, updated_at, started_at, finished_at)
     VALUES (?, ?, ?, 'seed', ?, 'seeded', ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertEvent = db.sqlite.prepare(
    "INSERT INTO events (run_id, event_index, event, step_path, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
  );
  const seeded: SeededRuns = { finished: [], running: [] };
  const write = (runId: string, workflowId: string, bodies: Record<string, unknown>[]): void => {
    bodies.forEach((body, index) => {
      const stepPath = typeof body.step_path === "string" ? body.step_path : null;
      insertEvent.run(runId, index, body.event as string, stepPath, frame(runId, workflowId, index, body), now);
    });
  };
  db.sqlite.transaction(() => {
    for (let r = 0; r < plan.finishedRuns; r++) {
      const runId = randomUUID();
      const step = { step_name: "seeded", step_index: 0, step_path: "0" };
      const content = Array.from({ length: Math.max(0, plan.eventsPerFinishedRun - 4) }, (_, i) => ({
        event: "RunContent",
        ...step,
        content: `chunk ${i} `,
      }));
      const bodies = [
        { event: "WorkflowStarted", input: "seeded" },
        { event: "StepStarted", ...step },
        ...content,
        { event: "StepCompleted", ...step, content: "done", duration_ms: 1 },
        { event: "WorkflowCompleted", content: "done", duration_ms: 1 },
      ];
      insertRun.run(runId, "seeded", "seeded", "completed", null, JSON.stringify("done"), bodies.length - 1, now, now, now, now);
      write(runId, "seeded", bodies);
      seeded.finished.push(runId);
    }
    for (let r = 0; r < plan.runningRuns; r++) {
      const runId = randomUUID();
      const step = { step_name: "tick", step_index: 0, step_path: "0" };
      const partial = Array.from({ length: Math.max(0, plan.eventsPerRunningRun - 2) }, (_, i) => ({
        event: "RunContent",
        ...step,
        content: `tick ${i} `,
      }));
      const bodies = [{ event: "WorkflowStarted", input: "seeded" }, { event: "StepStarted", ...step }, ...partial];
      const data = JSON.stringify(plan.runningAdditionalData ?? null);
      insertRun.run(runId, plan.runningWorkflowId, plan.runningWorkflowId, "running", data, null, bodies.length - 1, now, now, now, null);
      write(runId, plan.runningWorkflowId, bodies);
      seeded.running.push(runId);
    }
  })();
  db.close();
  return seeded;
}
