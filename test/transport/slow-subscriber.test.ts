import type { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { range, startServer, waitFor, type TestServer } from "../helpers/server.ts";
import { TestClient, indicesOf, type Frame } from "../helpers/ws-client.ts";
import { SseParser } from "../../src/protocol/sse.ts";

/** The TCP socket under a ws client: pausing it makes the client stop reading, like a stalled browser tab. */
function tcpOf(client: TestClient): Socket {
  return (client.socket as unknown as { _socket: Socket })._socket;
}

const COUNT = 20_000;
const RUN = { action: "start-workflow", workflow_id: "ticker", additional_data: { count: COUNT, burst: 50, pad: 400 } };
const TOTAL = COUNT + 4;

let t: TestServer;
beforeAll(async () => {
  t = await startServer({ stallTimeoutMs: 60_000 });
});
afterAll(async () => {
  await t.close();
});

async function runStatus(runId: string): Promise<string> {
  return (await t.query<{ status: string }>("SELECT status FROM runs WHERE run_id = ?", runId))[0]!.status;
}

describe("a stalled subscriber (I6)", () => {
  it("does not hold up the run or a fast subscriber, and later receives every event in order, once", async () => {
    const { client: starter } = await TestClient.connect(t.wsUrl);
    starter.send(RUN);
    const runId = (await starter.next()).run_id as string;

    const { client: slow } = await TestClient.connect(t.wsUrl);
    slow.send({ action: "reconnect", run_id: runId, last_event_index: -1 });
    await slow.take(3);
    tcpOf(slow).pause(); // stops reading: the server's buffer for it fills up

    // The run and the fast subscriber finish while the slow one reads nothing.
    const fast = await starter.untilTerminal(60_000);
    expect(indicesOf(fast).at(-1)).toBe(TOTAL - 1);
    await waitFor("the run to complete", async () => ((await runStatus(runId)) === "completed" ? true : undefined), 30_000);
    const receivedWhilePaused = slow.received.length;
    expect(receivedWhilePaused).toBeLessThan(TOTAL / 2);

    tcpOf(slow).resume();
    const rest = await slow.untilTerminal(60_000);
    const runEvents = slow.received.filter((f: Frame) => typeof f.event_index === "number");
    expect(indicesOf(runEvents)).toEqual(range(TOTAL));
    expect(rest.at(-1)?.event).toBe("WorkflowCompleted");
    expect(await t.storedIndices(runId)).toEqual(range(TOTAL));
    await Promise.all([starter.close(), slow.close()]);
  });

  it("is closed with 1013 and its last index when stalled past FLOWD_STALL_TIMEOUT_MS, and resumes from there", async () => {
    const quick = await startServer({ stallTimeoutMs: 300 });
    try {
      const { client } = await TestClient.connect(quick.wsUrl);
      client.send(RUN);
      await client.take(3);
      tcpOf(client).pause();
      await new Promise((resolve) => setTimeout(resolve, 1500));
      tcpOf(client).resume();
      const closed = await client.closed;
      expect(closed.code).toBe(1013);
      const last = Number(/last_event_index (\d+)/.exec(closed.reason)?.[1]);
      const seen = indicesOf(client.received);
      expect(seen).toEqual(range(seen.length));
      expect(last).toBe(seen.at(-1));

      // Resume from the index the close reason named (over SSE, which sends only what follows it).
      const runId = client.received[1]?.run_id as string;
      const response = await fetch(`${quick.url}/runs/${runId}/events?after=${last}`);
      const after = new SseParser().push(await response.text()).map((m) => Number(m.id));
      expect([...seen, ...after]).toEqual(range(TOTAL));
    } finally {
      await quick.close();
    }
  });

  it("still gets its 1013 close frame, with the index to resume from, when it stays stalled 30 s after the close", async () => {
    // The closing handshake waits 10 stall timeouts (40 s here) for the peer to read up to its close frame.
    const patient = await startServer({ stallTimeoutMs: 4_000 });
    try {
      const { client } = await TestClient.connect(patient.wsUrl);
      client.send(RUN);
      await client.take(3);
      tcpOf(client).pause();
      // Stalled past the timeout (closed at ~4 s), then 32 s more without reading a byte.
      await new Promise((resolve) => setTimeout(resolve, 36_000));
      tcpOf(client).resume();
      const closed = await client.closed;
      expect(closed.code).toBe(1013);
      const last = Number(/last_event_index (\d+)/.exec(closed.reason)?.[1]);
      expect(last).toBe(indicesOf(client.received).at(-1));
    } finally {
      await patient.close();
    }
  }, 60_000);

  it("over SSE, a reader that stops reading for a while still gets every event in order, once", async () => {
    const start = await fetch(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ background: true, additional_data: RUN.additional_data }),
    });
    const runId = ((await start.json()) as { run_id: string }).run_id;
    const response = await fetch(`${t.url}/runs/${runId}/events`);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    const ids: number[] = [];
    let paused = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const message of parser.push(value)) ids.push(Number(message.id));
      if (!paused && ids.length > 100) {
        paused = true;
        await waitFor("the run to complete", async () => ((await runStatus(runId)) === "completed" ? true : undefined), 30_000);
      }
    }
    expect(ids).toEqual(range(TOTAL));
  });
});
