/** B10 and B11: runs that wait (sleeping runs' cost and wake-up; continue and signal latency). */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import WebSocket, { WebSocketServer } from "ws";
import { openDb } from "../../src/store/db.ts";
import { startServerProcess, type ServerProcess } from "../../testkit/server-process.ts";
import { BENCH_WORKFLOWS, rssOf, scratch } from "./harness.ts";
import { percentile } from "./percentile.ts";

/** Starts `count` runs of `workflow` in the background, `concurrency` requests at a time; `data(i)` is each one's additional_data. */
export async function startMany(url: string, workflow: string, count: number, data: (i: number) => Record<string, unknown>, concurrency = 32): Promise<string[]> {
  const ids: string[] = new Array<string>(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      const response = await fetch(`${url}/workflows/${workflow}/runs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ background: true, additional_data: data(i) }),
      });
      const body = (await response.json()) as { run_id?: string; detail?: string };
      if (!body.run_id) throw new Error(`start failed: ${body.detail ?? response.status}`);
      ids[i] = body.run_id;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return ids;
}

/** Polls the database (read-only) until `count` runs of `workflow` have `status`. */
async function untilCount(dbPath: string, workflow: string, status: string, count: number, timeoutMs = 120_000): Promise<void> {
  const db = new Database(dbPath, { readonly: true });
  const query = db.prepare<[string, string], { n: number }>("SELECT count(*) AS n FROM runs WHERE workflow_id = ? AND status = ?");
  const deadline = Date.now() + timeoutMs;
  try {
    while (query.get(workflow, status)!.n < count) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} ${status} runs of ${workflow}`);
      await sleep(50);
    }
  } finally {
    db.close();
  }
}

/** How late each completed `nap` run due from `from` (epoch ms) on woke (its output), in ms. */
function latenesses(dbPath: string, from: number): number[] {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db
      .prepare<[number], { output: string }>(
        "SELECT output FROM runs WHERE workflow_id = 'nap' AND status = 'completed' AND json_extract(additional_data, '$.wakeAt') >= ?",
      )
      .all(from)
      .map((row) => Number(JSON.parse(row.output)));
  } finally {
    db.close();
  }
}

async function healthyAfter(url: string, since: number): Promise<number> {
  for (;;) {
    const ok = await fetch(`${url}/health`).then((r) => r.status === 200, () => false);
    if (ok) return performance.now() - since;
    await sleep(2);
  }
}

/** The server's JS heap in use after a full GC (bench/workflows.ts answers SIGUSR2 with it). */
async function heapAfterGc(pid: number, file: string): Promise<number> {
  rmSync(file, { force: true });
  process.kill(pid, "SIGUSR2");
  for (let i = 0; i < 500 && !existsSync(file); i++) await sleep(10);
  await sleep(20);
  return Number(readFileSync(file, "utf8"));
}

/** The least a process can hold to know `count` timers: a Map of run id → wake time, measured after GC in this process. */
function rawTimerBytes(count: number): number {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  gc();
  const before = process.memoryUsage().heapUsed;
  const timers = new Map<string, number>();
  for (let i = 0; i < count; i++) timers.set(randomUUID(), Date.now() + i);
  gc();
  const bytes = (process.memoryUsage().heapUsed - before) / count;
  timers.clear();
  return Math.round(bytes);
}

/** Resident memory once it has settled (two readings 200 ms apart within 1%). */
async function settledRss(pid: number): Promise<number> {
  let last = rssOf(pid);
  for (let i = 0; i < 20; i++) {
    await sleep(200);
    const now = rssOf(pid);
    if (Math.abs(now - last) / last < 0.01) return now;
    last = now;
  }
  return last;
}

export interface SleepingRunsResult {
  runs: number;
  heapBytesPerSleepingRun: number;
  rawTimerBytes: number;
  rssBytesPerSleepingRun: number;
  rssBytesPerFinishedRun: number;
  wakeP50Ms: number;
  wakeP99Ms: number;
  wakeMaxMs: number;
  restartHealthyMs: number;
  emptyRestartHealthyMs: number;
  restartWakeMaxMs: number;
  restartWakeP99Ms: number;
}

/**
 * B10: `runs` runs sleeping at once. Memory per sleeping run is the server's resident
 * growth while they sleep, beside its growth for as many runs that finished at once (the
 * same rows stored, nothing waiting). Wake-up lateness is each run's code resuming after its
 * stored time. Then the server is killed with all of them asleep and restarted.
 */
export async function sleepingRuns(runs: number, sync: "FULL" | "NORMAL"): Promise<SleepingRunsResult> {
  const tmp = scratch();
  const heapFile = join(tmp.dir, "heap");
  const env = { FLOWD_SYNC: sync, FLOWD_BENCH_HEAP_FILE: heapFile, NODE_OPTIONS: "--expose-gc" };
  const serve = (db: string): Promise<ServerProcess> => startServerProcess(["--workflows", BENCH_WORKFLOWS, "--db", db], { env });
  try {
    // The limit: as many runs that do not wait (they wake at once), on a server of their own.
    const finishedDb = join(tmp.dir, "finished.db");
    const finished = await serve(finishedDb);
    await startMany(finished.url, "nap", 200, () => ({ wakeAt: 0 }));
    const finishedBase = await settledRss(finished.child.pid!);
    await startMany(finished.url, "nap", runs, () => ({ wakeAt: 0 }));
    await untilCount(finishedDb, "nap", "completed", runs + 200);
    const finishedGrowth = (await settledRss(finished.child.pid!)) - finishedBase;
    await finished.stop();

    const db = join(tmp.dir, "sleeping.db");
    let server = await serve(db);
    await startMany(server.url, "nap", 200, () => ({ wakeAt: 0 }));
    await untilCount(db, "nap", "completed", 200);
    const base = await settledRss(server.child.pid!);
    const heapBase = await heapAfterGc(server.child.pid!, heapFile);
    // Wake times spread over 5 s, starting once every run has gone to sleep.
    const firstWake = Date.now() + 20_000 + runs;
    await startMany(server.url, "nap", runs, (i) => ({ wakeAt: firstWake + Math.floor((i * 5000) / runs) }));
    await untilCount(db, "nap", "waiting", runs);
    const heapGrowth = (await heapAfterGc(server.child.pid!, heapFile)) - heapBase;
    const sleepingGrowth = (await settledRss(server.child.pid!)) - base;
    await untilCount(db, "nap", "completed", runs + 200);
    const awake = latenesses(db, firstWake);

    // All asleep again, then kill -9 and restart.
    const secondWake = Date.now() + 15_000 + runs;
    await startMany(server.url, "nap", runs, (i) => ({ wakeAt: secondWake + Math.floor((i * 5000) / runs) }));
    await untilCount(db, "nap", "waiting", runs);
    server.child.kill("SIGKILL");
    await server.exited;
    const restartedAt = performance.now();
    server = await serve(db);
    const restartHealthyMs = await healthyAfter(server.url, restartedAt);
    await untilCount(db, "nap", "completed", 2 * runs + 200);
    const afterRestart = latenesses(db, secondWake);
    await server.stop();

    const emptyStarted = performance.now();
    const empty = await serve(join(tmp.dir, "empty.db"));
    const emptyRestartHealthyMs = await healthyAfter(empty.url, emptyStarted);
    await empty.stop();

    return {
      runs,
      heapBytesPerSleepingRun: Math.round(heapGrowth / runs),
      rawTimerBytes: rawTimerBytes(runs),
      rssBytesPerSleepingRun: Math.round(sleepingGrowth / runs),
      rssBytesPerFinishedRun: Math.round(finishedGrowth / runs),
      wakeP50Ms: percentile(awake, 0.5),
      wakeP99Ms: percentile(awake, 0.99),
      wakeMaxMs: Math.max(...awake),
      restartHealthyMs: Math.round(restartHealthyMs),
      emptyRestartHealthyMs: Math.round(emptyRestartHealthyMs),
      restartWakeMaxMs: Math.max(...afterRestart),
      restartWakeP99Ms: percentile(afterRestart, 0.99),
    };
  } finally {
    tmp.remove();
  }
}

/** Latencies (ms) from each request to the matching frame at a watching client. */
async function measureAtRate(
  watcher: WebSocket,
  ids: readonly string[],
  rate: number,
  watchFor: string,
  request: (runId: string) => Promise<unknown>,
): Promise<number[]> {
  const sentAt = new Map<string, number>();
  const latencies: number[] = [];
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  watcher.on("message", (data) => {
    const frame = JSON.parse(String(data)) as { event?: string; run_id?: string };
    if (frame.event !== watchFor || !frame.run_id) return;
    const at = sentAt.get(frame.run_id);
    if (at === undefined) return;
    latencies.push(performance.now() - at);
    sentAt.delete(frame.run_id);
    if (latencies.length === ids.length) done();
  });
  const started = performance.now();
  const pending: Promise<unknown>[] = [];
  for (const [i, runId] of ids.entries()) {
    const due = started + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    sentAt.set(runId, performance.now());
    pending.push(request(runId));
  }
  await Promise.race([all, sleep(30_000)]);
  await Promise.all(pending);
  watcher.removeAllListeners("message");
  return latencies;
}

async function watch(wsUrl: string, runIds: readonly string[]): Promise<WebSocket> {
  const socket = new WebSocket(wsUrl, { perMessageDeflate: false });
  await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
  let subscribed = 0;
  const all = new Promise<void>((resolve) =>
    socket.on("message", (data) => {
      if ((JSON.parse(String(data)) as { event?: string }).event === "subscribed" && ++subscribed === runIds.length) resolve();
    }),
  );
  for (const runId of runIds) socket.send(JSON.stringify({ action: "reconnect", run_id: runId, last_event_index: 1_000_000 }));
  await all;
  socket.removeAllListeners("message");
  return socket;
}

/** Requests made before measuring, on each path. */
const WARM_UP = 100;

export interface HandoffLatency {
  continueP50: number;
  continueP99: number;
  signalP50: number;
  signalP99: number;
  rawP50: number;
  rawP99: number;
}

/**
 * B11: at `rate` requests per second, a continue (REST) until a watching client gets
 * `StepContinued`, and a signal until it gets `WaitCompleted`. The limit: an HTTP server
 * that commits one row per request and sends a frame to a watching WebSocket client.
 */
export async function handoffLatency(count: number, rate: number, sync: "FULL" | "NORMAL"): Promise<HandoffLatency> {
  const tmp = scratch();
  try {
    const db = join(tmp.dir, "flowd.db");
    const server = await startServerProcess(["--workflows", BENCH_WORKFLOWS, "--db", db], { env: { FLOWD_SYNC: sync } });
    let continueMs: number[];
    let signalMs: number[];
    try {
      // The first WARM_UP of each are not measured: a fresh process compiles these paths on its first calls.
      const paused = await startMany(server.url, "approve", WARM_UP + count, () => ({}));
      const waiting = await startMany(server.url, "await-signal", WARM_UP + count, () => ({}));
      await untilCount(db, "approve", "paused", WARM_UP + count);
      await untilCount(db, "await-signal", "waiting", WARM_UP + count);
      const post = (path: string, body: unknown) =>
        fetch(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }).then((r) => r.arrayBuffer());
      const continueRun = (runId: string) => post(`/workflows/approve/runs/${runId}/continue`, { step_requirements: [{ confirmed: true }], stream: false });
      const signalRun = (runId: string) => post(`/runs/${runId}/signals/go`, { n: 1 });
      let watcher = await watch(server.wsUrl, paused);
      await measureAtRate(watcher, paused.slice(0, WARM_UP), rate, "StepContinued", continueRun);
      continueMs = await measureAtRate(watcher, paused.slice(WARM_UP), rate, "StepContinued", continueRun);
      watcher.close();
      watcher = await watch(server.wsUrl, waiting);
      await measureAtRate(watcher, waiting.slice(0, WARM_UP), rate, "WaitCompleted", signalRun);
      signalMs = await measureAtRate(watcher, waiting.slice(WARM_UP), rate, "WaitCompleted", signalRun);
      watcher.close();
    } finally {
      await server.stop();
    }
    const raw = await rawHandoff(count, rate, sync, join(tmp.dir, "raw.db"));
    return {
      continueP50: percentile(continueMs, 0.5),
      continueP99: percentile(continueMs, 0.99),
      signalP50: percentile(signalMs, 0.5),
      signalP99: percentile(signalMs, 0.99),
      rawP50: percentile(raw, 0.5),
      rawP99: percentile(raw, 0.99),
    };
  } finally {
    tmp.remove();
  }
}

/** The raw limit of B11: POST → one committed row → a frame to the watcher. */
async function rawHandoff(count: number, rate: number, sync: "FULL" | "NORMAL", path: string): Promise<number[]> {
  const db = openDb(path, { sync, checkpointInBackground: (error) => console.error(error) });
  db.sqlite.exec("CREATE TABLE IF NOT EXISTS handoff (run_id TEXT PRIMARY KEY, payload TEXT NOT NULL)");
  const insert = db.sqlite.prepare("INSERT INTO handoff (run_id, payload) VALUES (?, ?)");
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", perMessageDeflate: false });
  await new Promise<void>((resolve) => wss.once("listening", () => resolve()));
  let watcherSide: WebSocket | null = null;
  wss.on("connection", (socket) => (watcherSide = socket));
  const http = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const runId = (request.url ?? "/").slice(1);
      const body = Buffer.concat(chunks).toString();
      insert.run(runId, body);
      watcherSide?.send(JSON.stringify({ event: "Handoff", run_id: runId, payload: body }));
      response.writeHead(202, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const { port: httpPort } = http.address() as AddressInfo;
  const { port: wsPort } = wss.address() as AddressInfo;
  const watcher = new WebSocket(`ws://127.0.0.1:${wsPort}`, { perMessageDeflate: false });
  await new Promise((resolve) => watcher.once("open", resolve));
  await sleep(50);
  const ids = Array.from({ length: count }, (_, i) => `run-${i}`);
  const latencies = await measureAtRate(watcher, ids, rate, "Handoff", (runId) =>
    fetch(`http://127.0.0.1:${httpPort}/${runId}`, { method: "POST", body: JSON.stringify({ n: 1 }) }).then((r) => r.arrayBuffer()),
  );
  watcher.close();
  http.close();
  wss.close();
  db.close();
  return latencies;
}
