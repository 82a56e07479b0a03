import { readFileSync } from "node:fs";
import { join } from "node:path";
import type Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../testkit/server-process.ts";
import { startServer, type TestServer } from "../helpers/server.ts";
import { TestClient } from "../helpers/ws-client.ts";

/** The ```sql blocks of the README's "Query runs with SQL" section, in order. */
function readmeQueries(): string[] {
  const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
  const section = readme.split("## Query runs with SQL")[1]?.split("\n## ")[0] ?? "";
  return [...section.matchAll(/```sql\n([\s\S]*?)```/g)].map((m) => (m[1] ?? "").trim());
}

let t: TestServer;
let db: Database.Database;
const runIds: Record<string, string> = {};

async function run(workflowId: string, message = "m"): Promise<string> {
  const { client } = await TestClient.connect(t.wsUrl);
  client.send({ action: "start-workflow", workflow_id: workflowId, message });
  const frames = await client.untilTerminal();
  await client.close();
  return frames[0]?.run_id as string;
}

beforeAll(async () => {
  t = await startServer();
  runIds.ok1 = await run("steps-flow");
  runIds.failed = await run("failing-flow");
  runIds.ok2 = await run("steps-flow");
  runIds.latest = await run("parallel-flow");
  db = t.openReader();
});
afterAll(async () => {
  await t.close();
});

describe("the README's SQL queries, against a database the server filled", () => {
  it("are all there", () => {
    expect(readmeQueries()).toHaveLength(5);
  });

  it("which runs failed today and why", () => {
    const rows = db.prepare(readmeQueries()[0]!).all() as { run_id: string; error: string }[];
    expect(rows).toEqual([expect.objectContaining({ run_id: runIds.failed, error: 'Step "explode" failed: disk on fire' })]);
  });

  it("how long each step of the latest run took", () => {
    const rows = db.prepare(readmeQueries()[1]!).all() as { step_path: string; step_name: string; outcome: string; duration_ms: number }[];
    expect(rows.map((r) => r.step_name).sort()).toEqual(["join", "left", "right"]);
    expect(rows.every((r) => r.outcome === "completed" && r.duration_ms >= 0)).toBe(true);
    // The left branch sleeps 20 ms.
    expect(rows.find((r) => r.step_name === "left")!.duration_ms).toBeGreaterThanOrEqual(15);
  });

  it("which steps are slowest over all runs", () => {
    const rows = db.prepare(readmeQueries()[2]!).all() as { step_name: string; executions: number; avg_ms: number }[];
    expect(rows[0]?.step_name).toBe("left");
    expect(rows.find((r) => r.step_name === "first")?.executions).toBe(2);
    expect(rows.find((r) => r.step_name === "explode")?.executions).toBe(1);
  });

  it("the events of a run in order, with readable times", () => {
    const query = readmeQueries()[3]!.replace("<run id>", runIds.ok1!);
    const rows = db.prepare(query).all() as { event_index: number; at: string; event: string }[];
    expect(rows.map((r) => r.event_index)).toEqual(rows.map((_, i) => i));
    expect(rows[0]).toMatchObject({ event: "WorkflowStarted" });
    expect(rows.at(-1)).toMatchObject({ event: "WorkflowCompleted" });
    expect(rows[0]?.at).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$/);
  });

  it("runs per workflow and status", () => {
    const rows = db.prepare(readmeQueries()[4]!).all();
    expect(rows).toEqual([
      { workflow_id: "failing-flow", status: "error", runs: 1 },
      { workflow_id: "parallel-flow", status: "completed", runs: 1 },
      { workflow_id: "steps-flow", status: "completed", runs: 2 },
    ]);
  });

  it("run_overview shows a readable duration for each run", () => {
    const row = db.prepare("SELECT * FROM run_overview WHERE run_id = ?").get(runIds.latest) as Record<string, unknown>;
    expect(row).toMatchObject({ workflow_id: "parallel-flow", status: "completed", attempt: 1 });
    expect(row.duration_s as number).toBeGreaterThan(0.015);
    expect(row.events).toBe((db.prepare("SELECT count(*) AS n FROM events WHERE run_id = ?").get(runIds.latest) as { n: number }).n);
  });
});
