import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SseParser } from "../../src/protocol/sse.ts";
import { range, startServer, type TestServer } from "../helpers/server.ts";

let t: TestServer;
beforeAll(async () => {
  t = await startServer();
});
afterAll(async () => {
  await t.close();
});

type Json = Record<string, unknown>;

async function json(path: string, init?: RequestInit): Promise<{ status: number; body: Json & Json[] }> {
  const response = await fetch(`${t.url}${path}`, init);
  return { status: response.status, body: (await response.json()) as Json & Json[] };
}

function postJson(path: string, body: unknown): Promise<{ status: number; body: Json & Json[] }> {
  return json(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

/** Reads an SSE response to its end and returns its messages with parsed data. */
async function readSse(response: Response): Promise<{ id: string | null; event: string; data: Json }[]> {
  expect(response.headers.get("content-type")).toContain("text/event-stream");
  const parser = new SseParser();
  const messages = parser.push(await response.text());
  return messages.map((m) => ({ id: m.id, event: m.event, data: JSON.parse(m.data) as Json }));
}

describe("workflows", () => {
  it("GET /health answers ok", async () => {
    expect(await json("/health")).toMatchObject({ status: 200, body: { status: "ok" } });
  });

  it("GET /workflows lists every workflow with id, name and description", async () => {
    const { status, body } = await json("/workflows");
    expect(status).toBe(200);
    expect(body.map((w) => w.id)).toContain("content-creation-workflow");
    expect(body.find((w) => w.id === "ticker")).toEqual({ id: "ticker", name: "Ticker", description: "" });
  });

  it("GET /workflows/{id} shows the step tree; an unknown id is a 404 that lists the known ones", async () => {
    const { body } = await json("/workflows/condition-flow");
    expect(body.steps).toEqual([
      {
        name: "is-long",
        type: "condition",
        steps: [{ name: "long-path", type: "step" }],
        else_steps: [{ name: "short-path", type: "step" }],
      },
    ]);
    const missing = await json("/workflows/nope");
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ code: "WORKFLOW_NOT_FOUND" });
    expect(missing.body.detail).toContain("ticker");
  });
});

describe("POST /workflows/{id}/runs", () => {
  it("streams the run as SSE by default, with id = event_index and event = type, to the terminal event", async () => {
    const response = await fetch(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ message: "go", additional_data: { count: 5 } }),
    });
    expect(response.status).toBe(200);
    const messages = await readSse(response);
    expect(messages.map((m) => m.id)).toEqual(range(9).map(String));
    expect(messages.map((m) => m.event)).toEqual(messages.map((m) => m.data.event));
    expect(messages.at(-1)?.event).toBe("WorkflowCompleted");
  });

  it("accepts a form body (curl -d message=hi) and stream=false waits and returns the finished run", async () => {
    const response = await fetch(`${t.url}/workflows/steps-flow/runs`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "message=hi&stream=false&session_id=form-session",
    });
    expect(response.status).toBe(200);
    const run = (await response.json()) as Json;
    expect(run).toMatchObject({
      workflow_id: "steps-flow",
      status: "completed",
      content: "hi!|hi!?",
      session_id: "form-session",
      event_count: 10,
      last_event_index: 9,
    });
  });

  it("background=true answers 202 with the run id at once; GET shows it until it is done", async () => {
    const { status, body } = await postJson("/workflows/ticker/runs", {
      background: true,
      additional_data: { count: 30, delayMs: 5 },
    });
    expect(status).toBe(202);
    expect(body.status).toBe("running");
    const runId = body.run_id as string;
    let final: Json = {};
    for (let i = 0; i < 200 && final.status !== "completed"; i++) {
      final = (await json(`/workflows/ticker/runs/${runId}`)).body;
      if (final.status !== "completed") await new Promise((r) => setTimeout(r, 20));
    }
    expect(final).toMatchObject({ run_id: runId, status: "completed", content: "ticked 30", event_count: 34 });
  });

  it("rejects bad bodies with the status and a detail that names the problem", async () => {
    const wrongType = await postJson("/workflows/ticker/runs", { message: 42 });
    expect(wrongType.status).toBe(422);
    expect(wrongType.body).toMatchObject({ code: "INVALID_REQUEST" });
    expect(wrongType.body.detail).toContain("message");

    const badFlag = await postJson("/workflows/ticker/runs", { stream: "perhaps" });
    expect(badFlag.status).toBe(422);
    expect(badFlag.body.detail).toContain("stream");

    const notJson = await json("/workflows/ticker/runs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{nope",
    });
    expect(notJson).toMatchObject({ status: 400, body: { code: "INVALID_JSON" } });

    const text = await json("/workflows/ticker/runs", { method: "POST", headers: { "content-type": "text/plain" }, body: "hi" });
    expect(text).toMatchObject({ status: 415, body: { code: "UNSUPPORTED_MEDIA_TYPE" } });

    const huge = await postJson("/workflows/ticker/runs", { message: "x".repeat(2 * 1024 * 1024) });
    expect(huge).toMatchObject({ status: 413, body: { code: "BODY_TOO_LARGE" } });

    const unknown = await postJson("/workflows/nope/runs", {});
    expect(unknown).toMatchObject({ status: 404, body: { code: "WORKFLOW_NOT_FOUND" } });

    expect(await json("/nothing/here")).toMatchObject({ status: 404, body: { code: "NOT_FOUND" } });
    expect((await json("/health")).status).toBe(200);
  });
});

describe("runs", () => {
  it("GET /workflows/{id}/runs filters by session and status, and pages", async () => {
    for (let i = 0; i < 3; i++) {
      await postJson("/workflows/steps-flow/runs", { message: `m${i}`, stream: false, session_id: "paging" });
    }
    await postJson("/workflows/failing-flow/runs", { stream: false, session_id: "paging" });
    const all = await json("/workflows/steps-flow/runs?session_id=paging");
    expect(all.body.map((r) => r.input)).toEqual(["m2", "m1", "m0"]);
    const page = await json("/workflows/steps-flow/runs?session_id=paging&limit=2&offset=1");
    expect(page.body.map((r) => r.input)).toEqual(["m1", "m0"]);
    const failed = await json("/workflows/failing-flow/runs?status=error&session_id=paging");
    expect(failed.body).toHaveLength(1);
    expect(failed.body[0]).toMatchObject({ status: "error", error: 'Step "explode" failed: disk on fire' });
    const bad = await json("/workflows/steps-flow/runs?status=sleeping");
    expect(bad).toMatchObject({ status: 422, body: { code: "INVALID_REQUEST" } });
  });

  it("GET a run under another workflow's path is a 404", async () => {
    const { body } = await postJson("/workflows/steps-flow/runs", { stream: false });
    const wrong = await json(`/workflows/ticker/runs/${body.run_id as string}`);
    expect(wrong).toMatchObject({ status: 404, body: { code: "RUN_NOT_FOUND" } });
    expect((await json(`/runs/${body.run_id as string}`)).body).toMatchObject({ workflow_id: "steps-flow" });
  });

  it("cancel ends a running run with WorkflowCancelled; a finished one answers 409, an unknown one 404", async () => {
    const { body } = await postJson("/workflows/ticker/runs", { background: true, additional_data: { count: 1000, delayMs: 5 } });
    const runId = body.run_id as string;
    const cancel = await json(`/workflows/ticker/runs/${runId}/cancel`, { method: "POST" });
    expect(cancel.status).toBe(200);
    expect(cancel.body.cancel_requested_at).toEqual(expect.any(Number));
    const events = await readSse(await fetch(`${t.url}/runs/${runId}/events`));
    expect(events.at(-1)?.event).toBe("WorkflowCancelled");
    expect((await json(`/runs/${runId}`)).body.status).toBe("cancelled");
    expect(await json(`/workflows/ticker/runs/${runId}/cancel`, { method: "POST" })).toMatchObject({
      status: 409,
      body: { code: "RUN_FINISHED" },
    });
    expect(await json(`/workflows/ticker/runs/ghost/cancel`, { method: "POST" })).toMatchObject({
      status: 404,
      body: { code: "RUN_NOT_FOUND" },
    });
  });

  it("resume streams SSE from the last_event_index in the body", async () => {
    const { body } = await postJson("/workflows/ticker/runs", { background: true, additional_data: { count: 20, delayMs: 2 } });
    const runId = body.run_id as string;
    const response = await fetch(`${t.url}/workflows/ticker/runs/${runId}/resume`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "last_event_index=9",
    });
    // The run may not have reached index 9 yet: the stream still starts at 10.
    const messages = await readSse(response);
    expect(messages.map((m) => Number(m.id))).toEqual(range(14).map((i) => 10 + i));
    const badIndex = await postJson(`/workflows/ticker/runs/${runId}/resume`, { last_event_index: "ten" });
    expect(badIndex).toMatchObject({ status: 422, body: { code: "INVALID_REQUEST" } });
  });
});

describe("GET /runs/{run_id}/events", () => {
  let runId: string;
  let total: number;
  beforeAll(async () => {
    const { body } = await postJson("/workflows/ticker/runs", { stream: false, additional_data: { count: 16 } });
    runId = body.run_id as string;
    total = body.event_count as number;
  });

  it("honours Last-Event-ID: a finished run sends only what follows it, then ends", async () => {
    const messages = await readSse(await fetch(`${t.url}/runs/${runId}/events`, { headers: { "last-event-id": "14" } }));
    expect(messages.map((m) => Number(m.id))).toEqual(range(total - 15).map((i) => 15 + i));
    // Nothing follows the last index: 204, which stops a browser EventSource from reconnecting.
    const none = await fetch(`${t.url}/runs/${runId}/events`, { headers: { "last-event-id": String(total - 1) } });
    expect(none.status).toBe(204);
  });

  it("honours ?after=N, and Last-Event-ID wins over it", async () => {
    const after = await readSse(await fetch(`${t.url}/runs/${runId}/events?after=17`));
    expect(after.map((m) => Number(m.id))).toEqual([18, 19]);
    const both = await readSse(await fetch(`${t.url}/runs/${runId}/events?after=3`, { headers: { "last-event-id": "18" } }));
    expect(both.map((m) => Number(m.id))).toEqual([19]);
  });

  it("with Accept: application/json returns pages of stored frames", async () => {
    const headers = { accept: "application/json" };
    const first = await json(`/runs/${runId}/events?limit=8`, { headers });
    expect(first.status).toBe(200);
    expect((first.body.events as Json[]).map((e) => e.event_index)).toEqual(range(8));
    expect(first.body).toMatchObject({ status: "completed", finished: true, next_after: 7, has_more: true });
    const rest = await json(`/runs/${runId}/events?after=7&limit=100`, { headers });
    expect((rest.body.events as Json[]).map((e) => e.event_index)).toEqual(range(total - 8).map((i) => 8 + i));
    expect(rest.body).toMatchObject({ next_after: total - 1, has_more: false });
  });

  it("stores and returns text as it was streamed: quotes, backslashes, tabs, line breaks, \\N and \\. lines, any Unicode", async () => {
    const chunks = ['say "hi"\n', "back\\slash \\N \\t", "tab\there\r\n", "\\.\n", "\\.", "ünïcødé ✓ 🚀 \u2028 \u0001"];
    const done = await postJson("/workflows/verbatim/runs", { stream: false, additional_data: { chunks } });
    expect(done.status).toBe(200);
    const id = done.body.run_id as string;
    const page = await json(`/runs/${id}/events?limit=100`, { headers: { accept: "application/json" } });
    const contents = (page.body.events as Json[]).filter((e) => e.event === "RunContent").map((e) => e.content);
    expect(contents).toEqual(chunks);
    const stored = await t.query<{ payload: string }>("SELECT payload FROM events WHERE run_id = ? AND event = 'RunContent' ORDER BY event_index", id);
    expect(stored.map((row) => (JSON.parse(row.payload) as Json).content)).toEqual(chunks);
  });

  it("rejects a Last-Event-ID that is not an index, and unknown runs", async () => {
    const bad = await json(`/runs/${runId}/events`, { headers: { "last-event-id": "abc" } });
    expect(bad).toMatchObject({ status: 422, body: { code: "INVALID_REQUEST" } });
    expect(bad.body.detail).toContain("Last-Event-ID");
    expect(await json(`/runs/ghost/events`)).toMatchObject({ status: 404, body: { code: "RUN_NOT_FOUND" } });
  });
});

describe("with FLOWD_SECURITY_KEY", () => {
  it("needs Authorization: Bearer <key> everywhere but /health", async () => {
    const secured = await startServer({ securityKey: "k3y" });
    try {
      expect((await fetch(`${secured.url}/health`)).status).toBe(200);
      const missing = await fetch(`${secured.url}/workflows`);
      expect(missing.status).toBe(401);
      expect(await missing.json()).toMatchObject({ code: "AUTH_REQUIRED" });
      const wrong = await fetch(`${secured.url}/workflows`, { headers: { authorization: "Bearer nope" } });
      expect(wrong.status).toBe(401);
      expect(await wrong.json()).toMatchObject({ code: "AUTH_FAILED" });
      expect((await fetch(`${secured.url}/workflows`, { headers: { authorization: "Bearer k3y" } })).status).toBe(200);
    } finally {
      await secured.close();
    }
  });
});
