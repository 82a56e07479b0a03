import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { range, startServer, type TestServer } from "../helpers/server.ts";
import { TestClient, indicesOf } from "../helpers/ws-client.ts";

let t: TestServer;
beforeAll(async () => {
  t = await startServer();
});
afterAll(async () => {
  await t.close();
});

const cases: { name: string; frame: string; code: string; mentions: string }[] = [
  { name: "text that is not JSON", frame: "{not json", code: "INVALID_JSON", mentions: "not valid JSON" },
  { name: "a JSON array", frame: "[1,2,3]", code: "INVALID_MESSAGE", mentions: "JSON object" },
  { name: "a JSON string", frame: '"ping"', code: "INVALID_MESSAGE", mentions: "JSON object" },
  { name: "null", frame: "null", code: "INVALID_MESSAGE", mentions: "JSON object" },
  { name: "an object without action", frame: '{"run_id":"x"}', code: "INVALID_MESSAGE", mentions: '"action"' },
  { name: "a numeric action", frame: '{"action":7}', code: "INVALID_MESSAGE", mentions: '"action"' },
  { name: "an unknown action", frame: '{"action":"explode"}', code: "UNKNOWN_ACTION", mentions: "Unknown action: explode" },
  {
    name: "start-workflow without workflow_id",
    frame: '{"action":"start-workflow","message":"hi"}',
    code: "INVALID_MESSAGE",
    mentions: "workflow_id",
  },
  {
    name: "start-workflow with a numeric message",
    frame: '{"action":"start-workflow","workflow_id":"ticker","message":42}',
    code: "INVALID_MESSAGE",
    mentions: "message",
  },
  {
    name: "reconnect with a string last_event_index",
    frame: '{"action":"reconnect","run_id":"r","last_event_index":"5"}',
    code: "INVALID_MESSAGE",
    mentions: "last_event_index",
  },
  {
    name: "reconnect with a fractional last_event_index",
    frame: '{"action":"reconnect","run_id":"r","last_event_index":1.5}',
    code: "INVALID_MESSAGE",
    mentions: "last_event_index",
  },
  {
    name: "reconnect with a negative last_event_index below -1",
    frame: '{"action":"reconnect","run_id":"r","last_event_index":-7}',
    code: "INVALID_MESSAGE",
    mentions: "last_event_index",
  },
  { name: "cancel without run_id", frame: '{"action":"cancel-workflow"}', code: "INVALID_MESSAGE", mentions: "run_id" },
  {
    name: "start-workflow for an unknown workflow",
    frame: '{"action":"start-workflow","workflow_id":"nope"}',
    code: "WORKFLOW_NOT_FOUND",
    mentions: "Workflow nope not found",
  },
  {
    name: "cancel of an unknown run",
    frame: '{"action":"cancel-workflow","run_id":"ghost"}',
    code: "RUN_NOT_FOUND",
    mentions: "Run ghost not found",
  },
  { name: "continue without run_id", frame: '{"action":"continue-workflow","workflow_id":"w"}', code: "INVALID_MESSAGE", mentions: "run_id" },
  {
    name: "continue of an unknown run",
    frame: '{"action":"continue-workflow","workflow_id":"w","run_id":"ghost","step_requirements":[{"confirmed":true}]}',
    code: "RUN_NOT_FOUND",
    mentions: "Run ghost not found",
  },
  { name: "signal without a name", frame: '{"action":"signal-workflow","run_id":"r"}', code: "INVALID_MESSAGE", mentions: "name" },
  {
    name: "signal with a 300-character name",
    frame: JSON.stringify({ action: "signal-workflow", run_id: "r", name: "n".repeat(300) }),
    code: "INVALID_MESSAGE",
    mentions: "name",
  },
  { name: "signal to an unknown run", frame: '{"action":"signal-workflow","run_id":"ghost","name":"go"}', code: "RUN_NOT_FOUND", mentions: "Run ghost not found" },
];

describe("bad input gets a clear error and leaves the socket, the server and the data unharmed (I7)", () => {
  it.each(cases)("$name → error $code, socket still answers ping", async ({ frame, code, mentions }) => {
    const { client } = await TestClient.connect(t.wsUrl);
    const error = await client.request(frame);
    expect(error.event).toBe("error");
    expect(error.code).toBe(code);
    expect(error.error).toContain(mentions);
    expect(await client.request({ action: "ping" })).toEqual({ event: "pong" });
    await client.close();
  });

  it("a binary frame is refused with a message that says to send JSON text", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    client.socket.send(Buffer.from([1, 2, 3]), { binary: true });
    const error = await client.next();
    expect(error).toMatchObject({ event: "error", code: "INVALID_MESSAGE" });
    expect(error.error).toContain("JSON text");
    expect(await client.request({ action: "ping" })).toEqual({ event: "pong" });
    await client.close();
  });

  it("an oversized frame closes only that socket with 1009; a run in flight and other clients are unharmed", async () => {
    const { client: watcher } = await TestClient.connect(t.wsUrl);
    watcher.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 50, delayMs: 2 } });
    const started = await watcher.next();

    const { client: abuser } = await TestClient.connect(t.wsUrl);
    abuser.send(JSON.stringify({ action: "start-workflow", workflow_id: "ticker", message: "x".repeat(2 * 1024 * 1024) }));
    const closed = await abuser.closed;
    expect(closed.code).toBe(1009);

    const rest = await watcher.untilTerminal();
    expect(indicesOf([started, ...rest])).toEqual(range(rest.length + 1));
    expect(rest.at(-1)?.event).toBe("WorkflowCompleted");
    expect(await t.storedIndices(started.run_id as string)).toEqual(range(rest.length + 1));
    await watcher.close();

    const { client: fresh, hello } = await TestClient.connect(t.wsUrl);
    expect(hello.event).toBe("connected");
    await fresh.close();
  });

  it("a burst of garbage from many sockets never stops the server", async () => {
    const clients = await Promise.all(range(10).map(() => TestClient.connect(t.wsUrl)));
    for (const { client } of clients) for (const junk of ["", "}", "[]", '{"action":null}', "\u0000"]) client.send(junk);
    for (const { client } of clients) {
      const errors = await client.take(5);
      expect(errors.every((e) => e.event === "error" && typeof e.error === "string" && e.error.length > 10)).toBe(true);
      await client.close();
    }
    const response = await fetch(`${t.url}/health`);
    expect(response.status).toBe(200);
  });

  it("a WebSocket upgrade on another path is refused with 404", async () => {
    const socket = new WebSocket(t.wsUrl.replace("/workflows/ws", "/elsewhere"));
    const status = await new Promise<number>((resolve) => {
      socket.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      socket.on("error", () => resolve(-1));
    });
    expect(status).toBe(404);
  });
});
