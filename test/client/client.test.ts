import type { Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { createClient, FlowdError, type RunEvent, type RunWatch, type WebSocketConstructor } from "../../src/client/index.ts";
import { REPO_ROOT, startServerProcess, type ServerProcess } from "../../testkit/server-process.ts";
import { freshDatabaseEachTest, range, startServer, waitFor, type TestServer } from "../helpers/server.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

/** Everything a watch hands out, until the run's end. */
async function collect(watch: RunWatch, onEvent: (event: RunEvent, received: RunEvent[]) => Promise<void> | void = () => {}): Promise<RunEvent[]> {
  const received: RunEvent[] = [];
  for await (const event of watch) {
    received.push(event);
    await onEvent(event, received);
  }
  return received;
}

const indices = (events: readonly RunEvent[]): number[] => events.map((event) => event.event_index);

let t: TestServer;
beforeAll(async () => {
  t = await startServer({ stallTimeoutMs: 300 });
});
afterAll(async () => {
  await t.close();
});

describe("flowd/client against a real server", () => {
  it("starts, watches, lists and gets runs; a watch ends with the terminal event; refusals are FlowdErrors with the server's code", async () => {
    const client = createClient({ url: t.url });
    const run = await client.start("ticker", "hello", { additionalData: { count: 5 }, sessionId: "s-client" });
    expect(run).toMatchObject({ workflow_id: "ticker", session_id: "s-client", input: "hello" });
    const events = await collect(client.watch(run.run_id));
    expect(indices(events)).toEqual(range(9));
    expect(events.at(-1)?.event).toBe("WorkflowCompleted");
    // The union narrows on `event`.
    const started = events[0]!;
    if (started.event !== "WorkflowStarted") throw new Error(`first event ${started.event}`);
    expect(started.input).toBe("hello");

    // After an index: only what follows it; after the last, nothing, and the watch ends.
    expect(indices(await collect(client.watch(run.run_id, { after: 6 })))).toEqual([7, 8]);
    expect(await collect(client.watch(run.run_id, { after: 8 }))).toEqual([]);

    expect(await client.runs.get(run.run_id)).toMatchObject({ status: "completed", event_count: 9 });
    const listed = await client.runs.list({ workflowId: "ticker", status: "completed" });
    expect(listed.map((r) => r.run_id)).toContain(run.run_id);
    expect((await client.runs.list({ sessionId: "s-client" })).map((r) => r.run_id)).toEqual([run.run_id]);
    expect((await client.workflows.list()).map((w) => w.id)).toContain("ticker");

    await expect(client.start("no-such-workflow")).rejects.toMatchObject({ name: "FlowdError", code: "WORKFLOW_NOT_FOUND" });
    await expect(client.runs.get("no-such-run")).rejects.toBeInstanceOf(FlowdError);
    await expect(collect(client.watch("no-such-run"))).rejects.toMatchObject({ code: "RUN_NOT_FOUND" });
    await expect(createClient({ url: "http://127.0.0.1:1" }).runs.list()).rejects.toMatchObject({ code: "SERVER_UNREACHABLE" });
  });

  it("continues a paused run, signals a waiting one and cancels a running one", async () => {
    const client = createClient({ url: t.url });
    const paused = await client.start("approval", "draft me");
    await waitFor("the run to pause", async () => ((await client.runs.get(paused.run_id)).status === "paused" ? true : undefined));
    const going = await client.continue(paused.run_id, [{ step_id: "1", confirmed: true }]);
    expect(["running", "completed"]).toContain(going.status);
    const approved = await collect(client.watch(paused.run_id));
    expect(approved.map((e) => e.event)).toContain("StepContinued");
    expect(approved.at(-1)).toMatchObject({ event: "WorkflowCompleted" });
    await expect(client.continue(paused.run_id, [{ step_id: "1", confirmed: true }])).rejects.toMatchObject({ code: "RUN_NOT_PAUSED" });

    const waiting = await client.start("signalled");
    await waitFor("the run to wait", async () => ((await client.runs.get(waiting.run_id)).status === "waiting" ? true : undefined));
    expect(await client.signal(waiting.run_id, "approved", { by: "ada" })).toMatchObject({ delivered: true });
    expect((await collect(client.watch(waiting.run_id))).at(-1)).toMatchObject({ event: "WorkflowCompleted", content: "approved by ada" });

    const long = await client.start("ticker", "", { additionalData: { count: 1000, delayMs: 10 } });
    await client.cancel(long.run_id);
    expect((await collect(client.watch(long.run_id))).at(-1)?.event).toBe("WorkflowCancelled");
  });

  it("a consumer far behind: the watch stops reading and resumes from the log, every index once; batches and close() mid-way", async () => {
    const client = createClient({ url: t.url });
    const run = await client.start("ticker", "", { additionalData: { count: 35_000, burst: 500 } });
    await waitFor("the run to end", async () => ((await client.runs.get(run.run_id)).status === "completed" ? true : undefined), 30_000);
    // Slow: a pause every 1,000 events, so that the watch has far more to hand out than is taken.
    const slow = await collect(client.watch(run.run_id), async (event) => {
      if (event.event_index % 1000 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    });
    expect(indices(slow)).toEqual(range(35_004));
    const batched: number[] = [];
    for await (const batch of client.watch(run.run_id, { after: 100 }).batches()) batched.push(...indices(batch));
    expect(batched).toEqual(range(35_004).slice(101));
    // Closed while its first connection is being made, and by a break: it ends, and nothing is left open or thrown.
    const closedEarly = client.watch(run.run_id);
    closedEarly.close();
    expect(await collect(closedEarly)).toEqual([]);
    const broken = client.watch(run.run_id);
    for await (const event of broken) if (event.event_index === 5) break;
    expect(broken.lastIndex).toBe(5);
    await new Promise((resolve) => setTimeout(resolve, 200));
  });

  it("authenticates its socket with the token, and says so when there is none", async () => {
    const locked = await startServer({ securityKey: "client-key-0123456789" });
    try {
      const client = createClient({ url: locked.url, token: "client-key-0123456789" });
      const run = await client.start("ticker", "", { additionalData: { count: 200, delayMs: 5 } });
      // From index 0 while it runs: the catch-up over HTTP, then the socket, which must authenticate.
      expect(indices(await collect(client.watch(run.run_id)))).toEqual(range(204));
      await expect(collect(createClient({ url: locked.url }).watch(run.run_id))).rejects.toMatchObject({ code: "AUTH_REQUIRED" });
      await expect(createClient({ url: locked.url, token: "wrong-key-0000000000" }).runs.get(run.run_id)).rejects.toMatchObject({ code: "AUTH_FAILED" });
    } finally {
      await locked.close();
    }
  });

  it("resumes after a dropped TCP connection: every index once, in order", async () => {
    const proxy = await TcpProxy.start(t.server.port);
    try {
      const client = createClient({ url: proxy.url, reconnect: { initialDelayMs: 20, maxDelayMs: 200 } });
      const run = await client.start("ticker", "", { additionalData: { count: 300, delayMs: 3 } });
      const watch = client.watch(run.run_id);
      let dropped = 0;
      const events = await collect(watch, (event) => {
        // Cut twice, mid-stream.
        if (event.event_index === 40 || event.event_index === 150) {
          proxy.dropAll();
          dropped += 1;
        }
      });
      expect(dropped).toBe(2);
      expect(watch.reconnects).toBeGreaterThanOrEqual(2);
      expect(indices(events)).toEqual(range(304));
      expect(events.at(-1)?.event).toBe("WorkflowCompleted");
    } finally {
      await proxy.close();
    }
  });

  it("resumes after the server closes a stalled client with 1013", async () => {
    const closeCodes: number[] = [];
    let messages = 0;
    // A ws client that stops reading its socket for 1.5 s once, as a busy tab would.
    class StallingWebSocket extends WebSocket {
      constructor(url: string) {
        super(url, { perMessageDeflate: false });
        this.on("close", (code) => closeCodes.push(code));
        this.on("message", () => {
          if (++messages !== 20) return;
          const tcp = (this as unknown as { _socket: Socket })._socket;
          tcp.pause();
          setTimeout(() => tcp.resume(), 1500);
        });
      }
    }
    const client = createClient({ url: t.url, WebSocket: StallingWebSocket as unknown as WebSocketConstructor });
    const run = await client.start("ticker", "", { additionalData: { count: 20_000, burst: 50, pad: 400 } });
    const watch = client.watch(run.run_id);
    const events = await collect(watch);
    expect(closeCodes).toContain(1013);
    expect(watch.reconnects).toBeGreaterThanOrEqual(1);
    expect(indices(events)).toEqual(range(20_004));
  });
});

describe("flowd/client across a SIGKILL of the server", () => {
  const files = freshDatabaseEachTest();
  let server: ServerProcess | null = null;
  afterAll(async () => {
    await server?.stop();
  });

  it("goes on after the restart from its last index, with the interrupted step's partial output flagged superseded", async () => {
    server = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
    const proxy = await TcpProxy.start(server.port);
    try {
      const client = createClient({ url: proxy.url, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
      const run = await client.start("ticker", "", { additionalData: { count: 200, delayMs: 10 } });
      const watch = client.watch(run.run_id);
      const events = await collect(watch, async (event) => {
        if (event.event_index !== 60) return;
        server!.child.kill("SIGKILL");
        await server!.exited;
        server = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
        proxy.target = server.port;
      });
      const stored = await client.runs.get(run.run_id);
      expect(stored.status).toBe("completed");
      expect(indices(events)).toEqual(range(stored.event_count));
      expect(events.at(-1)?.event).toBe("WorkflowCompleted");

      const resumed = events.find((event) => event.event === "WorkflowResumed");
      if (resumed?.event !== "WorkflowResumed") throw new Error("no WorkflowResumed");
      expect(resumed.after_crash).toBe(true);
      const from = resumed.superseded_from_index!;
      const to = resumed.superseded_to_index!;
      expect(from).toBeLessThanOrEqual(to);
      expect(watch.superseded).toEqual([{ from, to, by: "WorkflowResumed", at: resumed.event_index }]);
      // The interrupted step's partial ticks are flagged; what the resumed attempt streams is not.
      expect(range(stored.event_count).filter((i) => watch.isSuperseded(i))).toEqual(range(to - from + 1).map((i) => from + i));
      expect(events[from]?.event).toBe("StepStarted");
      expect(watch.isSuperseded(resumed.event_index)).toBe(false);
    } finally {
      await proxy.close();
    }
  });
});
