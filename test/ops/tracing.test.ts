import { trace } from "@opentelemetry/api";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer, waitFor, type TestServer } from "../helpers/server.ts";
import { TestClient } from "../helpers/ws-client.ts";

/** OpenTelemetry (DESIGN §13): what an application that registers an SDK sees of flowd's runs. */

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

function parentOf(span: ReadableSpan): string | undefined {
  return span.parentSpanContext?.spanId;
}

describe("OpenTelemetry spans", () => {
  let t: TestServer;
  beforeAll(async () => {
    trace.setGlobalTracerProvider(provider);
    t = await startServer();
  });
  afterAll(async () => {
    await t.close();
    await provider.shutdown();
    trace.disable();
  });

  const spansOf = (runId: string): ReadableSpan[] => exporter.getFinishedSpans().filter((span) => span.attributes["flowd.run_id"] === runId);

  it("a run, its steps and its model calls are spans with the right parents; a start with traceparent joins the caller's trace", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const callerSpan = "00f067aa0ba902b7";
    const answer = await fetch(`${t.url}/workflows/agent-flow/runs`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${traceId}-${callerSpan}-01` },
      body: JSON.stringify({ message: "hello", stream: false }),
    });
    const runId = ((await answer.json()) as { run_id: string; status: string }).run_id;
    const spans = await waitFor("the run's span to end", () => (spansOf(runId).some((span) => span.name.startsWith("flowd.run")) ? spansOf(runId) : undefined));
    const run = spans.find((span) => span.name === "flowd.run agent-flow")!;
    expect(run.spanContext().traceId).toBe(traceId);
    expect(parentOf(run)).toBe(callerSpan);
    expect(run.attributes).toMatchObject({ "flowd.run_id": runId, "flowd.workflow_id": "agent-flow", "flowd.attempt": 1, "flowd.outcome": "completed" });
    const steps = spans.filter((span) => span.name.startsWith("flowd.step"));
    expect(steps.map((span) => span.name).sort()).toEqual(["flowd.step answer", "flowd.step prepare"]);
    for (const step of steps) {
      expect(parentOf(step)).toBe(run.spanContext().spanId);
      expect(step.spanContext().traceId).toBe(traceId);
    }
    expect(steps.find((span) => span.name === "flowd.step answer")!.attributes).toMatchObject({ "flowd.step_path": "1", "flowd.attempt": 1 });
    const model = spans.filter((span) => span.name.startsWith("flowd.model_call"));
    expect(model.length).toBeGreaterThanOrEqual(1);
    expect(parentOf(model[0]!)).toBe(steps.find((span) => span.name === "flowd.step answer")!.spanContext().spanId);
    expect(model[0]!.attributes).toMatchObject({ "flowd.run_id": runId, "flowd.step_path": "1", "flowd.agent_name": "Answerer" });
    // The first attempt's span is stored with the run, for a resumed attempt to link to.
    const [row] = await t.query<{ trace_parent: string }>("SELECT trace_parent FROM runs WHERE run_id = ?", runId);
    expect(row!.trace_parent).toBe(`00-${traceId}-${run.spanContext().spanId}-01`);
  });

  it("the same over the WebSocket; a run that goes on after a wait is a new span linked to its first one; a malformed traceparent starts a new trace", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    client.send({ action: "start-workflow", workflow_id: "signalled", message: "x", traceparent: `00-${traceId}-b7ad6b7169203331-01` });
    const first = await client.next();
    const runId = first.run_id as string;
    await waitFor("the run to wait", async () => ((await t.query<{ status: string }>("SELECT status FROM runs WHERE run_id = ?", runId))[0]?.status === "waiting" ? true : undefined));
    await fetch(`${t.url}/runs/${runId}/signals/approved`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ by: "tester" }) });
    await client.untilTerminal();
    await client.close();
    const runs = await waitFor("both attempts' spans", () => {
      const found = spansOf(runId).filter((span) => span.name === "flowd.run signalled");
      return found.length === 2 ? found : undefined;
    });
    const [waited, wentOn] = runs.sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1]);
    expect(waited!.attributes["flowd.outcome"]).toBe("waiting");
    expect(waited!.spanContext().traceId).toBe(traceId);
    expect(wentOn!.attributes["flowd.outcome"]).toBe("completed");
    expect(wentOn!.links.map((link) => link.context.spanId)).toEqual([waited!.spanContext().spanId]);
    expect(wentOn!.links[0]!.context.traceId).toBe(traceId);

    const plain = await fetch(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: "not-a-traceparent" },
      body: JSON.stringify({ stream: false, additional_data: { count: 2 } }),
    });
    expect(plain.status).toBe(200);
    const plainId = ((await plain.json()) as { run_id: string }).run_id;
    const root = await waitFor("its span", () => spansOf(plainId).find((span) => span.name === "flowd.run ticker"));
    expect(parentOf(root)).toBeUndefined();
  });
});
