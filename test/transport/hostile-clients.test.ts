import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { startServer, tempDir, waitFor, type TestServer } from "../helpers/server.ts";
import { PAGE_MAX_CHARS } from "../../src/store/event-reader.ts";
import { REPO_ROOT, startServerProcess, type ServerProcess } from "../../testkit/server-process.ts";
import { TestClient } from "../helpers/ws-client.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

/** `{d: {d: … {}}}`, `depth` objects deep, as JSON text (built as text: no stack needed). */
function nestedJson(depth: number): string {
  return `${'{"d":'.repeat(depth - 1)}{}${"}".repeat(depth - 1)}`;
}

/** A raw HTTP request on a socket that then reads nothing, as a tab put to sleep. */
function stalledRequest(port: number, request: string): Socket {
  const socket = connect(port, "127.0.0.1");
  socket.on("error", () => {});
  socket.write(request);
  socket.pause();
  return socket;
}

/** Runs the test `ticker` workflow to its end (a `stream=false` start) and returns its id. */
async function finishedTickerRun(url: string, settings: Record<string, number>): Promise<string> {
  const start = await fetch(`${url}/workflows/ticker/runs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ stream: false, additional_data: settings }),
  });
  expect(start.status).toBe(200);
  return ((await start.json()) as { run_id: string }).run_id;
}

interface Health {
  status: string;
  streaming_connections: number;
  unsent_bytes: number;
}

async function health(url: string): Promise<Health> {
  return (await (await fetch(`${url}/health`)).json()) as Health;
}

describe("a client that stops reading an SSE stream", () => {
  let temp: ReturnType<typeof tempDir>;
  let server: ServerProcess;
  beforeEach(async () => {
    temp = tempDir();
    // Stalls are cut after 200 ms and quiet streams get a heartbeat every 50 ms, so a write
    // after the end of a stalled stream would come at once.
    server = await startServerProcess(["--workflows", FIXTURES, "--db", join(temp.dir, "flowd.db")], {
      env: { FLOWD_STALL_TIMEOUT_MS: "200", FLOWD_SSE_HEARTBEAT_MS: "50" },
    });
  });
  afterEach(async () => {
    await server.stop();
    temp.remove();
  });

  it("is cut off without harm: the server stays up and serves everyone else", async () => {
    // A large finished run: ~8 MB of events, more than the kernel's socket buffers hold.
    const runId = await finishedTickerRun(server.url, { count: 20_000, burst: 50, pad: 400 });

    const readers = [
      stalledRequest(server.port, `GET /runs/${runId}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`),
      stalledRequest(
        server.port,
        `POST /workflows/ticker/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 67\r\n\r\n` +
          JSON.stringify({ additional_data: { count: 20_000, burst: 50, pad: 400 } }).padEnd(67),
      ),
    ];
    // Many stall timeouts and heartbeats later…
    await sleep(2_000);
    expect(server.child.exitCode).toBeNull();
    expect(server.child.signalCode).toBeNull();

    // …the server still answers, and another client's run goes from start to end.
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const { client } = await TestClient.connect(server.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 50 } });
    const frames = await client.untilTerminal();
    expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
    await client.close();
    // The stalled streams were cut off, not kept: nothing of theirs is held any more.
    await waitFor("the stalled streams to be cut off", async () => ((await health(server.url)).streaming_connections === 0 ? true : undefined));
    for (const socket of readers) socket.destroy();
    expect(server.output()).not.toContain("ERR_STREAM_WRITE_AFTER_END");
  });
});

describe("a WebSocket client that floods the server and never reads", () => {
  const BUDGET = 64 * 1024;
  let t: TestServer;
  beforeEach(async () => {
    t = await startServer({ settings: { maxUnsentBytes: BUDGET } });
  });
  afterEach(async () => {
    await t.close();
  });

  it("is closed with 1008 once its unread answers pass FLOWD_MAX_UNSENT_BYTES; the server's unsent bytes stay bounded", async () => {
    const flooder = new WebSocket(t.wsUrl);
    await new Promise((resolve, reject) => {
      flooder.once("open", resolve);
      flooder.once("error", reject);
    });
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      flooder.on("close", (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    const tcp = (flooder as unknown as { _socket: Socket })._socket;
    tcp.pause(); // reads nothing from here on

    // 300,000 invalid 7-byte frames, each answered with a ~200-byte error: ~60 MB of answers
    // if nothing bounded them, many times what the kernel's buffers absorb.
    const { client: other } = await TestClient.connect(t.wsUrl);
    let peakUnsent = 0;
    for (let round = 0; round < 100; round++) {
      for (let i = 0; i < 3_000; i++) flooder.send("garbage");
      await sleep(5);
      const now = await health(t.url);
      peakUnsent = Math.max(peakUnsent, now.unsent_bytes);
      // Everyone else is served all along.
      if (round % 20 === 0) expect(await other.request({ action: "ping" })).toMatchObject({ event: "pong" });
    }
    // Bounded by the budget, plus one answer and the close frame that pass it (unbounded,
    // what the kernel's buffers do not absorb of ~60 MB would be held here).
    expect(peakUnsent).toBeLessThan(BUDGET + 1024);

    tcp.resume();
    const { code, reason } = await closed;
    expect(code).toBe(1008);
    expect(reason).toContain("not reading");
    expect(await other.request({ action: "ping" })).toMatchObject({ event: "pong" });
    await other.close();
  });

  it("a client that reads is never cut off for its pings, however many more than the budget it sends", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    // 40,000 pongs are ~640 KB of answers, ten times the budget: only unread ones count.
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 1_000; i++) client.send({ action: "ping" });
      const pongs = await client.take(1_000);
      expect(pongs.every((frame) => frame.event === "pong")).toBe(true);
    }
    await client.close();
  });

  it("cannot make the server queue run events by reconnecting over and over without reading", async () => {
    // A finished run whose first catch-up page alone is ~130 KB.
    const runId = await finishedTickerRun(t.url, { count: 200, pad: 4_000 });
    const { client } = await TestClient.connect(t.wsUrl);
    (client.socket as unknown as { _socket: Socket })._socket.pause();
    // 400 reconnects: ~52 MB of first pages if each were written whatever was already unsent.
    let peakUnsent = 0;
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 10; i++) client.send({ action: "reconnect", run_id: runId, last_event_index: null });
      await sleep(10);
      peakUnsent = Math.max(peakUnsent, (await health(t.url)).unsent_bytes);
    }
    // At most the 1 MiB high-water mark, one page past it (up to PAGE_MAX_CHARS and the
    // event that passes it: on PostgreSQL a feed may reach its second, full-size page before
    // the next reconnect replaces it), and the answers' budget.
    expect(peakUnsent).toBeLessThan(1024 * 1024 + PAGE_MAX_CHARS + 4 * 1024 + BUDGET);
    client.socket.terminate();
  });
});

describe("subscribers that stop reading a run of large events", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startServer();
  });
  afterEach(async () => {
    await t.close();
  });

  it("each hold about the high-water mark and one page, not pages of megabytes", async () => {
    // 200 events of ~100 KB: 20 MB, many times what the kernel's buffers take.
    const runId = await finishedTickerRun(t.url, { count: 200, pad: 100_000 });
    const readers: TestClient[] = [];
    for (let i = 0; i < 5; i++) {
      const { client } = await TestClient.connect(t.wsUrl);
      (client.socket as unknown as { _socket: Socket })._socket.pause();
      client.send({ action: "reconnect", run_id: runId, last_event_index: null });
      readers.push(client);
    }
    await sleep(1_000);
    const { unsent_bytes: unsent } = await health(t.url);
    // Per subscriber: the 1 MiB high-water mark, one page of ~512 KB, and one event past it.
    expect(unsent / readers.length).toBeLessThan(1024 * 1024 + 512 * 1024 + 2 * 100 * 1024);
    for (const reader of readers) reader.socket.terminate();
  });
});

describe("a start with input nested 10,000 deep", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startServer();
  });
  afterEach(async () => {
    await t.close();
  });

  it("gets a clear error, and another client's run in the same moment completes", async () => {
    const { client: hostile } = await TestClient.connect(t.wsUrl);
    const { client: bystander } = await TestClient.connect(t.wsUrl);
    bystander.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 200 } });
    hostile.send(`{"action":"start-workflow","workflow_id":"ticker","additional_data":${nestedJson(10_000)}}`);
    const error = await hostile.next();
    expect(error).toMatchObject({ event: "error", code: "INPUT_TOO_DEEP" });
    expect(error.error).toContain("FLOWD_MAX_INPUT_DEPTH");
    const frames = await bystander.untilTerminal();
    expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
    // The socket is unharmed, and no run was created for the refused start.
    expect(await hostile.request({ action: "ping" })).toMatchObject({ event: "pong" });
    expect(await t.query("SELECT CAST(count(*) AS INTEGER) AS n FROM runs")).toEqual([{ n: 1 }]);
    await Promise.all([hostile.close(), bystander.close()]);
  });

  it("over HTTP gets 422 INPUT_TOO_DEEP; data within the limit is taken as it is", async () => {
    const deep = await fetch(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: `{"stream":false,"additional_data":${nestedJson(10_000)}}`,
    });
    expect(deep.status).toBe(422);
    expect(await deep.json()).toMatchObject({ code: "INPUT_TOO_DEEP" });

    const fine = await fetch(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: `{"stream":false,"additional_data":{"count":2,"nested":${nestedJson(60)}}}`,
    });
    expect(fine.status).toBe(200);
    expect(await fine.json()).toMatchObject({ status: "completed" });
  });
});
