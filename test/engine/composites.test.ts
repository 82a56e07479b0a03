import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { range, startServer, type TestServer } from "../helpers/server.ts";
import { TestClient, indicesOf, type Frame } from "../helpers/ws-client.ts";

let t: TestServer;
beforeAll(async () => {
  t = await startServer();
});
afterAll(async () => {
  await t.close();
});

/** Runs a workflow over a real socket and returns its events as "Event:step" strings plus the frames. */
async function run(workflowId: string, message: string): Promise<{ sequence: string[]; frames: Frame[] }> {
  const { client } = await TestClient.connect(t.wsUrl);
  client.send({ action: "start-workflow", workflow_id: workflowId, message });
  const frames = await client.untilTerminal();
  await client.close();
  expect(indicesOf(frames)).toEqual(range(frames.length));
  const sequence = frames.map((f) => (typeof f.step_name === "string" ? `${f.event}:${f.step_name}` : f.event));
  return { sequence, frames };
}

async function runRow(runId: unknown): Promise<{ status: string; output: string | null; error: string | null } | undefined> {
  const [row] = await t.query<{ status: string; output: string | null; error: string | null }>(
    "SELECT status, CAST(output AS TEXT) AS output, error FROM runs WHERE run_id = ?",
    runId,
  );
  return row;
}

describe("composite steps emit the AgentOS event sequence", () => {
  it("Steps runs its children in order and feeds each the previous output", async () => {
    const { sequence, frames } = await run("steps-flow", "hi");
    expect(sequence).toEqual([
      "WorkflowStarted",
      "StepsExecutionStarted:group",
      "StepStarted:first",
      "StepCompleted:first",
      "StepStarted:second",
      "StepCompleted:second",
      "StepsExecutionCompleted:group",
      "StepStarted:after",
      "StepCompleted:after",
      "WorkflowCompleted",
    ]);
    expect(frames.at(-1)?.content).toBe("hi!|hi!?");
    expect(frames.find((f) => f.step_name === "second")?.step_path).toBe("0.1");
    expect(await runRow(frames[0]?.run_id)).toMatchObject({ status: "completed", output: JSON.stringify("hi!|hi!?") });
  });

  it("Parallel runs branches concurrently and outputs each branch by name", async () => {
    const { sequence, frames } = await run("parallel-flow", "x");
    expect(sequence[0]).toBe("WorkflowStarted");
    expect(sequence[1]).toBe("ParallelExecutionStarted:fan-out");
    // Both branches start before either completes; the faster one completes first.
    expect(sequence.slice(2, 4).sort()).toEqual(["StepStarted:left", "StepStarted:right"]);
    expect(sequence.slice(4, 6)).toEqual(["StepCompleted:right", "StepCompleted:left"]);
    expect(sequence.slice(6)).toEqual([
      "ParallelExecutionCompleted:fan-out",
      "StepStarted:join",
      "StepCompleted:join",
      "WorkflowCompleted",
    ]);
    expect(JSON.parse(frames.at(-1)?.content as string)).toEqual({ left: "L:x", right: "R:x" });
  });

  it("Condition takes the true branch or the else branch and records its decision", async () => {
    const long = await run("condition-flow", "a long message");
    expect(long.sequence).toEqual([
      "WorkflowStarted",
      "ConditionExecutionStarted:is-long",
      "StepStarted:long-path",
      "StepCompleted:long-path",
      "ConditionExecutionCompleted:is-long",
      "WorkflowCompleted",
    ]);
    expect(long.frames[1]?.condition_result).toBe(true);
    const short = await run("condition-flow", "hey");
    expect(short.sequence).toContain("StepStarted:short-path");
    expect(short.frames[1]?.condition_result).toBe(false);
    expect(short.frames.find((f) => f.step_name === "short-path")?.step_path).toBe("0.else.0");
  });

  it("Loop repeats until its end condition and numbers its iterations", async () => {
    const { sequence, frames } = await run("loop-flow", "0");
    expect(sequence).toEqual([
      "WorkflowStarted",
      "LoopExecutionStarted:count-up",
      ...[1, 2, 3].flatMap(() => [
        "LoopIterationStarted:count-up",
        "StepStarted:increment",
        "StepCompleted:increment",
        "LoopIterationCompleted:count-up",
      ]),
      "LoopExecutionCompleted:count-up",
      "WorkflowCompleted",
    ]);
    expect(frames.filter((f) => f.event === "LoopIterationStarted").map((f) => f.iteration)).toEqual([1, 2, 3]);
    expect(frames.filter((f) => f.event === "StepStarted").map((f) => f.step_path)).toEqual(["0[1].0", "0[2].0", "0[3].0"]);
    expect(frames.find((f) => f.event === "LoopExecutionCompleted")?.total_iterations).toBe(3);
    expect(frames.at(-1)?.content).toBe(3);
  });

  it("Router runs the choice its selector names", async () => {
    const up = await run("router-flow", "up and away");
    expect(up.sequence).toEqual([
      "WorkflowStarted",
      "RouterExecutionStarted:pick",
      "StepStarted:upper",
      "StepCompleted:upper",
      "RouterExecutionCompleted:pick",
      "WorkflowCompleted",
    ]);
    expect(up.frames[1]?.selected_steps).toEqual(["upper"]);
    expect(up.frames.at(-1)?.content).toBe("UP AND AWAY");
    const other = await run("router-flow", "abc");
    expect(other.frames.at(-1)?.content).toBe("cba");
  });

  it("a generator step streams RunContent and CustomEvent, and its output is the text", async () => {
    const { sequence, frames } = await run("custom-events", "");
    expect(sequence).toEqual([
      "WorkflowStarted",
      "StepStarted:emit",
      "RunContent:emit",
      "CustomEvent:emit",
      "RunContent:emit",
      "StepCompleted:emit",
      "WorkflowCompleted",
    ]);
    expect(frames[3]).toMatchObject({ name: "progress", data: { done: 1, of: 2 } });
    expect(frames.at(-1)?.content).toBe("hello world");
  });

  it("a generator step that returns nothing outputs all the text it streamed, however long the stream", async () => {
    const count = 10_000;
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "chatter", additional_data: { count } });
    const frames = await client.untilTerminal();
    await client.close();
    const text = range(count).map((i) => `${i} `).join("");
    expect(frames.filter((f) => f.event === "RunContent")).toHaveLength(count);
    expect(frames.find((f) => f.event === "StepCompleted")?.content).toBe(text);
    expect(frames.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: text });
    expect(await runRow(frames[0]?.run_id)).toMatchObject({ status: "completed", output: JSON.stringify(text) });
  });

  it("a throwing step gives StepError then WorkflowError, and the run row keeps the message", async () => {
    const { sequence, frames } = await run("failing-flow", "");
    expect(sequence).toEqual([
      "WorkflowStarted",
      "StepStarted:fine",
      "StepCompleted:fine",
      "StepStarted:explode",
      "StepError:explode",
      "WorkflowError:explode",
    ]);
    expect(frames[4]?.error).toBe("disk on fire");
    expect(frames.at(-1)?.error).toBe('Step "explode" failed: disk on fire');
    expect(await runRow(frames[0]?.run_id)).toMatchObject({ status: "error", error: 'Step "explode" failed: disk on fire' });
  });

  it("every run event carries the envelope fields AgentOS clients read", async () => {
    const { frames } = await run("steps-flow", "hi");
    for (const frame of frames) {
      expect(frame).toMatchObject({
        run_id: frames[0]?.run_id,
        workflow_id: "steps-flow",
        workflow_name: "steps-flow",
      });
      expect(typeof frame.session_id).toBe("string");
      expect(Number.isInteger(frame.created_at)).toBe(true);
      expect(Math.abs((frame.created_at as number) - Date.now() / 1000)).toBeLessThan(60);
    }
  });
});
