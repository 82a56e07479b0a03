import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { Agent, tool } from "../../src/agents/agent.ts";
import { Step, Workflow } from "../../src/workflows/definition.ts";
import { FakeOpenAI, textAnswer, toolCallAnswer } from "../helpers/fake-openai.ts";
import { range, startServer, type TestServer } from "../helpers/server.ts";
import { TestClient, indicesOf, type Frame } from "../helpers/ws-client.ts";

const calls: string[] = [];
const adder = tool({
  name: "add",
  description: "Adds two numbers.",
  parameters: z.object({ a: z.number(), b: z.number() }),
  execute: ({ a, b }) => {
    calls.push(`add ${a} ${b}`);
    return { sum: a + b };
  },
});
const slowEcho = tool({
  name: "slow_echo",
  description: "Echoes text after a delay.",
  parameters: z.object({ text: z.string(), ms: z.number() }),
  execute: async ({ text, ms }) => {
    await sleep(ms);
    return text;
  },
});
const broken = tool({
  name: "broken",
  description: "Always fails.",
  parameters: z.object({}),
  execute: () => {
    throw new Error("tool exploded");
  },
});

const assistant = Workflow({
  id: "assistant",
  steps: [
    Step({
      name: "answer",
      agent: Agent({ name: "Helper", model: "fake-model-1", instructions: "You are helpful.", tools: [adder, slowEcho, broken] }),
    }),
  ],
});

let fake: FakeOpenAI;
let t: TestServer;
beforeAll(async () => {
  fake = await new FakeOpenAI().start();
  t = await startServer({ workflows: [assistant], openaiApiKey: "test-key", openaiBaseUrl: fake.url, modelRetries: 2 });
});
afterAll(async () => {
  await t.close();
  await fake.close();
});
afterEach(() => {
  fake.requests.length = 0;
  calls.length = 0;
});

async function run(message = "hello"): Promise<Frame[]> {
  const { client } = await TestClient.connect(t.wsUrl);
  client.send({ action: "start-workflow", workflow_id: "assistant", message });
  const frames = await client.untilTerminal();
  await client.close();
  expect(indicesOf(frames)).toEqual(range(frames.length));
  return frames;
}

const names = (frames: Frame[]) => frames.map((f) => f.event);

describe("an Agent step against an OpenAI-compatible endpoint", () => {
  it("streams the answer token by token and stores the final content as the step output", async () => {
    fake.enqueue(textAnswer(["Hel", "lo ", "there"]));
    const frames = await run("hi");
    expect(names(frames)).toEqual([
      "WorkflowStarted",
      "StepStarted",
      "RunStarted",
      "RunContent",
      "RunContent",
      "RunContent",
      "RunCompleted",
      "StepCompleted",
      "WorkflowCompleted",
    ]);
    const agentRunId = frames[2]?.agent_run_id;
    expect(frames[2]).toMatchObject({ agent_name: "Helper", model: "fake-model-1", step_name: "answer" });
    expect(frames.slice(3, 6).map((f) => [f.content, f.agent_run_id])).toEqual([
      ["Hel", agentRunId],
      ["lo ", agentRunId],
      ["there", agentRunId],
    ]);
    expect(frames[2]?.run_id).toBe(frames[0]?.run_id);
    expect(frames[6]).toMatchObject({
      content: "Hello there",
      usage: { prompt_tokens: 11, completion_tokens: 3, total_tokens: 14 },
    });
    expect(frames[6]?.time_to_first_token_ms).toEqual(expect.any(Number));
    expect(frames.at(-1)?.content).toBe("Hello there");

    const [request] = fake.requests;
    expect(request?.authorization).toBe("Bearer test-key");
    expect(request?.path).toBe("/v1/chat/completions");
    expect(request?.body).toMatchObject({ model: "fake-model-1", stream: true });
    expect(request?.body.messages).toEqual([
      { role: "system", content: "You are helpful." },
      { role: "user", content: "hi" },
    ]);
    expect(request?.body.tools?.map((x) => x.function.name)).toEqual(["add", "slow_echo", "broken"]);
    expect(request?.body.tools?.[0]?.function.parameters).toMatchObject({
      type: "object",
      properties: { a: { type: "number" }, b: { type: "number" } },
    });
  });

  it("runs a tool call whose arguments arrive in pieces, and sends the result back to the model", async () => {
    fake.enqueue(
      toolCallAnswer([{ id: "call_1", name: "add", argumentPieces: ['{"a": 2', ', "b"', ": 40}"] }]),
      textAnswer(["The sum is 42."]),
    );
    const frames = await run();
    expect(names(frames)).toEqual([
      "WorkflowStarted",
      "StepStarted",
      "RunStarted",
      "ToolCallStarted",
      "ToolCallCompleted",
      "RunContent",
      "RunCompleted",
      "StepCompleted",
      "WorkflowCompleted",
    ]);
    expect(frames[3]).toMatchObject({ tool_call_id: "call_1", tool_name: "add", tool_args: { a: 2, b: 40 } });
    expect(frames[4]).toMatchObject({ tool_name: "add", result: { sum: 42 }, error: null });
    expect(frames[4]?.duration_ms).toEqual(expect.any(Number));
    expect(calls).toEqual(["add 2 40"]);
    expect(frames[6]?.usage).toEqual({ prompt_tokens: 31, completion_tokens: 6, total_tokens: 37 });
    const second = fake.requests[1]?.body.messages ?? [];
    expect(second.at(-2)).toMatchObject({
      role: "assistant",
      tool_calls: [{ id: "call_1", type: "function", function: { name: "add", arguments: '{"a": 2, "b": 40}' } }],
    });
    expect(second.at(-1)).toEqual({ role: "tool", tool_call_id: "call_1", content: '{"sum":42}' });
  });

  it("runs two parallel tool calls concurrently and answers each by its id", async () => {
    fake.enqueue(
      toolCallAnswer([
        { id: "call_a", name: "slow_echo", argumentPieces: ['{"text":"first","ms":150}'] },
        { id: "call_b", name: "slow_echo", argumentPieces: ['{"text":"second","ms":10}'] },
      ]),
      textAnswer(["done"]),
    );
    const frames = await run();
    const toolEvents = frames.filter((f) => f.event.startsWith("ToolCall")).map((f) => `${f.event}:${String(f.tool_call_id)}`);
    expect(toolEvents).toEqual([
      "ToolCallStarted:call_a",
      "ToolCallStarted:call_b",
      "ToolCallCompleted:call_b",
      "ToolCallCompleted:call_a",
    ]);
    expect(fake.requests[1]?.body.messages.slice(-2)).toEqual([
      { role: "tool", tool_call_id: "call_a", content: "first" },
      { role: "tool", tool_call_id: "call_b", content: "second" },
    ]);
  });

  it("reports a throwing tool to the model as a tool error and in ToolCallCompleted", async () => {
    fake.enqueue(toolCallAnswer([{ id: "c", name: "broken", argumentPieces: ["{}"] }]), textAnswer(["I could not."]));
    const frames = await run();
    expect(frames.find((f) => f.event === "ToolCallCompleted")).toMatchObject({ error: "tool exploded", result: null });
    expect(fake.requests[1]?.body.messages.at(-1)).toEqual({ role: "tool", tool_call_id: "c", content: "Error: tool exploded" });
    expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
  });

  it("retries after 429 and reports the retry in the events", async () => {
    fake.enqueue({ kind: "error", status: 429, message: "slow down", retryAfter: "0" }, textAnswer(["ok"]));
    const frames = await run();
    const retry = frames.find((f) => f.event === "CustomEvent");
    expect(retry).toMatchObject({ name: "model_retry", data: { attempt: 1, status: 429, delay_ms: 0 } });
    expect(frames.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: "ok" });
    expect(fake.requests).toHaveLength(2);
  });

  it("gives up after 500 three times (two retries) with a message naming the endpoint and the status", async () => {
    for (let i = 0; i < 3; i++) fake.enqueue({ kind: "error", status: 500, message: "boom", retryAfter: "0" });
    const frames = await run();
    expect(frames.filter((f) => f.name === "model_retry")).toHaveLength(2);
    expect(names(frames).slice(-3)).toEqual(["RunError", "StepError", "WorkflowError"]);
    const error = frames.at(-1)?.error as string;
    expect(error).toContain(fake.url);
    expect(error).toContain("HTTP 500 after 3 attempts");
    expect(fake.requests).toHaveLength(3);
  });

  it("does not retry other 4xx answers", async () => {
    fake.enqueue({ kind: "error", status: 401, message: "bad key" });
    const frames = await run();
    expect(frames.at(-1)?.error).toContain("HTTP 401");
    expect(fake.requests).toHaveLength(1);
  });

  it("fails the step on a malformed chunk", async () => {
    fake.enqueue({ kind: "stream", chunks: ['{"id":"x","choices":[{"index":0,"delta":{"content":"ok"}}]}', "{not json"] });
    const frames = await run();
    expect(names(frames).slice(-3)).toEqual(["RunError", "StepError", "WorkflowError"]);
    expect(frames.at(-1)?.error).toContain("malformed");
    expect(frames.at(-1)?.error).toContain(fake.url);
  });

  it("fails the step when the connection drops mid-stream, keeping what streamed before", async () => {
    const answer = textAnswer(["part one ", "part two ", "never"]);
    if (answer.kind !== "stream") throw new Error("unreachable");
    fake.enqueue({ ...answer, chunks: answer.chunks.slice(0, 3), drop: true });
    const frames = await run();
    expect(frames.filter((f) => f.event === "RunContent").map((f) => f.content)).toEqual(["part one ", "part two "]);
    expect(frames.at(-1)?.event).toBe("WorkflowError");
    expect(frames.at(-1)?.error).toContain("broke off");
  });

  it("waits for a slow first token and reports the time to it", async () => {
    fake.enqueue(textAnswer(["late"], { firstDelayMs: 300 }));
    const frames = await run();
    const completed = frames.find((f) => f.event === "RunCompleted");
    expect(completed?.time_to_first_token_ms as number).toBeGreaterThanOrEqual(280);
    expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
  });
});

describe("model timeouts and unreachable endpoints", () => {
  it("fails a first token slower than FLOWD_MODEL_TIMEOUT_MS, saying which setting to change", async () => {
    const slow = await startServer({ workflows: [assistant], openaiApiKey: "k", openaiBaseUrl: fake.url, modelTimeoutMs: 150 });
    try {
      fake.enqueue(textAnswer(["too late"], { firstDelayMs: 600 }));
      const { client } = await TestClient.connect(slow.wsUrl);
      client.send({ action: "start-workflow", workflow_id: "assistant" });
      const frames = await client.untilTerminal();
      await client.close();
      expect(frames.at(-1)?.error).toContain("longer than 150 ms");
      expect(frames.at(-1)?.error).toContain("FLOWD_MODEL_TIMEOUT_MS");
    } finally {
      await slow.close();
    }
  });

  it("with a key set, never falls back to the offline model: an unreachable endpoint fails the run", async () => {
    const down = await startServer({ workflows: [assistant], openaiApiKey: "k", openaiBaseUrl: "http://127.0.0.1:9/v1", modelRetries: 0 });
    try {
      const { client } = await TestClient.connect(down.wsUrl);
      client.send({ action: "start-workflow", workflow_id: "assistant" });
      const frames = await client.untilTerminal();
      await client.close();
      expect(frames.some((f) => f.event === "RunContent")).toBe(false);
      expect(frames.at(-1)?.error).toContain("Could not reach model endpoint http://127.0.0.1:9/v1");
    } finally {
      await down.close();
    }
  });
});

describe("cancel during an agent step", () => {
  it("aborts the model stream and ends with WorkflowCancelled", async () => {
    fake.enqueue(textAnswer(range(50).map((i) => `t${i} `), { delayMs: 30 }));
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "assistant" });
    const first = await client.take(5);
    client.send({ action: "cancel-workflow", run_id: first[0]?.run_id });
    const rest = await client.untilTerminal();
    await client.close();
    expect(rest.at(-1)?.event).toBe("WorkflowCancelled");
    expect([...first, ...rest].filter((f) => f.event === "RunContent").length).toBeLessThan(20);
  });
});
