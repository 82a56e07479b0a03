import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import WebSocket from "ws";

/** How a verification runs (`flowd verify`). */
export interface VerifyOptions {
  trials: number;
  /** Runs started and watched per trial. */
  runs: number;
  /** SIGKILLs per trial, each at a random moment while the runs go. */
  kills: number;
  workflowId: string;
  message: string;
  /** How to start the server under test: a command and its arguments; `--port <p> --db <file>` are added. */
  server: { command: string; args: string[]; env: Record<string, string> };
  /** How long a trial's runs may take to finish after the last kill. */
  finishTimeoutMs: number;
  /** Told as the work goes on (a progress bar). */
  progress: (update: { trial: number; phase: string; received: number }) => void;
  /** Random numbers in [0, 1): Math.random, or a seeded one. */
  random: () => number;
}

/** What one run's client saw. */
export interface RunCheck {
  runId: string;
  received: number;
  lost: number;
  duplicated: number;
  outOfOrder: number;
  changed: number;
  finished: boolean;
}

export interface TrialReport {
  trial: number;
  kills: number;
  /** How long the runs took, restarts left out: where the next trial places its kills. */
  runMs: number;
  runs: RunCheck[];
  received: number;
  lost: number;
  duplicated: number;
  outOfOrder: number;
  changed: number;
  unfinished: number;
}

const TERMINAL = new Set(["WorkflowCompleted", "WorkflowError", "WorkflowCancelled"]);

/** Whether a report says anything went wrong. */
export function failed(report: Pick<TrialReport, "lost" | "duplicated" | "outOfOrder" | "changed" | "unfinished">): boolean {
  return report.lost + report.duplicated + report.outOfOrder + report.changed + report.unfinished > 0;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/** Servers and scratch folders of trials under way: what an interrupted verification (Ctrl-C) cleans up. */
const live = { servers: new Set<ChildProcess>(), folders: new Set<string>() };

/** Kills every server a trial started and removes every scratch folder (on SIGINT/SIGTERM of `flowd verify`). */
export function cleanUpTrials(): void {
  for (const child of live.servers) child.kill("SIGKILL");
  for (const folder of live.folders) rmSync(folder, { recursive: true, force: true });
}

/** The server under test, as a child process this verification kills and starts again. */
class ServerUnderTest {
  private child: ChildProcess | null = null;
  private output = "";

  constructor(
    private readonly options: VerifyOptions["server"],
    readonly port: number,
    private readonly db: string,
  ) {}

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/workflows/ws`;
  }

  /** Starts it and waits until its WebSocket answers. */
  async start(): Promise<void> {
    this.output = "";
    const child = spawn(this.options.command, [...this.options.args, "--port", String(this.port), "--db", this.db], {
      env: { ...process.env, ...this.options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    live.servers.add(child);
    child.once("exit", () => live.servers.delete(child));
    const keep = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString()).slice(-4000);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the server exited (${child.exitCode ?? child.signalCode}) before it listened:\n${this.output}`);
      if (await answers(this.wsUrl)) return;
      if (Date.now() > deadline) throw new Error(`the server did not listen on port ${this.port} within 30 s:\n${this.output}`);
      await sleep(50);
    }
  }

  /** SIGKILL, as a crash or an OOM kill would: nothing gets to finish. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

async function answers(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.once("open", () => {
      socket.close();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * One client of one run, through the public WebSocket protocol only: it starts the run,
 * keeps every event it receives, and after a server restart reconnects from the last
 * index it has. Each index's frame is kept as received, to find one that changes later.
 */
class WatchingClient {
  runId: string | null = null;
  readonly frames = new Map<number, string>();
  last = -1;
  duplicated = 0;
  outOfOrder = 0;
  changed = 0;
  finished = false;
  /** The server answered that it does not know the run (any more): nothing more will come. */
  gone = false;
  /** The first error the server answered this client with, to say why a run did not start. */
  firstError: string | null = null;
  private socket: WebSocket | null = null;
  /** Set while a finished run's replay (from index 0) comes: its indices are the ones had already. */
  private replaying = false;

  constructor(private readonly onEvent: () => void) {}

  async connect(url: string, start: { workflowId: string; message: string } | null): Promise<void> {
    const socket = new WebSocket(url);
    this.socket = socket;
    await new Promise<void>((resolve, reject) => {
      socket.once("open", () => resolve());
      socket.once("error", reject);
    });
    socket.on("error", () => {});
    socket.on("message", (data) => this.receive(data.toString()));
    if (start) socket.send(JSON.stringify({ action: "start-workflow", workflow_id: start.workflowId, message: start.message }));
    else if (this.runId !== null) socket.send(JSON.stringify({ action: "reconnect", run_id: this.runId, last_event_index: this.last < 0 ? null : this.last }));
  }

  /** Waits until the run's id is known (the first event of a start). */
  async started(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.runId === null) {
      if (Date.now() > deadline) throw new Error(`a start-workflow got no event within ${timeoutMs / 1000} s${this.firstError ? `; the server answered: ${this.firstError}` : ""}`);
      await sleep(10);
    }
  }

  close(): void {
    this.socket?.terminate();
    this.socket = null;
  }

  private receive(text: string): void {
    let frame: { event?: unknown; run_id?: unknown; event_index?: unknown };
    try {
      frame = JSON.parse(text) as typeof frame;
    } catch {
      return;
    }
    if (frame.event === "replay") {
      this.replaying = true;
      return;
    }
    if (frame.event === "error" || frame.event === "auth_required" || frame.event === "auth_error") {
      this.firstError ??= text;
      if ((frame as { code?: unknown }).code === "RUN_NOT_FOUND") this.gone = true;
      return;
    }
    if (typeof frame.event_index !== "number" || typeof frame.run_id !== "string") return;
    this.runId ??= frame.run_id;
    const index = frame.event_index;
    const seen = this.frames.get(index);
    if (seen !== undefined) {
      if (seen !== text) this.changed++;
      // A finished run is replayed whole on reconnect (the protocol's rule): not a duplicate.
      else if (!this.replaying) this.duplicated++;
    } else {
      // An earlier index after a later one; a missing one is counted as lost at the end.
      if (index < this.last) this.outOfOrder++;
      this.frames.set(index, text);
      this.onEvent();
    }
    if (index > this.last) this.last = index;
    if (TERMINAL.has(String(frame.event))) {
      this.finished = true;
      this.replaying = false;
    }
  }
}

/** Reads a run's whole log again over a fresh socket (a reconnect from the start): what the server now says it has. */
async function replay(url: string, runId: string, timeoutMs: number): Promise<Map<number, string>> {
  const frames = new Map<number, string>();
  const socket = new WebSocket(url);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the replay did not end in time")), timeoutMs);
      socket.once("error", reject);
      socket.on("message", (data) => {
        const text = data.toString();
        let frame: { event?: unknown; event_index?: unknown };
        try {
          frame = JSON.parse(text) as typeof frame;
        } catch {
          return;
        }
        if (typeof frame.event_index === "number") frames.set(frame.event_index, text);
        if (TERMINAL.has(String(frame.event))) {
          clearTimeout(timer);
          resolve();
        }
      });
      socket.once("open", () => socket.send(JSON.stringify({ action: "reconnect", run_id: runId, last_event_index: null })));
    });
  } catch {
    // What came is compared; what did not shows as lost.
  } finally {
    socket.terminate();
  }
  return frames;
}

/**
 * One trial: a fresh database, the runs started and watched, `kills` SIGKILLs and restarts,
 * then the checks. The kills fall at random moments spread over `expectedMs`, how long the
 * runs are expected to take (the previous trial's, without its restarts).
 */
export async function runTrial(trial: number, options: VerifyOptions, expectedMs: number): Promise<TrialReport> {
  const dir = mkdtempSync(join(tmpdir(), "flowd-verify-"));
  live.folders.add(dir);
  const server = new ServerUnderTest(options.server, await freePort(), join(dir, "flowd.db"));
  let received = 0;
  const clients = Array.from({ length: options.runs }, () => new WatchingClient(() => received++));
  const report = (phase: string): void => options.progress({ trial, phase, received });
  try {
    report("starting the server");
    await server.start();
    await Promise.all(clients.map((client) => client.connect(server.wsUrl, { workflowId: options.workflowId, message: options.message })));
    await Promise.all(clients.map((client) => client.started(30_000)));
    // Run time, without the time the server was down and starting again.
    let downMs = 0;
    const begun = Date.now();
    const runTime = (): number => Date.now() - begun - downMs;
    let kills = 0;
    for (; kills < options.kills; kills++) {
      // A random moment in this kill's share of the expected run time: early, in the middle, near the end.
      const at = ((kills + options.random()) / options.kills) * expectedMs * 0.8;
      while (runTime() < at && !clients.every((client) => client.finished)) {
        report(`running; SIGKILL ${kills + 1} of ${options.kills} in ${Math.max(0, Math.round(at - runTime()))} ms`);
        await sleep(Math.max(1, Math.min(50, at - runTime())));
      }
      if (clients.every((client) => client.finished)) break;
      const down = Date.now();
      await server.kill();
      for (const client of clients) client.close();
      report(`killed (SIGKILL ${kills + 1}); restarting`);
      await server.start();
      downMs += Date.now() - down;
      await Promise.all(clients.map((client) => client.connect(server.wsUrl, null)));
    }
    const deadline = Date.now() + options.finishTimeoutMs;
    while (!clients.every((client) => client.finished || client.gone) && Date.now() < deadline) {
      report("waiting for the runs to finish");
      await sleep(20);
    }
    const runMs = runTime();
    for (const client of clients) client.close();
    report("reading every run again");
    const runs: RunCheck[] = [];
    for (const client of clients) {
      const runId = client.runId!;
      const stored = await replay(server.wsUrl, runId, 30_000);
      let changed = client.changed;
      for (const [index, text] of client.frames) {
        const now = stored.get(index);
        if (now !== undefined && now !== text) changed++;
      }
      // Everything up to the last index anyone has seen: what the server has, and what the client got.
      const end = Math.max(client.last, ...stored.keys());
      let lost = 0;
      for (let index = 0; index <= end; index++) if (!client.frames.has(index) || !stored.has(index)) lost++;
      runs.push({ runId, received: client.frames.size, lost, duplicated: client.duplicated, outOfOrder: client.outOfOrder, changed, finished: client.finished });
    }
    const sum = (pick: (run: RunCheck) => number): number => runs.reduce((total, run) => total + pick(run), 0);
    return {
      trial,
      kills,
      runMs,
      runs,
      received: sum((run) => run.received),
      lost: sum((run) => run.lost),
      duplicated: sum((run) => run.duplicated),
      outOfOrder: sum((run) => run.outOfOrder),
      changed: sum((run) => run.changed),
      unfinished: runs.filter((run) => !run.finished).length,
    };
  } finally {
    for (const client of clients) client.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
    live.folders.delete(dir);
  }
}
