/** Shared pieces of the benchmarks: the client process, the server process, raw limits, the result line. */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Socket } from "node:net";
import type { Statement } from "better-sqlite3";
import WebSocket, { WebSocketServer } from "ws";
import { encodeTextFrame } from "../../src/protocol/ws-frame.ts";
import { ROWS_PER_INSERT } from "../../src/store/batch-writer.ts";
import { openDb, type Db } from "../../src/store/db.ts";
import { startServerProcess, type ServerProcess } from "../../testkit/server-process.ts";

const WORKER = fileURLToPath(new URL("./client-worker.ts", import.meta.url));
const TSX = fileURLToPath(new URL("../../node_modules/tsx/dist/cli.mjs", import.meta.url));
export const BENCH_WORKFLOWS = fileURLToPath(new URL("../workflows.ts", import.meta.url));

/** A temp folder for one benchmark's files. */
export function scratch(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "flowd-bench-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** One benchmark's result, printed as one JSON line. */
export interface BenchResult {
  bench: string;
  workload: string;
  figure: number;
  unit: string;
  /** The raw limit as the performance issue defines it (its method), which the target is against. */
  limit?: number;
  limit_is?: string;
  /** The fastest raw way there is to do the same work (flowd's own technique, nothing else around it). */
  strict_limit?: number;
  strict_limit_is?: string;
  target?: number | string;
  [extra: string]: unknown;
}

/** Prints a result line, with figure ÷ limit as `ratio` and figure ÷ strict limit as `strict_ratio`. */
export function report(result: BenchResult): void {
  const ratioTo = (limit: number | undefined) => (limit ? Math.round((result.figure / limit) * 100) / 100 : undefined);
  console.log(JSON.stringify({ ...result, ratio: ratioTo(result.limit), strict_ratio: ratioTo(result.strict_limit) }));
}

/** Runs the client process with a plan; resolves with its result line. */
export function runClients<T>(plan: Record<string, unknown>, onSpawn?: (send: (line: string) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TSX, WORKER, JSON.stringify(plan)], { stdio: ["pipe", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split("\n")[0];
      if (out.includes("\n") && line) {
        out = out.slice(line.length + 1);
        resolve(JSON.parse(line) as T);
      }
    });
    onSpawn?.((line) => child.stdin.write(`${line}\n`));
    child.on("exit", (code) => {
      if (code !== 0) reject(new Error(`client process exited with ${code}`));
    });
  });
}

/** Starts the flowd server as a child process on a fresh database, serving the bench workflows. */
export async function startBenchServer(dbPath: string, env: Record<string, string> = {}): Promise<ServerProcess> {
  return startServerProcess(["--workflows", BENCH_WORKFLOWS, "--db", dbPath], { env: { FLOWD_LOG_LEVEL: "info", ...env } });
}

/** Resident memory of a process, in bytes (Linux). */
export function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return kb * 1024;
}

/** POSTs JSON to the server and returns the JSON answer. */
export async function post(url: string, body: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return (await response.json()) as Record<string, unknown>;
}

/** A frame of the size flowd sends for an `emit` event of `bytes` characters. */
export function sampleFrame(bytes: number): string {
  return JSON.stringify({
    event: "RunContent",
    event_index: 123456,
    run_id: "5f0e8c52-3b7e-4d55-9a43-1f7f0c1b2a3d",
    workflow_id: "emit",
    workflow_name: "emit",
    session_id: "9c1d1a7e-2f44-4f5e-8a7b-3c2d1e0f9a8b",
    created_at: 1_800_000_000,
    step_name: "emit",
    step_index: 0,
    step_path: "0",
    content: "x".repeat(bytes),
  });
}

/** A bare run row for the raw limits' events; returns its id (a UUID, as flowd's are). */
function insertRawRun(db: Db): string {
  const runId = randomUUID();
  db.sqlite.prepare("INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, created_at, updated_at) VALUES (?, 'w', 'w', 's', 0, 0)").run(runId);
  return runId;
}

/** An INSERT of `rows` event rows, each bound as (run_id, event_index, payload). */
function prepareRawEventInsert(db: Db, rows: number): Statement {
  const values = Array.from({ length: rows }, () => "(?, ?, 'RunContent', '0', ?, 0)").join(", ");
  return db.sqlite.prepare(`INSERT INTO events (run_id, event_index, event, step_path, payload, created_at) VALUES ${values}`);
}

/**
 * Raw SQLite limit of a prune: `runs` runs of `perRun` events stored (not timed), then
 * deleted as the pruner deletes them, `chunk` oldest events of a run per transaction, run
 * after run, nothing else on the connection. Events deleted per second.
 */
export function rawSqliteDelete(runs: number, perRun: number, chunk: number, frame: string, sync: "FULL" | "NORMAL"): number {
  const tmp = scratch();
  try {
    const db = openDb(join(tmp.dir, "raw.db"), { sync });
    const ids = Array.from({ length: runs }, () => insertRawRun(db));
    const insert = prepareRawEventInsert(db, ROWS_PER_INSERT);
    const args = new Array<unknown>(ROWS_PER_INSERT * 3);
    db.sqlite.transaction(() => {
      for (const runId of ids) {
        for (let i = 0; i < perRun; i += ROWS_PER_INSERT) {
          for (let row = 0; row < ROWS_PER_INSERT; row++) {
            args[row * 3] = runId;
            args[row * 3 + 1] = i + row;
            args[row * 3 + 2] = frame;
          }
          insert.run(...args);
        }
      }
    })();
    const remove = db.sqlite.prepare<[string, string, number]>("DELETE FROM events WHERE run_id = ? AND event_index < (SELECT coalesce(min(event_index), 0) FROM events WHERE run_id = ?) + ?");
    const step = db.sqlite.transaction((runId: string) => remove.run(runId, runId, chunk).changes);
    const started = performance.now();
    let deleted = 0;
    for (const runId of ids) {
      for (;;) {
        const n = step(runId);
        deleted += n;
        if (n < chunk) break;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    db.close();
    return deleted / seconds;
  } finally {
    tmp.remove();
  }
}

/**
 * Raw SQLite limit: inserting `events` rows into flowd's events table, `batch` per
 * transaction, spread over `runs` runs with UUID ids as flowd's are. `"one by one"`: a
 * statement per row, the runs in turn (interleaved runs insert at as many places in the
 * primary key, which costs SQLite more than one run). `"in blocks"`: the runs in turn by
 * blocks of `ROWS_PER_INSERT` rows, one statement per block (the fastest way SQLite takes
 * rows of many runs; `batch` a multiple of the block).
 */
export function rawSqliteAppend(events: number, batch: number, frame: string, sync: "FULL" | "NORMAL", runs: number, method: "one by one" | "in blocks"): number {
  const rowsPerStatement = method === "in blocks" ? ROWS_PER_INSERT : 1;
  if (batch % rowsPerStatement !== 0) throw new Error(`a transaction of ${batch} rows is not a whole number of ${rowsPerStatement}-row blocks`);
  events = Math.ceil(events / rowsPerStatement) * rowsPerStatement;
  const tmp = scratch();
  try {
    const db = openDb(join(tmp.dir, "raw.db"), { sync });
    const ids = Array.from({ length: runs }, () => insertRawRun(db));
    const next = new Array<number>(runs).fill(0);
    const insert = prepareRawEventInsert(db, rowsPerStatement);
    const args = new Array<unknown>(rowsPerStatement * 3);
    const tx = db.sqlite.transaction((from: number, n: number) => {
      for (let i = from; i < from + n; i += rowsPerStatement) {
        const r = (i / rowsPerStatement) % runs;
        for (let row = 0; row < rowsPerStatement; row++) {
          args[row * 3] = ids[r];
          args[row * 3 + 1] = next[r]!++;
          args[row * 3 + 2] = frame;
        }
        insert.run(...args);
      }
    });
    const started = performance.now();
    for (let i = 0; i < events; i += batch) tx(i, Math.min(batch, events - i));
    const seconds = (performance.now() - started) / 1000;
    db.close();
    return events / seconds;
  } finally {
    tmp.remove();
  }
}

/** Raw SQLite limit: reading a run's `events` rows in order with `.iterate()`. */
export function rawRangeRead(dbPath: string, runId: string): number {
  const db = openDb(dbPath, { readonly: true });
  try {
    const statement = db.sqlite.prepare("SELECT event_index, event, payload FROM events WHERE run_id = ? AND event_index > ? ORDER BY event_index");
    const started = performance.now();
    let n = 0;
    for (const _row of statement.iterate(runId, -1)) n += 1;
    return n / ((performance.now() - started) / 1000);
  } finally {
    db.close();
  }
}

/** The fastest read there is of the same rows: pages of `page` rows as arrays (what flowd's catch-up does, minus building events). */
export function rawPagedRead(dbPath: string, runId: string, page: number): number {
  const db = openDb(dbPath, { readonly: true });
  try {
    const statement = db.sqlite
      .prepare<[string, number, number], [number, string, string]>(
        "SELECT event_index, event, payload FROM events WHERE run_id = ? AND event_index > ? ORDER BY event_index LIMIT ?",
      )
      .raw(true);
    const started = performance.now();
    let n = 0;
    for (let last = -1; ; ) {
      const rows = statement.all(runId, last, page);
      if (rows.length === 0) break;
      n += rows.length;
      last = rows[rows.length - 1]![0];
    }
    return n / ((performance.now() - started) / 1000);
  } finally {
    db.close();
  }
}

/**
 * Raw WebSocket limits: a bare WebSocket server in this process sends `messages` frames to
 * each of `clients` clients in the client process, as fast as the sockets take them
 * (respecting their buffers), in slices of 500 messages. `send`: a plain loop of
 * `ws.send()` of one frame serialized once, each send a syscall, as the reference
 * figure (~200k msgs/s) was taken. `corked send`: the same with each socket corked for a
 * slice, so a slice leaves in one writev. `socket`: one pre-built WebSocket frame written
 * to every corked TCP socket, the fastest way there is to send the same bytes (what
 * flowd's writer does). Returns delivered messages per second.
 */
export async function rawWsSend(clients: number, messages: number, frame: string, mode: "send" | "corked send" | "socket"): Promise<number> {
  const server = new WebSocketServer({ port: 0, host: "127.0.0.1", perMessageDeflate: false });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  const { port } = server.address() as { port: number };
  const sockets: WebSocket[] = [];
  const allConnected = new Promise<void>((resolve) =>
    server.on("connection", (socket) => {
      sockets.push(socket);
      if (sockets.length === clients) resolve();
    }),
  );
  const bytes = Buffer.from(frame);
  const framed = encodeTextFrame(frame);
  let started = 0;
  const done = runClients<{ at: number }>({ kind: "raw", url: `ws://127.0.0.1:${port}`, clients, expect: messages });
  await allConnected;
  const tcp = sockets.map((socket) => (socket as unknown as { _socket: Socket })._socket);
  started = performance.timeOrigin + performance.now();
  let sent = 0;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      // Send in slices, and wait whenever a socket's buffer is full, as flowd does.
      const until = Math.min(messages, sent + 500);
      if (mode !== "send") for (const socket of tcp) socket.cork();
      for (; sent < until; sent++) {
        for (let i = 0; i < sockets.length; i++) {
          if (mode === "socket") tcp[i]!.write(framed);
          else sockets[i]!.send(bytes, { binary: false });
        }
      }
      if (mode !== "send") for (const socket of tcp) socket.uncork();
      if (sent >= messages) return resolve();
      const backedUp = sockets.some((s) => s.bufferedAmount > 1024 * 1024);
      if (backedUp) setTimeout(pump, 1);
      else setImmediate(pump);
    };
    pump();
  });
  const { at } = await done;
  server.close();
  return (messages * clients) / ((at - started) / 1000);
}

/**
 * The best of `times` measurements of each of `measures`, taken in turn (each once per
 * round): a raw limit is what the machine can do at its best, and flowd's figure beside
 * it is taken the same way, so a slow spell of this shared machine lands on neither alone.
 */
export async function bestInTurn<K extends string>(times: number, measures: Record<K, () => number | Promise<number>>): Promise<Record<K, number>> {
  const top = {} as Record<K, number>;
  for (let i = 0; i < times; i++) {
    for (const key of Object.keys(measures) as K[]) top[key] = Math.max(top[key] ?? 0, await measures[key]());
  }
  return top;
}

/**
 * Raw latency floor: a bare WebSocket server in this process sends timestamped frames at
 * `rate` per second for `seconds` to the client process (paced like the `paced` workflow:
 * what is due, then a 1 ms timer; what is due leaves in one write), with nothing between
 * the stamp and the send. With
 * `durable`, what is due is first committed as flowd would (one transaction: the rows
 * inserted up to 32 per statement and the run's row updated, under that `synchronous`
 * mode, with the WAL checkpointed from a worker): the floor of emit → commit → send.
 * Returns the client's emit → receive latencies, as the B3 client measures them.
 */
export async function rawWsLatency(rate: number, seconds: number, durable?: "FULL" | "NORMAL"): Promise<{ p50: number; p99: number }> {
  const tmp = scratch();
  const db = durable ? openDb(join(tmp.dir, "raw.db"), { sync: durable, checkpointInBackground: (error) => console.error(error) }) : null;
  const commit = db ? rawCommitter(db) : () => {};
  const server = new WebSocketServer({ port: 0, host: "127.0.0.1", perMessageDeflate: false });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  const { port } = server.address() as { port: number };
  server.on("connection", (socket) => {
    socket.once("message", () => {
      const total = Math.round(rate * seconds);
      const started = performance.now();
      let sent = 0;
      const tick = (): void => {
        const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate) + 1);
        const frames: string[] = [];
        for (let i = sent; i < due; i++) {
          const content = JSON.stringify({ t: performance.timeOrigin + performance.now(), i });
          frames.push(JSON.stringify({ event: "RunContent", event_index: i, content }));
        }
        commit(frames, sent);
        // One write for all of them, as flowd sends a commit's events.
        const tcp = (socket as unknown as { _socket: Socket })._socket;
        tcp.cork();
        for (const frame of frames) socket.send(frame);
        tcp.uncork();
        sent = due;
        if (sent < total) setTimeout(tick, 1);
        else socket.send(JSON.stringify({ event: "WorkflowCompleted", event_index: sent }));
      };
      tick();
    });
  });
  const result = await runClients<{ p50: number; p99: number }>({ kind: "latency", url: `ws://127.0.0.1:${port}`, data: {} });
  server.close();
  db?.close();
  tmp.remove();
  return result;
}

/** What the `workflows` client plan reports. */
export interface WorkflowRounds {
  completions: number;
  elapsedMs: number;
  latenciesMs: number[];
}

/**
 * Raw floor of a durable workflow of `steps` steps: a bare WebSocket server in this
 * process that, for each start, commits the run's row with its first event, then one
 * transaction per step outcome and one for the end, each the moment the previous one is
 * done (no step code, no event loop turn between them), and only then sends the terminal
 * frame. What committing every outcome before going on (I8) costs at the least, one
 * workflow after another (the server takes starts in turn, as one thread does).
 */
export async function rawDurableWorkflows(clients: number, perClient: number, steps: number, sync: "FULL" | "NORMAL"): Promise<WorkflowRounds> {
  const tmp = scratch();
  const db = openDb(join(tmp.dir, "raw.db"), { sync, checkpointInBackground: (error) => console.error(error) });
  const insertRun = db.sqlite.prepare("INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, created_at, updated_at) VALUES (?, 'w', 'w', 's', 0, 0)");
  const insertEvent = prepareRawEventInsert(db, 1);
  const advance = db.sqlite.prepare("UPDATE runs SET last_event_index = ?, updated_at = ? WHERE run_id = ?");
  const append = db.sqlite.transaction((runId: string, index: number, create: boolean) => {
    if (create) insertRun.run(runId);
    insertEvent.run(runId, index, `{"event":"StepCompleted","event_index":${index}}`);
    advance.run(index, Date.now(), runId);
  }).immediate;
  const server = new WebSocketServer({ port: 0, host: "127.0.0.1", perMessageDeflate: false });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  const { port } = server.address() as { port: number };
  server.on("connection", (socket) => {
    socket.on("message", () => {
      const runId = randomUUID();
      for (let index = 0; index <= steps + 1; index++) append(runId, index, index === 0);
      socket.send(JSON.stringify({ event: "WorkflowCompleted", event_index: steps + 1 }));
    });
  });
  const result = await runClients<WorkflowRounds>({ kind: "workflows", url: `ws://127.0.0.1:${port}`, clients, perClient, workflow: "raw" });
  server.close();
  db.close();
  tmp.remove();
  return result;
}

/** Commits frames as one run's events `from` on, in one transaction, the least flowd's writer does per batch. */
function rawCommitter(db: Db): (frames: string[], from: number) => void {
  const runId = insertRawRun(db);
  // inserts[k] writes 2^k rows.
  const inserts = Array.from({ length: Math.log2(ROWS_PER_INSERT) + 1 }, (_, k) => prepareRawEventInsert(db, 1 << k));
  const advance = db.sqlite.prepare("UPDATE runs SET last_event_index = ?, updated_at = ? WHERE run_id = ?");
  return db.sqlite.transaction((frames: string[], from: number) => {
    let at = 0;
    for (let k = inserts.length - 1; k >= 0; k--) {
      for (const size = 1 << k; frames.length - at >= size; at += size) {
        const args: unknown[] = [];
        for (let i = at; i < at + size; i++) args.push(runId, from + i, frames[i]);
        inserts[k]!.run(...args);
      }
    }
    advance.run(from + frames.length - 1, Date.now(), runId);
  }).immediate;
}
