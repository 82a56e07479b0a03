/**
 * The benchmarks' client process: clients run apart from the server, as in a real
 * deployment. Takes a plan as JSON (argv[2]), prints one JSON result line on stdout.
 */
import type { Socket } from "node:net";
import WebSocket from "ws";

type Plan =
  | { kind: "start"; url: string; clients: number; workflow: string; data: Record<string, unknown>; warmup?: Record<string, unknown> }
  | { kind: "follow"; url: string; clients: number; runId: string; fromIndex: number }
  | { kind: "latency"; url: string; data: Record<string, unknown> }
  | { kind: "catchup"; url: string; runId: string; expect: number }
  | { kind: "idle"; url: string; connections: number }
  | { kind: "raw"; url: string; clients: number; expect: number }
  | { kind: "stall"; url: string; runId: string; pauseMs: number };

const plan = JSON.parse(process.argv[2] ?? "{}") as Plan;
const now = (): number => performance.timeOrigin + performance.now();
const output = (result: unknown): void => {
  process.stdout.write(`${JSON.stringify(result)}\n`);
};

function connect(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { perMessageDeflate: false });
    socket.once("open", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** What the benchmarks read of a frame: its event name and index, and the JSON text on demand. */
interface Frame {
  event: string;
  event_index: number | undefined;
  json(): Record<string, unknown>;
}

const EVENT_PREFIX = Buffer.from('{"event":"');
const INDEX_KEY = Buffer.from('"event_index":');

/**
 * Reads a frame's `event` (its first field in every flowd frame) and `event_index`
 * without parsing the whole JSON: like the raw-limit client, which only counts frames,
 * these clients measure what the server delivers, not how fast this process parses JSON.
 * (Inside a JSON string a quote is escaped, so `"event_index":` only matches the field.)
 */
function peek(data: Buffer): Frame {
  let event = "";
  if (EVENT_PREFIX.compare(data, 0, EVENT_PREFIX.length) === 0) {
    event = data.toString("latin1", EVENT_PREFIX.length, data.indexOf(0x22, EVENT_PREFIX.length));
  }
  let eventIndex: number | undefined;
  const key = data.indexOf(INDEX_KEY);
  if (key >= 0) {
    eventIndex = 0;
    for (let i = key + INDEX_KEY.length; i < data.length && data[i]! >= 0x30 && data[i]! <= 0x39; i++) eventIndex = eventIndex * 10 + data[i]! - 0x30;
  }
  return { event, event_index: eventIndex, json: () => JSON.parse(data.toString()) as Record<string, unknown> };
}

/** Calls `onFrame` with each message until it returns true. */
function consume(socket: WebSocket, onFrame: (frame: Frame, at: number) => boolean): Promise<void> {
  return new Promise((resolve) => {
    socket.on("message", (data: Buffer) => {
      const at = now();
      if (onFrame(peek(data), at)) resolve();
    });
  });
}

const TERMINAL = new Set(["WorkflowCompleted", "WorkflowError", "WorkflowCancelled"]);

/** Every socket starts a run at once; resolves when all have ended, with what each saw. */
async function startRound(
  sockets: WebSocket[],
  workflow: string,
  data: Record<string, unknown>,
): Promise<{ events: number; elapsedMs: number; firstEventMs: number[] }> {
  const firstEventMs: number[] = [];
  let events = 0;
  const started = now();
  await Promise.all(
    sockets.map((socket) => {
      let sentAt = 0;
      let first = true;
      const done = consume(socket, (frame, at) => {
        if (typeof frame.event_index !== "number") return false;
        events += 1;
        if (first) {
          first = false;
          firstEventMs.push(at - sentAt);
        }
        return TERMINAL.has(frame.event);
      });
      sentAt = now();
      socket.send(JSON.stringify({ action: "start-workflow", workflow_id: workflow, additional_data: data }));
      return done;
    }),
  );
  for (const socket of sockets) socket.removeAllListeners("message");
  return { events, elapsedMs: now() - started, firstEventMs };
}

async function main(): Promise<void> {
  switch (plan.kind) {
    case "start": {
      // Each client starts its own run and reads it to the end. With `warmup`, one unmeasured
      // round of runs with that data first, so both processes run warm code, as a server that
      // has been up does.
      const sockets = await Promise.all(Array.from({ length: plan.clients }, () => connect(plan.url)));
      if (plan.warmup) await startRound(sockets, plan.workflow, plan.warmup);
      const result = await startRound(sockets, plan.workflow, plan.data);
      output(result);
      for (const s of sockets) s.terminate();
      return;
    }
    case "follow": {
      // Many clients follow one run; the clock starts at the first event at or after fromIndex.
      const sockets = await Promise.all(Array.from({ length: plan.clients }, () => connect(plan.url)));
      let firstAt = Infinity;
      let lastAt = 0;
      let delivered = 0;
      await Promise.all(
        sockets.map((socket) => {
          const done = consume(socket, (frame, at) => {
            const index = frame.event_index;
            if (typeof index !== "number" || index < plan.fromIndex) return false;
            delivered += 1;
            firstAt = Math.min(firstAt, at);
            if (TERMINAL.has(frame.event)) {
              lastAt = Math.max(lastAt, at);
              return true;
            }
            return false;
          });
          socket.send(JSON.stringify({ action: "reconnect", run_id: plan.runId, last_event_index: null }));
          return done;
        }),
      );
      output({ delivered, elapsedMs: lastAt - firstAt });
      for (const s of sockets) s.terminate();
      return;
    }
    case "latency": {
      const socket = await connect(plan.url);
      const latencies: number[] = [];
      const done = consume(socket, (frame, at) => {
        if (frame.event === "RunContent") latencies.push(at - (JSON.parse(frame.json().content as string) as { t: number }).t);
        return TERMINAL.has(frame.event);
      });
      socket.send(JSON.stringify({ action: "start-workflow", workflow_id: "paced", additional_data: plan.data }));
      await done;
      socket.terminate();
      latencies.sort((a, b) => a - b);
      const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? NaN;
      output({ count: latencies.length, p50: pct(0.5), p99: pct(0.99), max: latencies.at(-1) });
      return;
    }
    case "catchup": {
      const socket = await connect(plan.url);
      let first = 0;
      let count = 0;
      const sentAt = now();
      const done = consume(socket, (frame, at) => {
        if (typeof frame.event_index !== "number") return false;
        if (count === 0) first = at - sentAt;
        count += 1;
        return count === plan.expect;
      });
      socket.send(JSON.stringify({ action: "reconnect", run_id: plan.runId, last_event_index: null }));
      await done;
      output({ count, firstEventMs: first, elapsedMs: now() - sentAt });
      socket.terminate();
      return;
    }
    case "idle": {
      const sockets: WebSocket[] = [];
      for (let i = 0; i < plan.connections; i += 200) {
        sockets.push(...(await Promise.all(Array.from({ length: Math.min(200, plan.connections - i) }, () => connect(plan.url)))));
      }
      output({ open: sockets.length });
      // Hold them until the benchmark has measured the server, then leave.
      await new Promise((resolve) => process.stdin.once("data", resolve));
      for (const s of sockets) s.terminate();
      return;
    }
    case "raw": {
      // Count from the very first frame: the server may send in the same packet as the handshake.
      let finished = 0;
      const sockets: WebSocket[] = [];
      await Promise.all(
        Array.from(
          { length: plan.clients },
          () =>
            new Promise<void>((resolve, reject) => {
              const socket = new WebSocket(plan.url, { perMessageDeflate: false });
              sockets.push(socket);
              let n = 0;
              socket.on("message", () => {
                n += 1;
                if (n === plan.expect) {
                  finished += 1;
                  resolve();
                }
              });
              socket.once("error", reject);
            }),
        ),
      );
      output({ finished, at: now() });
      for (const s of sockets) s.terminate();
      return;
    }
    case "stall": {
      // One subscriber that stops reading for pauseMs, then reads everything.
      const socket = await connect(plan.url);
      const indices: number[] = [];
      const done = consume(socket, (frame) => {
        if (typeof frame.event_index === "number") indices.push(frame.event_index);
        return TERMINAL.has(frame.event);
      });
      socket.send(JSON.stringify({ action: "reconnect", run_id: plan.runId, last_event_index: null }));
      const tcp = (socket as unknown as { _socket: Socket })._socket;
      setTimeout(() => tcp.pause(), 50);
      setTimeout(() => tcp.resume(), plan.pauseMs);
      await done;
      const inOrder = indices.every((index, i) => index === i);
      output({ received: indices.length, inOrder });
      socket.terminate();
      return;
    }
  }
}

await main();
