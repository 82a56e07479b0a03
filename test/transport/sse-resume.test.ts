import { Socket, createServer, type Server } from "node:net";
import { EventSource } from "eventsource";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { range, startServer, type TestServer } from "../helpers/server.ts";

/** A TCP proxy in front of the server that can cut every connection through it, like a flaky network. */
async function startProxy(targetPort: number): Promise<{ port: number; cutAll: () => void; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = new Socket();
    upstream.connect(targetPort, "127.0.0.1");
    client.pipe(upstream).pipe(client);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (typeof address !== "object" || address === null) throw new Error("proxy has no port");
  return {
    port: address.port,
    cutAll: () => {
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

let t: TestServer;
beforeAll(async () => {
  t = await startServer();
});
afterAll(async () => {
  await t.close();
});

describe("a browser EventSource on /runs/{id}/events", () => {
  it("survives dropped connections by itself (Last-Event-ID) and never sees an event twice", async () => {
    const proxy = await startProxy(t.server.port);
    try {
      const start = await fetch(`${t.url}/workflows/ticker/runs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        // 3 s of events: both cuts below happen while the run is live, each after EventSource's 1 s retry.
        body: JSON.stringify({ background: true, additional_data: { count: 150, delayMs: 20 } }),
      });
      const runId = ((await start.json()) as { run_id: string }).run_id;

      const source = new EventSource(`http://127.0.0.1:${proxy.port}/runs/${runId}/events`);
      const seen: number[] = [];
      let opens = 0;
      source.addEventListener("open", () => {
        opens += 1;
      });
      const finished = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`stalled after ${seen.length} events`)), 20_000);
        for (const type of ["WorkflowStarted", "StepStarted", "RunContent", "StepCompleted", "WorkflowCompleted"]) {
          source.addEventListener(type, (event) => {
            const frame = JSON.parse(event.data) as { event_index: number };
            expect(event.lastEventId).toBe(String(frame.event_index));
            seen.push(frame.event_index);
            if (seen.length === 30 || seen.length === 90) proxy.cutAll();
            if (type === "WorkflowCompleted") {
              clearTimeout(timer);
              resolve();
            }
          });
        }
      });
      await finished;
      source.close();
      expect(opens).toBeGreaterThanOrEqual(3);
      expect(seen).toEqual(range(154));
      expect(await t.storedIndices(runId)).toEqual(seen);
    } finally {
      await proxy.close();
    }
  });
});
