import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { SseParser } from "../../src/protocol/sse.ts";
import { range, startServer, tempDir, type TestServer } from "../helpers/server.ts";
import { TestClient, indicesOf, type Frame } from "../helpers/ws-client.ts";

type Json = Record<string, unknown>;
const servers: TestServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

async function server(options: Parameters<typeof startServer>[0] = {}): Promise<TestServer> {
  const t = await startServer(options);
  servers.push(t);
  return t;
}

/** POST /workflows/{id}/runs with an Idempotency-Key; returns the response. */
function start(t: TestServer, key: string | null, body: Json, workflowId = "ticker"): Promise<Response> {
  return fetch(`${t.url}/workflows/${workflowId}/runs`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key === null ? {} : { "idempotency-key": key }) },
    body: JSON.stringify(body),
  });
}

/** The run events of an SSE response, read to its end. */
async function sseEvents(response: Response): Promise<Json[]> {
  expect(response.status).toBe(200);
  return new SseParser().push(await response.text()).map((message) => JSON.parse(message.data) as Json);
}

async function runCount(t: TestServer, workflowId: string): Promise<number> {
  return (await t.query<{ n: number }>("SELECT CAST(count(*) AS INTEGER) AS n FROM runs WHERE workflow_id = ?", workflowId))[0]!.n;
}

const TICKS = { additional_data: { count: 20, delayMs: 5 } };

describe("idempotent starts (Idempotency-Key, idempotency_key)", () => {
  it("20 concurrent starts with one key make one run, and every caller gets all its events once, in order", async () => {
    const t = await server();
    const streams = await Promise.all(range(20).map(() => start(t, "order-42", TICKS).then(sseEvents)));
    const runIds = new Set(streams.map((events) => events[0]?.run_id));
    expect(runIds.size).toBe(1);
    for (const events of streams) {
      expect(events.map((event) => event.event_index)).toEqual(range(events.length));
      expect(events.at(-1)?.event).toBe("WorkflowCompleted");
      expect(events).toHaveLength(streams[0]!.length);
    }
    expect(await runCount(t, "ticker")).toBe(1);
  });

  it("a WebSocket start with the key a REST start used joins that run from index 0, and a background repeat answers its JSON", async () => {
    const t = await server();
    const first = (await (await start(t, "shared", { ...TICKS, background: true })).json()) as Json;
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "ticker", idempotency_key: "shared", ...TICKS });
    const frames = await client.untilTerminal();
    await client.close();
    expect(new Set(frames.map((frame) => frame.run_id))).toEqual(new Set([first.run_id]));
    expect(indicesOf(frames)).toEqual(range(frames.length));
    const again = await start(t, "shared", { ...TICKS, background: true });
    expect(again.status).toBe(202);
    expect(await again.json()).toMatchObject({ run_id: first.run_id, status: "completed" });
    expect(await runCount(t, "ticker")).toBe(1);
  });

  it("the same key with a different message or data is a 409 that names the run, on both transports, and starts nothing", async () => {
    const t = await server();
    const first = (await (await start(t, "k1", { ...TICKS, message: "a", background: true })).json()) as Json;
    const reused = await start(t, "k1", { ...TICKS, message: "b", background: true });
    expect(reused.status).toBe(409);
    const body = (await reused.json()) as Json;
    expect(body.code).toBe("IDEMPOTENCY_KEY_REUSED");
    expect(body.detail).toContain(String(first.run_id));
    expect(body.detail).toContain("new key");

    // The same data with its keys in another order is the same request.
    const reordered = await start(t, "k1", { additional_data: { delayMs: 5, count: 20 }, message: "a", background: true });
    expect(((await reordered.json()) as Json).run_id).toBe(first.run_id);

    const { client } = await TestClient.connect(t.wsUrl);
    const error = await client.request({ action: "start-workflow", workflow_id: "ticker", idempotency_key: "k1", message: "a", additional_data: { count: 21 } });
    expect(error).toMatchObject({ event: "error", code: "IDEMPOTENCY_KEY_REUSED" });
    // The socket is still usable.
    expect(await client.request({ action: "ping" })).toEqual({ event: "pong" });
    await client.close();
    expect(await runCount(t, "ticker")).toBe(1);
  });

  it("a key is scoped to its workflow, and starts without a key are never deduplicated", async () => {
    const t = await server();
    const a = (await (await start(t, "same", { background: true }, "steps-flow")).json()) as Json;
    const b = (await (await start(t, "same", { background: true }, "parallel-flow")).json()) as Json;
    expect(a.run_id).not.toBe(b.run_id);
    await start(t, null, { background: true }, "steps-flow");
    await start(t, null, { background: true }, "steps-flow");
    expect(await runCount(t, "steps-flow")).toBe(3);
  });

  it("a key outlives a restart, and starts a new run once it is older than FLOWD_IDEMPOTENCY_TTL", async () => {
    const dir = tempDir();
    try {
      const dbPath = `${dir.dir}/flowd.db`;
      const settings = { idempotencyTtl: "1s" };
      let t = await startServer({ dbPath, settings });
      const first = (await (await start(t, "daily", { background: true }, "steps-flow")).json()) as Json;
      await t.close();
      t = await server({ dbPath, settings });
      const repeat = (await (await start(t, "daily", { background: true }, "steps-flow")).json()) as Json;
      expect(repeat.run_id).toBe(first.run_id);
      await sleep(1100);
      const later = (await (await start(t, "daily", { background: true }, "steps-flow")).json()) as Json;
      expect(later.run_id).not.toBe(first.run_id);
      // The expired key now names the new run.
      const again = (await (await start(t, "daily", { background: true }, "steps-flow")).json()) as Json;
      expect(again.run_id).toBe(later.run_id);
    } finally {
      dir.remove();
    }
  });

  it("refuses a malformed key with a message that names it, over REST and WebSocket", async () => {
    const t = await server();
    const tooLong = await start(t, "x".repeat(256), { background: true });
    expect(tooLong.status).toBe(422);
    expect(((await tooLong.json()) as Json).detail).toContain("idempotency-key");
    const { client } = await TestClient.connect(t.wsUrl);
    const error: Frame = await client.request({ action: "start-workflow", workflow_id: "ticker", idempotency_key: "has space" });
    expect(error).toMatchObject({ event: "error", code: "INVALID_MESSAGE" });
    expect(String(error.error)).toContain("idempotency_key");
    await client.close();
    expect(await runCount(t, "ticker")).toBe(0);
  });
});
