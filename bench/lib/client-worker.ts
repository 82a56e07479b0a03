/**
 * The benchmarks' client process: clients run apart from the server, as in a real
 * deployment. Takes a plan as JSON (argv[2]), prints one JSON result line on stdout.
 */
import type { Socket } from "node:net";
import WebSocket from "ws";
import { percentile } from "./percentile.ts";

type Plan =
  | { kind: "start"; url: string; clients: number; workflow: string; data: Record<string, unknown>; warmup?: Record<string, unknown>; rounds?: number }
  | { kind: "follow"; url: string; clients: number; runId: string; fromIndex: number }
  | { kind: "latency"; url: string; data: Record<string, unknown> }
  | { kind: "latency-across"; url: string; watchUrl: string; data: Record<string, unknown> }
  | { kind: "catchup"; url: string; runId: string; expect: number }
  | { kind: "idle"; url: string; connections: number }
  | { kind: "raw"; url: string; clients: number; expect: number }
  | { kind: "stall"; url: string; runId: string; pauseMs: number }
  | { kind: "workflows"; url: string; clients: number; perClient: number; workflow: string };

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
class Frame {
  constructor(
    readonly event: string,
    readonly event_index: number | undefined,
    private readonly data: Buffer,
  ) {}

  json(): Record<string, unknown> {
    return JSON.parse(this.data.toString()) as Record<string, unknown>;
  }
}

const EVENT_PREFIX = Buffer.from('{"event":"');
const INDEX_KEY = Buffer.from('"event_index":');
const WORKFLOW_PREFIX = Buffer.from('{"event":"Workflow');

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
  return new Frame(event, eventIndex, data);
}

/** The byte after `{"event":"` in a Workflow* event. */
const W = 0x57;

/**
 * True for WorkflowCompleted, WorkflowError and WorkflowCancelled. Only Workflow* events
 * are looked at closely, and a byte is checked before anything else: this runs for every
 * frame, and a Buffer.compare costs ~90 ns, ~10% of the client's time when 100 sockets
 * receive a million frames a second.
 */
function isTerminal(data: Buffer): boolean {
  return data[EVENT_PREFIX.length] === W && WORKFLOW_PREFIX.compare(data, 0, WORKFLOW_PREFIX.length) === 0 && TERMINAL.has(peek(data).event);
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

/** The run id of a frame (the first one a start answers with). */
function peekRunId(data: Buffer): unknown {
  return (JSON.parse(data.toString()) as { run_id?: unknown }).run_id;
}

/**
 * Sends `request` and reads the socket's events: frames are peeked at until the first
 * event at or after `fromIndex` (control frames such as `replay` come before it); after it
 * the server sends this socket only events, in order (the test suite checks that), so they
 * are counted and only the terminal one is looked for, as the raw-limit client counts.
 * Resolves at the terminal event, or after `expect` events.
 */
function readEvents(
  socket: WebSocket,
  request: Record<string, unknown>,
  options: { fromIndex?: number; expect?: number } = {},
): Promise<{ count: number; firstAt: number; lastAt: number }> {
  return new Promise((resolve) => {
    let count = 0;
    let firstAt = 0;
    // The clock is read only where it is used: like the raw-limit client, this one does
    // as little per frame as it can.
    const onMessage = (data: Buffer): void => {
      if (count === 0) {
        const at = now();
        const index = peek(data).event_index;
        if (index === undefined || index < (options.fromIndex ?? 0)) return;
        firstAt = at;
      }
      count += 1;
      if (count === options.expect || isTerminal(data)) {
        socket.off("message", onMessage);
        resolve({ count, firstAt, lastAt: now() });
      }
    };
    socket.on("message", onMessage);
    socket.send(JSON.stringify(request));
  });
}

/** Reconnects to a finished run after `lastIndex` and reads `expect` events. */
async function catchUp(socket: WebSocket, runId: string, lastIndex: number, expect: number): Promise<{ count: number; firstEventMs: number; elapsedMs: number }> {
  const sentAt = now();
  const read = await readEvents(socket, { action: "reconnect", run_id: runId, last_event_index: lastIndex }, { expect });
  return { count: read.count, firstEventMs: read.firstAt - sentAt, elapsedMs: read.lastAt - sentAt };
}

/** Every socket starts a run at once; resolves when all have ended, with what each saw. */
async function startRound(
  sockets: WebSocket[],
  workflow: string,
  data: Record<string, unknown>,
): Promise<{ events: number; elapsedMs: number; firstEventMs: number[] }> {
  const started = now();
  const reads = await Promise.all(
    sockets.map(async (socket) => {
      const sentAt = now();
      const read = await readEvents(socket, { action: "start-workflow", workflow_id: workflow, additional_data: data });
      return { count: read.count, firstEventMs: read.firstAt - sentAt };
    }),
  );
  return {
    events: reads.reduce((sum, read) => sum + read.count, 0),
    elapsedMs: now() - started,
    firstEventMs: reads.map((read) => read.firstEventMs),
  };
}

async function main(): Promise<void> {
  switch (plan.kind) {
    case "start": {
      // Each client starts its own run and reads it to the end, `rounds` times (default 1),
      // all measured together. With `warmup`, one unmeasured round of runs with that data
      // first, so both processes run warm code, as a server that has been up does.
      const sockets = await Promise.all(Array.from({ length: plan.clients }, () => connect(plan.url)));
      if (plan.warmup) await startRound(sockets, plan.workflow, plan.warmup);
      const rounds: Awaited<ReturnType<typeof startRound>>[] = [];
      for (let i = 0; i < (plan.rounds ?? 1); i++) rounds.push(await startRound(sockets, plan.workflow, plan.data));
      output({
        events: rounds.reduce((sum, round) => sum + round.events, 0),
        elapsedMs: rounds.reduce((sum, round) => sum + round.elapsedMs, 0),
        firstEventMs: rounds.flatMap((round) => round.firstEventMs),
        roundFirstEventMs: rounds.map((round) => round.firstEventMs),
      });
      for (const s of sockets) s.terminate();
      return;
    }
    case "follow": {
      // Many clients follow one run; the clock starts at the first event at or after fromIndex.
      const sockets = await Promise.all(Array.from({ length: plan.clients }, () => connect(plan.url)));
      const reads = await Promise.all(
        sockets.map((socket) =>
          readEvents(socket, { action: "reconnect", run_id: plan.runId, last_event_index: null }, { fromIndex: plan.fromIndex }),
        ),
      );
      const firstAt = Math.min(...reads.map((read) => read.firstAt));
      const lastAt = Math.max(...reads.map((read) => read.lastAt));
      output({ delivered: reads.reduce((sum, read) => sum + read.count, 0), elapsedMs: lastAt - firstAt });
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
      output({ count: latencies.length, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), max: percentile(latencies, 1) });
      return;
    }
    case "latency-across": {
      // Started on one node, watched on a client of another: what the second node hands on of the first one's commits.
      const starter = await connect(plan.url);
      const runId = await new Promise<string>((resolve) => {
        const onMessage = (data: Buffer): void => {
          const id = peekRunId(data);
          if (typeof id !== "string") return;
          starter.off("message", onMessage);
          resolve(id);
        };
        starter.on("message", onMessage);
        starter.send(JSON.stringify({ action: "start-workflow", workflow_id: "paced", additional_data: plan.data }));
      });
      const watcher = await connect(plan.watchUrl);
      const latencies: number[] = [];
      // What was emitted before the watcher reconnected comes as catch-up: only what it gets live counts.
      let live = false;
      const done = consume(watcher, (frame, at) => {
        if (frame.event === "subscribed") live = true;
        if (live && frame.event === "RunContent") latencies.push(at - (JSON.parse(frame.json().content as string) as { t: number }).t);
        return TERMINAL.has(frame.event);
      });
      watcher.send(JSON.stringify({ action: "reconnect", run_id: runId, last_event_index: 0 }));
      await done;
      starter.terminate();
      watcher.terminate();
      output({ count: latencies.length, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), max: percentile(latencies, 1) });
      return;
    }
    case "catchup": {
      const socket = await connect(plan.url);
      // Warm-up: catch up on the last 100 events only, so the measured reconnect below runs
      // warm code in both processes, as on a server that has been up.
      await catchUp(socket, plan.runId, plan.expect - 101, 100);
      const cpu = process.cpuUsage();
      const result = await catchUp(socket, plan.runId, -1, plan.expect);
      const used = process.cpuUsage(cpu);
      // How busy this process was: near 1, the client is what limits the figure.
      output({ ...result, clientCpu: (used.user + used.system) / 1000 / result.elapsedMs });
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
    case "workflows": {
      // Each client runs `perClient` workflows one after another: start, then read to the terminal event.
      const sockets = await Promise.all(Array.from({ length: plan.clients }, () => connect(plan.url)));
      const latenciesMs: number[] = [];
      const started = now();
      await Promise.all(
        sockets.map(async (socket) => {
          for (let i = 0; i < plan.perClient; i++) {
            const sentAt = now();
            const read = await readEvents(socket, { action: "start-workflow", workflow_id: plan.workflow, message: "" });
            latenciesMs.push(read.lastAt - sentAt);
          }
        }),
      );
      output({ completions: latenciesMs.length, elapsedMs: now() - started, latenciesMs });
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
