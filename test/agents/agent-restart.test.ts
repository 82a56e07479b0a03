import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeOpenAI, textAnswer } from "../helpers/fake-openai.ts";
import { range, tempDir } from "../helpers/server.ts";
import { REPO_ROOT, startServerProcess } from "../../testkit/server-process.ts";
import { TestClient } from "../helpers/ws-client.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

let fake: FakeOpenAI;
let temp: ReturnType<typeof tempDir>;
beforeAll(async () => {
  fake = await new FakeOpenAI().start();
  temp = tempDir();
});
afterAll(async () => {
  await fake.close();
  temp.remove();
});

describe("an agent step interrupted by kill -9", () => {
  it("runs again from its start after the restart; the step before it does not", async () => {
    const db = join(temp.dir, "flowd.db");
    const env = { OPENAI_API_KEY: "k", OPENAI_BASE_URL: fake.url };
    fake.enqueue(textAnswer(range(40).map((i) => `a${i} `), { delayMs: 40 }), textAnswer(["second ", "answer"]));
    const first = await startServerProcess(["--workflows", FIXTURES, "--db", db], { env });
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "agent-flow", message: "q" });
    const seen = await client.take(10);
    const runId = seen[0]?.run_id as string;
    expect(seen.filter((f) => f.event === "RunContent").length).toBeGreaterThan(0);
    first.child.kill("SIGKILL");
    await first.exited;

    const second = await startServerProcess(["--workflows", FIXTURES, "--db", db], { env });
    try {
      const { client: again } = await TestClient.connect(second.wsUrl);
      again.send({ action: "reconnect", run_id: runId, last_event_index: seen.at(-1)?.event_index });
      const rest = await again.untilTerminal();
      await again.close();
      expect(rest.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: "second answer" });
      const reader = new Database(db, { readonly: true });
      const events = reader
        .prepare<[string], { event: string; payload: string }>("SELECT event, payload FROM events WHERE run_id = ? ORDER BY event_index")
        .all(runId)
        .map((e) => JSON.parse(e.payload) as Record<string, unknown> & { event: string });
      reader.close();
      const resumed = events.find((e) => e.event === "WorkflowResumed");
      expect(resumed).toMatchObject({ resume_step_name: "answer", restored_steps: 1, after_crash: true });
      expect(events.filter((e) => e.event === "StepStarted" && e.step_name === "prepare")).toHaveLength(1);
      const agentRuns = events.filter((e) => e.event === "RunStarted").map((e) => e.agent_run_id);
      expect(agentRuns).toHaveLength(2);
      expect(new Set(agentRuns).size).toBe(2);
      expect(fake.requests).toHaveLength(2);
      expect(fake.requests[1]?.body.messages[0]?.content).toContain("prepared q");
    } finally {
      await second.stop();
    }
  });
});
