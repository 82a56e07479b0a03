import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SseParser } from "../../src/protocol/sse.ts";
import { openDb } from "../../src/store/db.ts";
import { runFlowd } from "../../testkit/server-process.ts";
import { startServer, tempDir, waitFor, type TestServer } from "../helpers/server.ts";
import { TestClient } from "../helpers/ws-client.ts";

// A database that refuses some writes for real, as a full disk or a failing drive would:
// new `steps-flow` runs cannot be created, and `ticker` runs cannot store a 4th event.
let temp: ReturnType<typeof tempDir>;
let t: TestServer;
beforeAll(async () => {
  temp = tempDir();
  const dbPath = join(temp.dir, "flowd.db");
  const db = openDb(dbPath);
  db.sqlite.exec(`
    CREATE TRIGGER refuse_runs BEFORE INSERT ON runs WHEN NEW.workflow_id = 'steps-flow'
    BEGIN SELECT RAISE(ABORT, 'database or disk is full (simulated)'); END;
    CREATE TRIGGER refuse_events BEFORE INSERT ON events
    WHEN NEW.event_index >= 3 AND (SELECT workflow_id FROM runs WHERE run_id = NEW.run_id) = 'ticker'
    BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END;
  `);
  db.close();
  t = await startServer({ dbPath });
});
afterAll(async () => {
  await t.close();
  temp.remove();
});

describe("when the database refuses a run's writes", () => {
  it("a WebSocket client following the run gets an error frame that says why and what to do, not silence", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 10 } });
    const frames = await client.take(4);
    expect(frames.slice(0, 3).map((frame) => frame.event_index)).toEqual([0, 1, 2]);
    expect(frames[3]).toMatchObject({ event: "error", code: "STORAGE_FAILED", run_id: frames[0]?.run_id });
    expect(frames[3]?.error).toContain("disk I/O error (simulated)");
    expect(frames[3]?.error).toContain("last_event_index");
    // The server goes on serving.
    expect((await fetch(`${t.url}/health`)).status).toBe(200);
    client.send({ action: "ping" });
    expect(await client.next()).toMatchObject({ event: "pong" });
    // A client reconnecting later gets what was stored, then the same reason.
    client.send({ action: "reconnect", run_id: frames[0]?.run_id, last_event_index: 1 });
    const again = await client.take(3);
    expect(again.map((frame) => frame.event)).toEqual(["catch_up", "RunContent", "error"]);
    expect(again[2]).toMatchObject({ code: "STORAGE_FAILED", error: frames[3]?.error });
    client.socket.close();
  });

  it("a client starting a run whose row cannot be stored is told at once that nothing of it was stored", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "steps-flow", message: "hi" });
    const frame = await client.next(5_000);
    expect(frame).toMatchObject({ event: "error", code: "STORAGE_FAILED" });
    expect(frame.error).toContain("could not be created");
    expect(frame.error).toContain("database or disk is full (simulated)");
    const reader = t.openReader();
    expect(reader.prepare("SELECT count(*) AS n FROM runs WHERE run_id = ?").get(frame.run_id)).toEqual({ n: 0 });
    client.socket.close();
  });

  it("an SSE stream gets an error event without an id, then ends", async () => {
    const response = await fetch(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ message: "go", additional_data: { count: 10 } }),
    });
    const text = await response.text();
    const messages = new SseParser().push(text);
    expect(messages.map((m) => m.event)).toEqual(["WorkflowStarted", "StepStarted", "RunContent", "error"]);
    expect(JSON.parse(messages[3]!.data)).toMatchObject({ event: "error", code: "STORAGE_FAILED" });
    // No id line: a client resuming with Last-Event-ID resumes after the last event it got.
    const errorBlock = text.split("\n\n").find((block) => block.includes("event: error"));
    expect(errorBlock).toBeDefined();
    expect(errorBlock).not.toMatch(/^id:/m);
  });

  it.each([{ stream: false }, { background: true }])(
    "an HTTP start (%j) whose run cannot be stored answers 503 STORAGE_FAILED at once",
    async (mode) => {
      const response = await fetch(`${t.url}/workflows/steps-flow/runs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ message: "hi", ...mode }),
        signal: AbortSignal.timeout(5_000),
      });
      expect(response.status).toBe(503);
      const body = (await response.json()) as { code: string; detail: string };
      expect(body.code).toBe("STORAGE_FAILED");
      expect(body.detail).toContain("could not be created");
    },
  );

  it("a run whose events stop being stored answers a stream=false start with 503, not silence", async () => {
    const response = await fetch(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ stream: false, additional_data: { count: 10 } }),
      signal: AbortSignal.timeout(5_000),
    });
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({ code: "STORAGE_FAILED" });
  });

  it("flowd runs events --follow prints what was stored, then stops with the server's reason instead of waiting", async () => {
    const started = (await (
      await fetch(`${t.url}/workflows/ticker/runs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ background: true, additional_data: { count: 10 } }),
      })
    ).json()) as { run_id: string };
    const reader = t.openReader();
    await waitFor("the run to stop at its refused event", () =>
      (reader.prepare("SELECT last_event_index FROM runs WHERE run_id = ?").get(started.run_id) as { last_event_index: number }).last_event_index === 2
        ? true
        : undefined,
    );
    const follower = runFlowd(["runs", "events", started.run_id, "--follow", "--json", "--url", t.url]);
    expect(await follower.exited).not.toBe(0);
    const output = follower.output();
    expect(output).toContain('"event_index":2');
    expect(output).toContain("disk I/O error (simulated)");
  });
});
