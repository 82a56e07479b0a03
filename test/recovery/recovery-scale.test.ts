import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { range, storedIndices, tempDir, waitFor } from "../helpers/server.ts";
import { seedDatabase, type SeededRuns } from "../../testkit/seed-db.ts";
import { REPO_ROOT, startServerProcess, type ServerProcess } from "../../testkit/server-process.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

let temp: ReturnType<typeof tempDir>;
let seeded: SeededRuns;
let server: ServerProcess;
let db: string;
beforeAll(async () => {
  temp = tempDir();
  db = join(temp.dir, "flowd.db");
  seeded = seedDatabase(db, {
    finishedRuns: 1000,
    eventsPerFinishedRun: 20,
    runningRuns: 10,
    eventsPerRunningRun: 7,
    runningWorkflowId: "ticker",
    runningAdditionalData: { count: 5, delayMs: 1 },
  });
  server = await startServerProcess(["--workflows", FIXTURES, "--db", db]);
});
afterAll(async () => {
  await server.stop();
  temp.remove();
});

describe("recovery with a thousand finished runs and ten running ones", () => {
  it("is healthy, resumes exactly the ten running runs, and they finish", async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const reader = new Database(db, { readonly: true });
    const statusOf = (runId: string) =>
      (reader.prepare("SELECT status FROM runs WHERE run_id = ?").get(runId) as { status: string }).status;
    for (const runId of seeded.running) {
      await waitFor(`run ${runId} to finish`, () => (statusOf(runId) === "completed" ? true : undefined));
      const events = reader
        .prepare<[string], { event: string }>("SELECT event FROM events WHERE run_id = ? ORDER BY event_index")
        .all(runId)
        .map((e) => e.event);
      // 7 seeded events, WorkflowResumed, then the step from its start: StepStarted, 5 ticks, StepCompleted, WorkflowCompleted.
      expect(events.slice(7)).toEqual([
        "WorkflowResumed",
        "StepStarted",
        ...range(5).map(() => "RunContent"),
        "StepCompleted",
        "WorkflowCompleted",
      ]);
      expect(storedIndices(reader, runId)).toEqual(range(16));
    }
    const untouched = reader
      .prepare("SELECT count(*) AS n FROM runs WHERE status = 'completed' AND attempt = 1 AND last_event_index = 19")
      .get() as { n: number };
    expect(untouched.n).toBe(1000);
    const resumedCount = reader.prepare("SELECT count(*) AS n FROM events WHERE event = 'WorkflowResumed'").get() as { n: number };
    expect(resumedCount.n).toBe(10);
    expect(server.output()).toContain('"msg":"recovered 10 unfinished runs"');
    reader.close();
  });
});
