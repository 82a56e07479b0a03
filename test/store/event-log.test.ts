import { once } from "node:events";
import { createRequire } from "node:module";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { FlowdError } from "../../src/errors.ts";
import { EventBatch, type CommittedEvent, type RunEventBody } from "../../src/protocol/run-events.ts";
import { openDb, type Db } from "../../src/store/db.ts";
import { EventLog, type Checkpoint } from "../../src/store/event-log.ts";
import type { RunFollower } from "../../src/store/notifier.ts";
import { SqliteRetention } from "../../src/store/retention.ts";
import { RunStore } from "../../src/store/run-store.ts";
import { range, storedIndices, tempDir } from "../helpers/server.ts";

let temp: ReturnType<typeof tempDir>;
let db: Db;
let log: EventLog;
let runs: RunStore;
let reader: Database.Database;
let appendErrors: unknown[];

/** For follows of runs that must not halt: a halt fails the test. */
function unexpectedHalt(error: FlowdError): void {
  throw error;
}

/** A follower that takes each event of every batch and counts the run's ends. */
class Taker implements RunFollower {
  endings = 0;
  constructor(
    private readonly take: (event: CommittedEvent) => void = () => {},
    private readonly onFailed: (error: FlowdError) => void = unexpectedHalt,
  ) {}
  events(batch: EventBatch): void {
    batch.events.forEach(this.take);
  }
  ended(): void {
    this.endings++;
  }
  failed(error: FlowdError): void {
    this.onFailed(error);
  }
}

function each(take: (event: CommittedEvent) => void): Taker {
  return new Taker(take);
}

/** Creates a run and commits it, as a start does with its first event. */
function newRun(runId: string): void {
  log.createRun({
    runId,
    workflowId: "wf",
    workflowName: "Workflow",
    sessionId: "session",
    userId: null,
    input: "in",
    additionalData: null,
  });
  log.flushNow();
}

/** Keeps this thread busy, as a long request or a producer that never awaits does. */
function busyWait(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

/** Appends and commits at once, so each assertion sees the event stored. */
function append(runId: string, body: RunEventBody, checkpoint?: Checkpoint): void {
  log.append(runId, body, checkpoint);
  log.flushNow();
}

beforeEach(() => {
  appendErrors = [];
  temp = tempDir();
  const path = join(temp.dir, "nested", "dir", "flowd.db");
  db = openDb(path);
  log = new EventLog(db, (error) => {
    appendErrors.push(error);
  });
  runs = new RunStore(db);
  reader = new Database(path, { readonly: true });
});
afterEach(() => {
  reader.close();
  db.close();
  temp.remove();
});

describe("the event log", () => {
  it("opens the file in WAL mode with foreign keys on, creating its folder", () => {
    expect(db.sqlite.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(db.sqlite.pragma("foreign_keys", { simple: true })).toBe(1);
    expect(Number(db.sqlite.pragma("busy_timeout", { simple: true }))).toBeGreaterThan(0);
    // synchronous: NORMAL (1) unless FULL (2) is asked for.
    expect(db.sqlite.pragma("synchronous", { simple: true })).toBe(1);
    const full = openDb(join(temp.dir, "full.db"), { sync: "FULL" });
    expect(full.sqlite.pragma("synchronous", { simple: true })).toBe(2);
    full.close();
  });

  it("gives each run its own gap-free indices 0..N-1, interleaved appends included (I1)", async () => {
    newRun("a");
    newRun("b");
    for (let i = 0; i < 50; i++) {
      append("a", { event: "WorkflowStarted", input: `a${i}` });
      if (i % 2 === 0) append("b", { event: "WorkflowStarted", input: `b${i}` });
    }
    expect(storedIndices(reader, "a")).toEqual(range(50));
    expect(storedIndices(reader, "b")).toEqual(range(25));
    expect((await runs.get("a"))?.lastEventIndex).toBe(49);
  });

  it("stores the frame it delivers, byte for byte, with the envelope fields", () => {
    newRun("r");
    const delivered: CommittedEvent[] = [];
    log.notifier.subscribe("r", each((e) => delivered.push(e)));
    append("r", { event: "WorkflowStarted", input: "hello" });
    const row = reader.prepare("SELECT event, payload FROM events WHERE run_id = 'r'").get() as { event: string; payload: string };
    expect(row.event).toBe("WorkflowStarted");
    expect(delivered[0]?.frame).toBe(row.payload);
    // The WebSocket frame carries the same bytes after its 2-, 4- or 10-byte header.
    expect(new EventBatch(delivered).wsFrames().subarray(-Buffer.byteLength(row.payload)).toString()).toBe(row.payload);
    expect(JSON.parse(row.payload)).toMatchObject({
      event: "WorkflowStarted",
      event_index: 0,
      run_id: "r",
      workflow_id: "wf",
      workflow_name: "Workflow",
      session_id: "session",
      input: "hello",
    });
  });

  it("stores every event of a large interleaved batch in its own row, as delivered, with a checkpoint where given", async () => {
    const ids = ["a", "b", "c"];
    ids.forEach(newRun);
    const delivered: CommittedEvent[] = [];
    for (const id of ids) log.notifier.subscribe(id, each((e) => delivered.push(e)));
    // 3 × 45 events in one commit: not a multiple of any number of rows written at a time.
    for (let i = 0; i < 45; i++) {
      for (const id of ids) {
        const checkpoint = i === 44 ? { path: "step", stepName: "step", output: `${id}-done` } : undefined;
        log.append(id, { event: "StepOutput", step_name: "step", step_index: 0, step_path: "step", content: `${id}${i}` }, checkpoint);
      }
    }
    log.flushNow();
    expect(delivered).toHaveLength(135);
    const rows = reader.prepare("SELECT run_id, event_index, event, step_path, payload FROM events ORDER BY run_id, event_index").all() as {
      run_id: string; event_index: number; event: string; step_path: string; payload: string;
    }[];
    expect(rows).toHaveLength(135);
    for (const id of ids) {
      const mine = rows.filter((row) => row.run_id === id);
      expect(mine.map((row) => row.event_index)).toEqual(range(45));
      expect(mine.map((row) => JSON.parse(row.payload).content)).toEqual(range(45).map((i) => `${id}${i}`));
      expect(mine.map((row) => row.payload)).toEqual(delivered.filter((e) => e.runId === id).map((e) => e.frame));
      expect(mine.every((row) => row.event === "StepOutput" && row.step_path === "step")).toBe(true);
      expect(reader.prepare("SELECT output, event_index FROM step_checkpoints WHERE run_id = ?").get(id)).toEqual({ output: `"${id}-done"`, event_index: 44 });
      expect((await runs.get(id))?.lastEventIndex).toBe(44);
    }
  });

  it("tells live listeners only about events another connection can already read (I2)", () => {
    newRun("r");
    const visibleWhenDelivered: boolean[] = [];
    const check = reader.prepare("SELECT 1 FROM events WHERE run_id = 'r' AND event_index = ?");
    log.notifier.subscribe("r", each((e) => visibleWhenDelivered.push(check.get(e.index) !== undefined)));
    for (let i = 0; i < 20; i++) append("r", { event: "WorkflowStarted", input: String(i) });
    expect(visibleWhenDelivered).toEqual(range(20).map(() => true));
  });

  it("updates the run row on the terminal event and refuses anything after it", async () => {
    newRun("r");
    append("r", { event: "WorkflowStarted", input: "x" });
    append("r", { event: "WorkflowCompleted", content: { answer: 42 }, duration_ms: 5 });
    const row = await runs.get("r");
    expect(row).toMatchObject({ status: "completed", output: { answer: 42 }, lastEventIndex: 1 });
    expect(row?.startedAt).not.toBeNull();
    expect(row?.finishedAt).not.toBeNull();
    append("r", { event: "WorkflowStarted", input: "again" });
    expect(appendErrors).toEqual([expect.objectContaining({ code: "RUN_FINISHED" })]);
    expect(storedIndices(reader, "r")).toEqual([0, 1]);
  });

  it("a cancel that comes once the run has ended, in the same batch or a later one, adds nothing and sinks nothing", async () => {
    newRun("c");
    log.append("c", { event: "WorkflowStarted", input: "x" });
    log.append("c", { event: "WorkflowCancelled", reason: "first" });
    log.append("c", { event: "WorkflowCancelled", reason: "raced the first" });
    log.flushNow();
    append("c", { event: "WorkflowCancelled", reason: "late" });
    expect(appendErrors).toEqual([]);
    const stored = reader.prepare<[string], { event: string; payload: string }>("SELECT event, payload FROM events WHERE run_id = ? ORDER BY event_index").all("c");
    expect(stored.map((row) => row.event)).toEqual(["WorkflowStarted", "WorkflowCancelled"]);
    expect(JSON.parse(stored[1]!.payload)).toMatchObject({ reason: "first" });
    expect(await runs.get("c")).toMatchObject({ status: "cancelled", lastEventIndex: 1 });
  });

  it("refuses events for an unknown run without writing anything", () => {
    append("ghost", { event: "WorkflowStarted", input: "" });
    expect(appendErrors).toEqual([expect.objectContaining({ code: "RUN_NOT_FOUND" })]);
    expect(reader.prepare("SELECT count(*) AS n FROM events").get()).toEqual({ n: 0 });
  });

  it("follow() hands over the backlog then live events, each once, and drops listeners after the terminal event", () => {
    newRun("r");
    for (let i = 0; i < 5; i++) append("r", { event: "WorkflowStarted", input: String(i) });
    const seen: number[] = [];
    const follower = each((e) => seen.push(e.index));
    log.follow("r", 1, follower);
    expect(seen).toEqual([2, 3, 4]);
    append("r", { event: "WorkflowStarted", input: "5" });
    expect(follower.endings).toBe(0);
    append("r", { event: "WorkflowCancelled", reason: "test" });
    expect(seen).toEqual([2, 3, 4, 5, 6]);
    expect(follower.endings).toBe(1);
    expect(log.notifier.watches("r")).toBe(false);
  });

  it("follow() does not tell a follower that stopped on the terminal batch that the run ended (it reads that end again)", async () => {
    newRun("r");
    append("r", { event: "WorkflowStarted", input: "" });
    const seen: number[] = [];
    let endings = 0;
    let stop = (): void => {};
    stop = log.follow("r", 0, {
      events: (batch) => {
        seen.push(...batch.events.map((e) => e.index));
        // Backed up: leaves live delivery on this batch, as a full socket makes RunFeed do.
        stop();
      },
      ended: () => endings++,
      failed: unexpectedHalt,
    });
    append("r", { event: "WorkflowCompleted", content: null, duration_ms: 1 });
    expect(seen).toEqual([1]);
    expect(endings).toBe(0);
  });

  it("follow() from an index the run has not reached yet skips up to it, but always delivers the terminal event", async () => {
    newRun("r");
    append("r", { event: "WorkflowStarted", input: "0" });
    const seen: number[] = [];
    const early = each((e) => seen.push(e.index));
    log.follow("r", 4, early);
    expect(early.endings).toBe(0);
    for (let i = 1; i <= 6; i++) append("r", { event: "WorkflowStarted", input: String(i) });
    expect(seen).toEqual([5, 6]);

    newRun("short");
    append("short", { event: "WorkflowStarted", input: "" });
    const late: number[] = [];
    log.follow("short", 10, each((e) => late.push(e.index)));
    append("short", { event: "WorkflowCompleted", content: null, duration_ms: 1 });
    expect(late).toEqual([1]);
  });

  it("follow() of a run that ended at or before the given index returns null and delivers nothing", async () => {
    newRun("done");
    append("done", { event: "WorkflowStarted", input: "" });
    append("done", { event: "WorkflowCompleted", content: null, duration_ms: 1 });
    const seen: number[] = [];
    const late = each((e) => seen.push(e.index));
    log.follow("done", 1, late);
    expect(seen).toEqual([]);
    expect(late.endings).toBe(1);
  });

  it("commits the events of one event-loop turn together, and nothing is visible or delivered before the commit", async () => {
    newRun("a");
    newRun("b");
    const delivered: string[] = [];
    // One batch per run and commit, so each subscriber gets one write per commit.
    log.notifier.subscribe("a", { ended: () => {}, failed: unexpectedHalt, events: (batch) => delivered.push(batch.events.map((e) => `a${e.index}`).join(" ")) });
    log.notifier.subscribe("b", { ended: () => {}, failed: unexpectedHalt, events: (batch) => delivered.push(batch.events.map((e) => `b${e.index}`).join(" ")) });
    for (let i = 0; i < 3; i++) {
      log.append("a", { event: "WorkflowStarted", input: String(i) });
      log.append("b", { event: "WorkflowStarted", input: String(i) });
    }
    expect(log.pendingCount).toBe(6);
    expect(delivered).toEqual([]);
    expect(reader.prepare("SELECT count(*) AS n FROM events").get()).toEqual({ n: 0 });
    await log.flushed();
    expect(delivered).toEqual(["a0 a1 a2", "b0 b1 b2"]);
    expect(storedIndices(reader, "a")).toEqual([0, 1, 2]);
    expect((await runs.get("b"))?.lastEventIndex).toBe(2);
  });

  it("one bad event in a batch does not sink the others", async () => {
    newRun("good");
    log.append("good", { event: "WorkflowStarted", input: "" });
    log.append("ghost", { event: "WorkflowStarted", input: "" });
    log.append("good", { event: "WorkflowCompleted", content: 1, duration_ms: 1 });
    await log.flushed();
    expect(storedIndices(reader, "good")).toEqual([0, 1]);
    expect(appendErrors).toEqual([expect.objectContaining({ code: "RUN_NOT_FOUND" })]);
  });

  it("commits a new run's row with its first event; until then only follow() knows the run, and delivers it live", async () => {
    log.createRun({ runId: "n", workflowId: "wf", workflowName: "Workflow", sessionId: "s", userId: null, input: "hi", additionalData: { k: 1 } });
    log.append("n", { event: "WorkflowStarted", input: "hi" });
    const seen: number[] = [];
    log.follow("n", -1, each((e) => seen.push(e.index)));
    expect((await runs.get("n"))).toBeUndefined();
    expect(reader.prepare("SELECT count(*) AS n FROM runs").get()).toEqual({ n: 0 });
    log.flushNow();
    expect(seen).toEqual([0]);
    expect((await runs.get("n"))).toMatchObject({ status: "running", lastEventIndex: 0, input: "hi", additionalData: { k: 1 } });
    expect(storedIndices(reader, "n")).toEqual([0]);
  });

  it("after a batch that failed and was retried event by event, indices go on from what was committed", async () => {
    newRun("a");
    log.append("a", { event: "WorkflowStarted", input: "0" });
    log.append("a", { event: "WorkflowStarted", input: "1" });
    log.append("ghost", { event: "WorkflowStarted", input: "" });
    log.append("a", { event: "WorkflowStarted", input: "2" });
    log.flushNow();
    append("a", { event: "WorkflowCompleted", content: null, duration_ms: 1 });
    expect(storedIndices(reader, "a")).toEqual([0, 1, 2, 3]);
    expect((await runs.get("a"))).toMatchObject({ status: "completed", lastEventIndex: 3 });
    expect(appendErrors).toHaveLength(1);
  });

  it("commits at the next append once the oldest queued event has waited 2 ms, without waiting for the turn", async () => {
    newRun("busy");
    log.append("busy", { event: "WorkflowStarted", input: "first" });
    busyWait(3);
    log.append("busy", { event: "WorkflowStarted", input: "second" });
    expect(log.pendingCount).toBe(0);
    expect(storedIndices(reader, "busy")).toEqual([0, 1]);
  });

  it("asks a producer that has run for its slice of the turn to wait, committing what the slice produced", async () => {
    newRun("p");
    log.follow("p", -1, new Taker());
    await new Promise((resolve) => setImmediate(resolve));
    // The slice starts when the producer first asks, however long the loop sat idle before.
    expect(log.yieldTurn("p")).toBeNull();
    log.append("p", { event: "WorkflowStarted", input: "" });
    busyWait(2);
    const wait = log.yieldTurn("p");
    expect(wait).toBeInstanceOf(Promise);
    expect(storedIndices(reader, "p")).toEqual([0]);
    // Every producer waits until the next turn once the slice is over.
    expect(log.yieldTurn("p")).toBeInstanceOf(Promise);
    await wait;
    // A new turn: a fresh slice.
    expect(log.yieldTurn("p")).toBeNull();
  });

  it("lets a producer woken by I/O after an idle spell emit at once, and commits its event within that turn", async () => {
    newRun("paced");
    const seen: number[] = [];
    log.follow("paced", -1, each((event) => seen.push(event.index)));
    for (let i = 0; i < 3; i++) {
      // Idle, as a paced producer sleeping or a model stream waiting for its next chunk.
      await new Promise((resolve) => setTimeout(resolve, 5));
      expect(log.yieldTurn("p")).toBeNull();
      log.append("paced", { event: "WorkflowStarted", input: String(i) });
      await new Promise((resolve) => setImmediate(resolve));
      expect(seen).toEqual(range(i + 1));
    }
  });

  it("while nobody follows any run live, commits every 2 ms rather than every turn", async () => {
    newRun("unwatched");
    const firstAppend = performance.now();
    log.append("unwatched", { event: "WorkflowStarted", input: "" });
    await new Promise((resolve) => setImmediate(resolve));
    log.append("unwatched", { event: "WorkflowStarted", input: "" });
    await new Promise((resolve) => setImmediate(resolve));
    // Two turns later, still one batch waiting for more (unless this busy machine took the 2 ms over those turns).
    if (performance.now() - firstAppend < 2) expect(log.pendingCount).toBe(2);
    // No further append comes: the batch still commits within the bound.
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(log.pendingCount).toBe(0);
    expect(storedIndices(reader, "unwatched")).toEqual([0, 1]);
  });

  it("commits a new run's row at the next turn even while nobody follows: its id is already out", async () => {
    log.createRun({ runId: "fresh", workflowId: "wf", workflowName: "Workflow", sessionId: "s", userId: null, input: "", additionalData: null });
    log.append("fresh", { event: "WorkflowStarted", input: "" });
    await new Promise((resolve) => setImmediate(resolve));
    expect((await runs.get("fresh"))).toMatchObject({ status: "running", lastEventIndex: 0 });
  });

  /** A producer that never awaits I/O, as a generator step yielding in a loop is. */
  async function produce(runId: string, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const wait = log.yieldTurn(runId);
      if (wait) await wait;
      log.append(runId, { event: "WorkflowStarted", input: String(i) });
    }
  }

  it("lets busy producers take turns in streaks, so a batch holds long runs of one run's events", async () => {
    newRun("a");
    newRun("b");
    // Enough that each producer's work spans many slices however fast the machine (3,000 fit in one slice of a warm one).
    await Promise.all([produce("a", 20_000), produce("b", 20_000)]);
    await log.flushed();
    const order = (reader.prepare("SELECT run_id FROM events ORDER BY rowid").all() as { run_id: string }[]).map((row) => row.run_id);
    expect(order).toHaveLength(40_000);
    const switches = order.filter((runId, i) => i > 0 && runId !== order[i - 1]).length;
    // Event by event they would switch about 40,000 times; in streaks, a few hundred at most.
    expect(switches).toBeLessThan(1000);
    // Both make progress all along: neither waits for the other to finish.
    expect(order.indexOf("b")).toBeLessThan(order.lastIndexOf("a"));
    expect(order.indexOf("a")).toBeLessThan(order.lastIndexOf("b"));
    expect(storedIndices(reader, "a")).toEqual(range(20_000));
    expect(storedIndices(reader, "b")).toEqual(range(20_000));
  });

  it("resumes a waiting producer at the next turn even if the one whose streak it is stops asking", async () => {
    newRun("a");
    newRun("b");
    expect(log.yieldTurn("a")).toBeNull();
    const waitB = log.yieldTurn("b");
    expect(waitB).toBeInstanceOf(Promise);
    // "a" now awaits I/O and does not ask again for a long time.
    let resumed = false;
    void waitB?.then(() => (resumed = true));
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(resumed).toBe(true);
  });

  /** Appends to `runId` until the log asks its producer to wait; returns how many it appended. */
  function produceSlice(runId: string): number {
    let produced = 0;
    while (log.yieldTurn(runId) === null && produced < 5000) {
      log.append(runId, { event: "WorkflowStarted", input: "" });
      produced += 1;
    }
    return produced;
  }

  /** A run followed live, once the short slices of a run's first millisecond are past. */
  async function followedRun(runId: string): Promise<void> {
    newRun(runId);
    log.follow(runId, -1, new Taker());
    await new Promise((resolve) => setTimeout(resolve, 5));
  }

  it("while anyone follows live, ends the slice at 300 waiting events and commits them, so delivery never takes long", async () => {
    await followedRun("w");
    const produced = produceSlice("w");
    expect(produced).toBeGreaterThan(32);
    expect(produced).toBeLessThanOrEqual(300);
    expect(log.pendingCount).toBe(0);
    expect(storedIndices(reader, "w")).toEqual(range(produced));
  });

  it("while runs are being started, ends slices at 32 waiting writes, so a burst of starts does not wait behind long commits", async () => {
    await followedRun("streaming");
    const before = produceSlice("streaming");
    expect(before).toBeGreaterThan(32);
    await new Promise((resolve) => setImmediate(resolve));
    // A start arrives: its row waits for the commit with the slice's events.
    log.createRun({ runId: "fresh", workflowId: "wf", workflowName: "Workflow", sessionId: "s", userId: null, input: "", additionalData: null });
    const during = produceSlice("streaming");
    expect(during).toBe(31);
    expect(log.pendingCount).toBe(0);
    expect((await runs.get("fresh"))?.status).toBe("pending");
    // Once no run has started for a while, slices are long again.
    await new Promise((resolve) => setTimeout(resolve, 5));
    const after = produceSlice("streaming");
    expect(after).toBeGreaterThan(32);
    expect(storedIndices(reader, "streaming")).toEqual(range(before + during + after));
  });

  it("tells the followers of a run whose events the database refuses, and still commits the other runs' events", async () => {
    newRun("doomed");
    newRun("fine");
    // A real refusal from SQLite, as a full disk or an I/O error would give.
    db.sqlite.exec(
      `CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.run_id = 'doomed' AND NEW.event_index >= 1
       BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END`,
    );
    const seen: number[] = [];
    const failures: FlowdError[] = [];
    log.follow("doomed", -1, new Taker((event) => seen.push(event.index), (error) => failures.push(error)));
    log.append("doomed", { event: "WorkflowStarted", input: "" });
    log.flushNow();
    log.append("doomed", { event: "WorkflowStarted", input: "" });
    log.append("fine", { event: "WorkflowStarted", input: "" });
    log.append("doomed", { event: "WorkflowStarted", input: "" });
    log.flushNow();
    expect(seen).toEqual([0]);
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ code: "STORAGE_FAILED" });
    expect(failures[0]?.message).toContain("disk I/O error (simulated)");
    expect(failures[0]?.message).toContain("resumes");
    // Reported once per run, not once per refused write.
    expect(appendErrors).toHaveLength(1);
    expect(storedIndices(reader, "doomed")).toEqual([0]);
    expect(storedIndices(reader, "fine")).toEqual([0]);
    expect(log.notifier.watches("doomed")).toBe(false);
    // Whoever follows the stopped run later is told too, after what was stored.
    const late: number[] = [];
    const lateFailures: FlowdError[] = [];
    const lateFollower = new Taker((event) => late.push(event.index), (error) => lateFailures.push(error));
    log.follow("doomed", -1, lateFollower);
    expect(lateFollower.endings).toBe(0);
    expect(late).toEqual([0]);
    expect(lateFailures).toEqual([failures[0]]);
  });

  it("waits for another connection's write lock (busy_timeout) instead of failing the batch", async () => {
    newRun("patient");
    // Another connection, on another thread, holds the write lock for 200 ms.
    const holder = new Worker(
      `const Database = require(${JSON.stringify(createRequire(import.meta.url).resolve("better-sqlite3"))});
       const { workerData, parentPort } = require("node:worker_threads");
       const other = new Database(workerData);
       other.exec("BEGIN IMMEDIATE");
       parentPort.postMessage("locked");
       setTimeout(() => { other.exec("COMMIT"); other.close(); }, 200);`,
      { eval: true, workerData: db.path },
    );
    await once(holder, "message");
    // The run's row is read before its first write in this batch: the case that once failed at once.
    log.append("patient", { event: "WorkflowStarted", input: "" });
    const started = performance.now();
    log.flushNow();
    expect(performance.now() - started).toBeGreaterThan(100);
    expect(appendErrors).toEqual([]);
    expect(storedIndices(reader, "patient")).toEqual([0]);
    await once(holder, "exit");
  });

  it("fails a whole batch at once when the database is locked, instead of waiting on the lock for each write", async () => {
    newRun("x");
    newRun("y");
    db.sqlite.pragma("busy_timeout = 100");
    const failures: string[] = [];
    log.follow("x", -1, new Taker(undefined, (error) => failures.push(error.code)));
    log.follow("y", -1, new Taker(undefined, (error) => failures.push(error.code)));
    for (let i = 0; i < 50; i++) {
      log.append("x", { event: "WorkflowStarted", input: "" });
      log.append("y", { event: "WorkflowStarted", input: "" });
    }
    // Another process holds the write lock (a sqlite3 shell in a transaction, say).
    const other = new Database(db.path);
    other.exec("BEGIN IMMEDIATE");
    const started = performance.now();
    log.flushNow();
    const waited = performance.now() - started;
    other.exec("ROLLBACK");
    other.close();
    // One wait for the lock, not one per write (100 writes × 100 ms).
    expect(waited).toBeLessThan(2_000);
    expect(failures).toEqual(["STORAGE_FAILED", "STORAGE_FAILED"]);
    expect(appendErrors).toEqual([expect.objectContaining({ code: "SQLITE_BUSY" }), expect.objectContaining({ code: "SQLITE_BUSY" })]);
    expect(storedIndices(reader, "x")).toEqual([]);
  });

  it("tells the followers of a new run whose row the database refuses that nothing of it was stored", async () => {
    db.sqlite.exec(
      `CREATE TRIGGER refuse BEFORE INSERT ON runs WHEN NEW.run_id = 'unborn'
       BEGIN SELECT RAISE(ABORT, 'database or disk is full (simulated)'); END`,
    );
    log.createRun({ runId: "unborn", workflowId: "wf", workflowName: "Workflow", sessionId: "s", userId: null, input: "", additionalData: null });
    log.append("unborn", { event: "WorkflowStarted", input: "" });
    const failures: FlowdError[] = [];
    log.follow("unborn", -1, new Taker(() => expect.fail("no event of it can be delivered"), (error) => failures.push(error)));
    log.flushNow();
    expect(failures).toEqual([expect.objectContaining({ code: "STORAGE_FAILED" })]);
    expect(failures[0]?.message).toContain("could not be created");
    expect(failures[0]?.message).toContain("database or disk is full (simulated)");
    expect((await runs.get("unborn"))).toBeUndefined();
  });

  it("a new run whose additional_data cannot be encoded fails alone: the other runs' events in its batch are stored", async () => {
    newRun("other");
    const failures: FlowdError[] = [];
    log.follow("other", -1, new Taker());
    // Nested deeper than JSON.stringify's stack allows: the edge refuses this, the writer must not depend on it.
    let deep: unknown = {};
    for (let i = 0; i < 100_000; i++) deep = { d: deep };
    log.createRun({ runId: "deep", workflowId: "wf", workflowName: "Workflow", sessionId: "s", userId: null, input: "", additionalData: deep });
    log.append("deep", { event: "WorkflowStarted", input: "" });
    log.follow("deep", -1, new Taker(() => expect.fail("no event of it can be delivered"), (error) => failures.push(error)));
    log.append("other", { event: "WorkflowStarted", input: "" });
    log.append("other", { event: "WorkflowCompleted", content: "done", duration_ms: 1 });
    log.flushNow();
    expect(storedIndices(reader, "other")).toEqual([0, 1]);
    expect((await runs.get("other"))).toMatchObject({ status: "completed" });
    expect((await runs.get("deep"))).toBeUndefined();
    expect(failures).toEqual([expect.objectContaining({ code: "STORAGE_FAILED" })]);
    expect(failures[0]?.message).toContain("additional_data cannot be stored as JSON");
    // The database itself is fine: nothing says otherwise.
    expect(log.storageFault).toBeNull();
  });

  it("an event that cannot be encoded halts its own run only", async () => {
    newRun("bad");
    newRun("fine");
    const failures: string[] = [];
    log.follow("bad", -1, new Taker(undefined, (error) => failures.push(error.code)));
    log.append("bad", { event: "WorkflowStarted", input: "" });
    log.append("bad", { event: "CustomEvent", name: "x", data: { big: 1n }, step_name: "s", step_index: 0, step_path: "0" });
    log.append("fine", { event: "WorkflowStarted", input: "" });
    // What the run appends after the bad event is not stored either: its log ends where it failed.
    log.append("bad", { event: "WorkflowCompleted", content: "done", duration_ms: 1 });
    log.flushNow();
    expect(storedIndices(reader, "fine")).toEqual([0]);
    expect(storedIndices(reader, "bad")).toEqual([0]);
    expect((await runs.get("bad"))).toMatchObject({ status: "running", lastEventIndex: 0 });
    expect(failures).toEqual(["STORAGE_FAILED"]);
  });

  it("reports a database that refuses writes (storageFault) until a commit goes through again", async () => {
    newRun("x");
    db.sqlite.pragma("busy_timeout = 50");
    const other = new Database(db.path);
    other.exec("BEGIN IMMEDIATE");
    log.append("x", { event: "WorkflowStarted", input: "" });
    log.flushNow();
    expect(log.storageFault).toMatchObject({ code: "STORAGE_FAILED" });
    expect(log.storageFault?.message).toContain("database is locked");
    other.exec("ROLLBACK");
    other.close();
    newRun("y");
    expect(log.storageFault).toBeNull();
  });

  it("ends a page once it holds about 512 KB of events, so large events cannot make a page of megabytes", async () => {
    newRun("big");
    const chunk = "x".repeat(200_000);
    for (let i = 0; i < 10; i++) log.append("big", { event: "WorkflowStarted", input: chunk });
    log.flushNow();
    // 200 KB events: the third passes 512 KB and ends the page.
    expect((await log.readPage("big", -1, 1000))?.batch.events.map((e) => e.index)).toEqual([0, 1, 2]);
    expect((await log.readPage("big", 2, 1000))?.batch.events.map((e) => e.index)).toEqual([3, 4, 5]);
    // Small events: the count is what ends it, across the steps the page is read in.
    newRun("small");
    for (let i = 0; i < 2_000; i++) log.append("small", { event: "WorkflowStarted", input: String(i) });
    log.flushNow();
    expect((await log.readPage("small", -1, 1000))?.batch.events.map((e) => e.index)).toEqual(range(1000));
    expect((await log.readPage("small", 1499, 1000))?.batch.events.map((e) => e.index)).toEqual(range(500).map((i) => i + 1500));
  });

  it("stores nothing more of a run whose write failed, in later batches too, and counts only runs that existed as stopped", async () => {
    newRun("existing");
    db.sqlite.pragma("busy_timeout = 50");
    const other = new Database(db.path);
    other.exec("BEGIN IMMEDIATE");
    // A run's row alone in a batch (a slow turn can split it from its first event), and an event of another run.
    log.createRun({ runId: "unborn", workflowId: "wf", workflowName: "Workflow", sessionId: "s", userId: null, input: "", additionalData: null });
    log.flushNow();
    log.append("existing", { event: "WorkflowStarted", input: "" });
    log.flushNow();
    other.exec("ROLLBACK");
    other.close();
    // The database takes writes again: neither run's later writes are stored here.
    log.append("unborn", { event: "WorkflowStarted", input: "" });
    log.append("existing", { event: "WorkflowCompleted", content: null, duration_ms: 1 });
    log.flushNow();
    expect((await runs.get("unborn"))).toBeUndefined();
    expect(storedIndices(reader, "existing")).toEqual([]);
    await expect(log.committed("unborn")).rejects.toThrow("could not be created");
    // Only the run that exists waits for a restart to resume.
    expect(log.runsStoppedByStorage).toBe(1);
  });

  it("reads a catch-up page of at most the given size, or null past the end", async () => {
    newRun("r");
    for (let i = 0; i < 10; i++) log.append("r", { event: "WorkflowStarted", input: String(i) });
    log.flushNow();
    expect((await log.readPage("r", -1, 5))?.batch.events.map((e) => e.index)).toEqual([0, 1, 2, 3, 4]);
    expect((await log.readPage("r", 4, 10))?.batch.events.map((e) => e.index)).toEqual([5, 6, 7, 8, 9]);
    expect((await log.readPage("r", 9, 5))).toBeNull();
  });

  it("stores a checkpoint in the same transaction as its event", () => {
    newRun("r");
    append("r", { event: "StepCompleted", step_name: "s", step_index: 0, step_path: "0", content: "out", duration_ms: 1 }, {
      path: "0",
      stepName: "s",
      output: "out",
    });
    expect(reader.prepare("SELECT step_path, output, event_index, attempt FROM step_checkpoints").all()).toEqual([
      { step_path: "0", output: '"out"', event_index: 0, attempt: 1 },
    ]);
  });
});

describe("reading a run while it is pruned", () => {
  it("a reader behind the prune's front gets RUN_EXPIRED instead of a silent skip; one past it reads on; none ever sees a hole", async () => {
    newRun("p");
    for (let i = 0; i < 1200; i++) log.append("p", { event: "RunContent", step_name: "s", step_index: 0, step_path: "0", content: `c${i}` });
    log.append("p", { event: "WorkflowCompleted", content: "done", duration_ms: 1 });
    log.flushNow();
    const retention = new SqliteRetention(db);
    // The first step of the prune: the run marked, its 500 oldest events gone.
    expect(await retention.pruneStep("p", 500, Date.now())).toEqual({ deleted: 500, done: false });
    await expect(log.readPage("p", 100, 1000)).rejects.toMatchObject({ code: "RUN_EXPIRED" });
    expect(() => [...log.readAfter("p", -1)]).toThrow(/no longer kept/);
    // Past the front: what is still there, from the next index on.
    const page = await log.readPage("p", 700, 1000);
    expect(page?.batch.events[0]?.index).toBe(701);
    // Once all are gone, even a read from past the end says so.
    while (!(await retention.pruneStep("p", 500, Date.now()))!.done);
    await expect(log.readPage("p", 1200, 10)).rejects.toMatchObject({ code: "RUN_EXPIRED" });
    // A run that is not finished is never pruned.
    newRun("q");
    append("q", { event: "WorkflowStarted", input: "x" });
    expect(await retention.pruneStep("q", 500, Date.now())).toBeNull();
    expect(storedIndices(reader, "q")).toEqual([0]);
  });
});

describe("compacting and deleting a run, a small transaction at a time", () => {
  /** Every index of the run accounted for, by an event or a gap notice, and the text its deltas (folded or not) make. */
  async function readWhole(runId: string): Promise<{ covered: number[]; text: string; stored: number }> {
    const covered: number[] = [];
    let text = "";
    let stored = 0;
    for (let after = -1; ; ) {
      const page = await log.readPage(runId, after, 10_000);
      if (!page) break;
      for (const event of page.batch.events) {
        const frame = JSON.parse(event.frame) as { event: string; content?: string; from_index?: number; to_index?: number };
        if (frame.event === "gap") for (let i = frame.from_index!; i <= frame.to_index!; i++) covered.push(i);
        else {
          covered.push(event.index);
          stored++;
          if (frame.event === "RunContent" || frame.event === "RunContentCompacted") text += frame.content;
        }
        after = event.index;
      }
    }
    return { covered, text, stored };
  }

  function streamedRun(runId: string): string {
    newRun(runId);
    let text = "";
    log.append(runId, { event: "StepStarted", step_name: "s", step_index: 0, step_path: "0" });
    for (let i = 0; i < 1000; i++) {
      const content = `a${i} `;
      text += content;
      log.append(runId, { event: "RunContent", step_name: "s", step_index: 0, step_path: "0", agent_run_id: "agent-1", content });
    }
    for (let i = 0; i < 3; i++) {
      text += `s${i}`;
      log.append(runId, { event: "RunContent", step_name: "s", step_index: 0, step_path: "0", content: `s${i}` });
    }
    log.append(runId, { event: "WorkflowCompleted", content: "done", duration_ms: 1 });
    log.flushNow();
    return text;
  }

  it("folds a long stream in windows: after every step the log reads whole, with the same text; the end is what one pass makes", async () => {
    const text = streamedRun("steps");
    streamedRun("whole");
    const retention = new SqliteRetention(db);
    const last = 1004;
    let from = 0;
    let steps = 0;
    for (;;) {
      const step = await retention.compactStep("steps", from, 100, Date.now());
      steps++;
      const now = await readWhole("steps");
      expect(now.covered).toEqual(range(last + 1));
      expect(now.text).toBe(text);
      if (step.next === null) break;
      expect(step.next).toBe(1);
      from = step.next;
    }
    expect(steps).toBeGreaterThan(10);
    expect((await retention.compactStep("whole", 0, 1_000_000, Date.now())).next).toBeNull();
    const rows = (runId: string) =>
      (reader.prepare("SELECT event_index, event, payload FROM events WHERE run_id = ? ORDER BY event_index").all(runId) as { payload: string }[]).map((row) => ({
        ...row,
        payload: row.payload.replace(`"run_id":"${runId}"`, ""),
      }));
    expect(rows("steps")).toEqual(rows("whole"));
    expect(storedIndices(reader, "steps")).toEqual([0, 1, 1001, 1004]);
    expect((await readWhole("steps")).stored).toBe(4);
    expect(reader.prepare("SELECT compacted_at IS NOT NULL AS done FROM runs WHERE run_id = 'steps'").get()).toEqual({ done: 1 });
  });

  it("deletes a finished run in prune steps, its row last; a running one and an unknown one are refused", async () => {
    streamedRun("gone");
    const retention = new SqliteRetention(db);
    await retention.beginDelete("gone", Date.now());
    // Marked: readers are told the events are gone, and a restart would finish the delete.
    expect(await runs.get("gone")).toMatchObject({ prunedAt: expect.any(Number), removing: "run" });
    expect(await retention.unfinishedPrunes(10)).toEqual(["gone"]);
    expect(await retention.pruneStep("gone", 400, Date.now())).toEqual({ deleted: 400, done: false });
    expect(await runs.get("gone")).toBeDefined();
    while (!(await retention.pruneStep("gone", 400, Date.now()))!.done);
    expect(await runs.get("gone")).toBeUndefined();
    expect(storedIndices(reader, "gone")).toEqual([]);
    expect(await retention.unfinishedPrunes(10)).toEqual([]);
    await expect(retention.beginDelete("gone", Date.now())).rejects.toMatchObject({ code: "RUN_NOT_FOUND" });
    newRun("live");
    append("live", { event: "WorkflowStarted", input: "x" });
    await expect(retention.beginDelete("live", Date.now())).rejects.toMatchObject({ code: "RUN_NOT_FINISHED" });
    expect(storedIndices(reader, "live")).toEqual([0]);
  });

  it("a prune that ends clears the run's removal, so it is not looked at again", async () => {
    streamedRun("pruned");
    const retention = new SqliteRetention(db);
    while (!(await retention.pruneStep("pruned", 400, Date.now()))!.done);
    expect(await retention.unfinishedPrunes(10)).toEqual([]);
    expect(await runs.get("pruned")).toMatchObject({ prunedAt: expect.any(Number), removing: null });
    expect(await retention.pruneStep("pruned", 400, Date.now())).toBeNull();
  });
});
