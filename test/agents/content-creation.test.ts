import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent, tool } from "../../src/agents/agent.ts";
import { contentCreationWorkflow } from "../../src/workflows/content-creation.ts";
import { Step } from "../../src/workflows/definition.ts";
import { z } from "zod";
import { FakeOpenAI, textAnswer, toolCallAnswer } from "../helpers/fake-openai.ts";
import { range, startServer } from "../helpers/server.ts";
import { TestClient, indicesOf, type Frame } from "../helpers/ws-client.ts";

/** A local stand-in for the Hacker News API (the tests never reach the internet). */
async function fakeHackerNews(): Promise<{ url: string; hits: string[]; close: () => Promise<void> }> {
  const hits: string[] = [];
  const items: Record<string, unknown> = {
    "1": { id: 1, type: "story", title: "Durable execution, explained", url: "https://example.test/1", score: 300, by: "ann", descendants: 42 },
    "2": { id: 2, type: "story", title: "Agents in production", url: "https://example.test/2", score: 200, by: "bob", descendants: 7 },
  };
  const server: Server = createServer((req, res) => {
    hits.push(req.url ?? "");
    const body = req.url === "/v0/topstories.json" ? [1, 2] : (items[/\/item\/(\d+)\.json/.exec(req.url ?? "")?.[1] ?? ""] ?? null);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v0`,
    hits,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function runContentCreation(wsUrl: string, message: string): Promise<Frame[]> {
  const { client } = await TestClient.connect(wsUrl);
  client.send({ action: "start-workflow", workflow_id: "content-creation-workflow", message });
  const frames = await client.untilTerminal();
  await client.close();
  expect(indicesOf(frames)).toEqual(range(frames.length));
  return frames;
}

describe("content-creation-workflow end to end", () => {
  let fake: FakeOpenAI;
  let hn: Awaited<ReturnType<typeof fakeHackerNews>>;
  beforeAll(async () => {
    fake = await new FakeOpenAI().start();
    hn = await fakeHackerNews();
  });
  afterAll(async () => {
    await fake.close();
    await hn.close();
  });

  it("against an OpenAI-compatible server: research with Hacker News tools, then a plan built on it", async () => {
    const t = await startServer({
      workflows: [contentCreationWorkflow({ hackerNews: { baseUrl: hn.url }, plannerModel: "planner-model" })],
      openaiApiKey: "k",
      openaiBaseUrl: fake.url,
    });
    try {
      fake.enqueue(
        toolCallAnswer([{ id: "t1", name: "get_top_hackernews_stories", argumentPieces: ['{"num_', 'stories": 2}'] }]),
        textAnswer(["Notes: ", "durable execution is hot."]),
        textAnswer(["Week 1: ", "explainer."]),
      );
      const frames = await runContentCreation(t.wsUrl, "AI agents");
      const sequence = frames.map((f) => (f.step_name ? `${f.event}:${String(f.step_name)}` : f.event));
      expect(sequence).toEqual([
        "WorkflowStarted",
        "StepStarted:Research Step",
        "RunStarted:Research Step",
        "ToolCallStarted:Research Step",
        "ToolCallCompleted:Research Step",
        "RunContent:Research Step",
        "RunContent:Research Step",
        "RunCompleted:Research Step",
        "StepCompleted:Research Step",
        "StepStarted:Content Planning Step",
        "RunStarted:Content Planning Step",
        "RunContent:Content Planning Step",
        "RunContent:Content Planning Step",
        "RunCompleted:Content Planning Step",
        "StepCompleted:Content Planning Step",
        "WorkflowCompleted",
      ]);
      expect(frames[4]?.result).toEqual([
        expect.objectContaining({ id: 1, title: "Durable execution, explained", comments: 42 }),
        expect.objectContaining({ id: 2, title: "Agents in production" }),
      ]);
      expect(hn.hits).toEqual(["/v0/topstories.json", "/v0/item/1.json", "/v0/item/2.json"]);
      expect(frames.at(-1)?.content).toBe("Week 1: explainer.");
      // The planner sees the research as context, and uses its own model.
      const plannerRequest = fake.requests[2]?.body;
      expect(plannerRequest?.model).toBe("planner-model");
      expect(plannerRequest?.messages[0]?.content).toContain("Notes: durable execution is hot.");
      expect(plannerRequest?.messages[1]).toEqual({ role: "user", content: "AI agents" });
      expect(fake.requests[0]?.body.model).toBe("gpt-4o-mini");
    } finally {
      await t.close();
    }
  });

  it("against the offline demo model: deterministic streamed text, no tool calls, no network", async () => {
    const t = await startServer();
    try {
      const first = await runContentCreation(t.wsUrl, "AI agents");
      const second = await runContentCreation(t.wsUrl, "AI agents");
      const text = (frames: Frame[]) => frames.filter((f) => f.event === "RunContent").map((f) => f.content);
      expect(text(first)).toEqual(text(second));
      expect(first.length).toBeGreaterThan(60);
      expect(first.some((f) => f.event.startsWith("ToolCall"))).toBe(false);
      expect(first.filter((f) => f.event === "RunCompleted").map((f) => f.model)).toEqual(["offline-demo", "offline-demo"]);
      expect(first.at(-1)?.content).toContain('Content plan for "AI agents"');
    } finally {
      await t.close();
    }
  });
});

describe("defining agents and tools", () => {
  it("rejects what the model API would refuse, with messages that say what to change", () => {
    expect(() => tool({ name: "has space", description: "", parameters: z.object({}), execute: () => 1 })).toThrow(/Tool name "has space"/);
    const t1 = tool({ name: "t", description: "", parameters: z.object({}), execute: () => 1 });
    expect(() => Agent({ name: "a", tools: [t1, t1] })).toThrow(/two tools named "t"/);
    expect(() => Agent({ name: "" })).toThrow(/non-empty "name"/);
    expect(() => Step({ name: "s", agent: { kind: "nope" } as never })).toThrow(/made with Agent/);
    expect(() => Step({ name: "s", executor: () => 1, agent: Agent({ name: "a" }) } as never)).toThrow(/exactly one of/);
  });
});
