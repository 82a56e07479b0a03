import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { Agent, tool } from "../../src/agents/agent.ts";
import { Step, Workflow } from "../../src/workflows/definition.ts";
import { FakeOpenAI, textAnswer, toolCallAnswer } from "../helpers/fake-openai.ts";
import { range, startServer, waitFor, type TestServer } from "../helpers/server.ts";
import { TestClient, indicesOf, type Frame } from "../helpers/ws-client.ts";

const sent: string[] = [];
const sendEmail = tool({
  name: "send_email",
  description: "Sends an email.",
  parameters: z.object({ to: z.string() }),
  requiresConfirmation: true,
  execute: ({ to }) => {
    sent.push(to);
    return { sent: to };
  },
});

const mailer = Workflow({
  id: "mailer",
  steps: [Step({ name: "mail", agent: Agent({ name: "Mailer", model: "fake-model-1", instructions: "You send mail.", tools: [sendEmail] }) })],
});

let fake: FakeOpenAI;
let t: TestServer;
beforeAll(async () => {
  fake = await new FakeOpenAI().start();
  t = await startServer({ workflows: [mailer], openaiApiKey: "test-key", openaiBaseUrl: fake.url, modelRetries: 1 });
});
afterAll(async () => {
  await t.close();
  await fake.close();
});

async function pausedRun(): Promise<{ client: TestClient; before: Frame[] }> {
  fake.enqueue(toolCallAnswer([{ id: "call_1", name: "send_email", argumentPieces: ['{"to": "ann@example.com"}'] }]));
  const { client } = await TestClient.connect(t.wsUrl);
  client.send({ action: "start-workflow", workflow_id: "mailer", message: "mail ann" });
  const before: Frame[] = [];
  while (before.at(-1)?.event !== "WorkflowPaused") before.push(await client.next());
  return { client, before };
}

describe("tool({ requiresConfirmation: true }): the agent's step pauses before the call runs", () => {
  it("pauses with StepExecutorPaused (pause_kind executor); approved, the tool runs once and the agent goes on from its stored conversation", async () => {
    sent.length = 0;
    fake.requests.length = 0;
    const { client, before } = await pausedRun();
    expect(before.map((f) => f.event)).toEqual(["WorkflowStarted", "StepStarted", "RunStarted", "StepExecutorPaused", "WorkflowPaused"]);
    expect(before[3]).toMatchObject({
      executor_name: "Mailer",
      executor_type: "agent",
      executor_requirements: [{ id: "call_1", tool_execution: { tool_name: "send_email", tool_args: { to: "ann@example.com" }, confirmed: null } }],
    });
    expect(before[4]).toMatchObject({ pause_kind: "executor", step_requirements: [expect.objectContaining({ requires_executor_input: true })] });
    expect(sent).toEqual([]);
    const runId = String(before[0]?.run_id);
    const run = await waitFor("the run row to say paused", async () => {
      const json = (await (await fetch(`${t.url}/runs/${runId}`)).json()) as Record<string, unknown>;
      return json.status === "paused" ? json : undefined;
    });
    expect(run.waiting_for).toMatchObject({ kind: "tool_confirmation", name: "mail" });

    fake.enqueue(textAnswer(["Sent ", "it."]));
    client.send({
      action: "continue-workflow",
      workflow_id: "mailer",
      run_id: runId,
      step_requirements: [{ step_id: "0", executor_requirements: [{ confirmation: true }] }],
    });
    const after = await client.untilTerminal();
    await client.close();
    expect(after.map((f) => f.event)).toEqual(["StepExecutorContinued", "ToolCallStarted", "ToolCallCompleted", "RunContent", "RunContent", "RunCompleted", "StepCompleted", "WorkflowCompleted"]);
    const frames = [...before, ...after];
    expect(indicesOf(frames)).toEqual(range(frames.length));
    expect(after[0]).toMatchObject({ tool_call_id: "call_1", confirmed: true });
    expect(after[2]).toMatchObject({ result: { sent: "ann@example.com" }, error: null });
    expect(after.every((f) => f.agent_run_id === undefined || f.agent_run_id === before[2]?.agent_run_id)).toBe(true);
    expect(sent).toEqual(["ann@example.com"]);
    // Two model calls in all: the second carries the first's tool call and its result.
    expect(fake.requests).toHaveLength(2);
    expect(fake.requests[1]?.body.messages.at(-1)).toEqual({ role: "tool", tool_call_id: "call_1", content: '{"sent":"ann@example.com"}' });
  });

  it("rejected, the tool does not run; the model is told a person rejected it", async () => {
    sent.length = 0;
    fake.requests.length = 0;
    const { client, before } = await pausedRun();
    const runId = String(before[0]?.run_id);
    fake.enqueue(textAnswer(["Not sent."]));
    client.send({ action: "continue-workflow", workflow_id: "mailer", run_id: runId, step_requirements: [{ confirmed: false }] });
    const after = await client.untilTerminal();
    await client.close();
    expect(after[0]).toMatchObject({ event: "StepExecutorContinued", confirmed: false });
    expect(after.find((f) => f.event === "ToolCallCompleted")).toMatchObject({ result: null, error: expect.stringContaining("rejected") });
    expect(sent).toEqual([]);
    expect(String(fake.requests[1]?.body.messages.at(-1)?.content)).toContain("rejected");
    expect(after.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: "Not sent." });
  });
});
