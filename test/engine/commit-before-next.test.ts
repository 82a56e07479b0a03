import { setTimeout as sleep } from "node:timers/promises";
import type Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Condition, Loop, Parallel, Router, Step, Workflow, type StepNode } from "../../src/workflows/definition.ts";
import { startServer, type TestServer } from "../helpers/server.ts";
import { TestClient } from "../helpers/ws-client.ts";

let t: TestServer;
let reader: Database.Database;
/** For each checking step: the checkpoint it depends on, and whether it was committed when the step began. */
const seen: { needs: string; committed: boolean }[] = [];

/** A step that records, as its first act, whether the checkpoint at `path` is committed. */
function checks(name: string, path: string): StepNode {
  return Step({
    name,
    executor: (input) => {
      const row = reader.prepare("SELECT 1 FROM step_checkpoints WHERE run_id = ? AND step_path = ?").get(input.runId, path);
      seen.push({ needs: path, committed: row !== undefined });
      return name;
    },
  });
}

const dependent = Workflow({
  id: "dependent",
  steps: [
    Step({ name: "first", executor: () => Math.random() }),
    checks("after-step", "0"),
    Condition({ name: "condition", evaluator: () => true, steps: [checks("in-branch", "2#decision")] }),
    checks("after-condition", "2"),
    Router({ name: "router", selector: () => "chosen", choices: [checks("chosen", "4#decision")] }),
    Loop({ name: "loop", maxIterations: 2, steps: [Step({ name: "iteration", executor: () => 1 })] }),
    checks("after-loop", "5"),
    Parallel({
      name: "parallel",
      steps: [
        checks("fast-branch", "6"),
        Step({
          name: "slow-branch",
          executor: async (input) => {
            await sleep(20);
            // Both branches check the step before the Parallel; this one also records a call.
            return input.step("late", () => 2);
          },
        }),
        checks("other-branch", "6"),
      ],
    }),
    checks("after-parallel", "7"),
    Step({
      name: "durable-call",
      executor: async (input) => {
        await input.step("record", () => 3);
        const row = reader.prepare("SELECT 1 FROM step_checkpoints WHERE run_id = ? AND step_path = ?").get(input.runId, `${input.stepPath}~0`);
        seen.push({ needs: `${input.stepPath}~0`, committed: row !== undefined });
        return null;
      },
    }),
    Loop({
      name: "loop-with-calls",
      maxIterations: 2,
      steps: [Step({ name: "tick", executor: () => 1 })],
      endCondition: async (_outputs, input) => (await input.step("decide", () => false)) as boolean,
    }),
  ],
});

beforeAll(async () => {
  t = await startServer({ workflows: [dependent] });
  reader = t.openReader();
});
afterAll(async () => {
  await t.close();
});

describe("nothing runs on an uncommitted outcome (I8)", () => {
  it("a step, every branch and a composite's next step start only once what they depend on is committed, and input.step returns once stored", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "dependent", message: "" });
    const frames = await client.untilTerminal();
    await client.close();
    expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
    expect(seen).toEqual(["0", "2#decision", "2", "4#decision", "5", "6", "6", "7", "9~0"].map((needs) => ({ needs, committed: true })));
    // Each loop iteration's end condition has its own durable calls.
    const calls = frames.filter((frame) => frame.event === "SubStepCompleted").map((frame) => frame.sub_step_key);
    expect(calls).toEqual(["7.1~0", "9~0", "10[1]~0", "10[2]~0"]);
  });
});
