import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PendingWrite } from "../../src/store/batch-plan.ts";
import { BatchWriter } from "../../src/store/batch-writer.ts";
import { openDb, type Db } from "../../src/store/db.ts";
import { migratePostgres } from "../../src/store/pg/migrate.ts";
import { PgBatchWriter, type Fencing } from "../../src/store/pg/pg-batch-writer.ts";
import { RunLeases } from "../../src/store/pg/run-leases.ts";
import { CommitListener, inlineEvents, type CommitNotice } from "../../src/store/pg/commit-listener.ts";
import type { CommittedEvent } from "../../src/protocol/run-events.ts";
import { newRunRow } from "../../src/store/event-log.ts";
import { startPostgres, testPool, type TestPostgres } from "../../testkit/postgres.ts";
import { tempDir } from "../helpers/server.ts";

const NOW = 1_800_000_000_123;
const clock = (): number => NOW;

function newRun(runId: string, additionalData: unknown = null): PendingWrite {
  const fields = { runId, workflowId: "wf", workflowName: "Workflow", sessionId: `s-${runId}`, userId: null, input: "hello", additionalData };
  return { kind: "run", runId, row: newRunRow(fields, NOW), idempotency: runId === "r1" ? { key: "k1", requestHash: "h1" } : undefined };
}

const loc = { step_name: "s", step_index: 0, step_path: "0" };
function event(runId: string, body: Extract<PendingWrite, { kind: "event" }>["body"], checkpoint?: { path: string; stepName: string | null; output: unknown }): PendingWrite {
  return { kind: "event", runId, body, checkpoint, consumesSignal: undefined };
}

/** Three batches: two runs created with their first events; many content events; a wait, a checkpoint, the ends. */
function batches(): PendingWrite[][] {
  const content = Array.from({ length: 700 }, (_, i) => event("r1", { event: "RunContent", ...loc, content: `chunk ${i}` }));
  return [
    [newRun("r1", { n: 1 }), event("r1", { event: "WorkflowStarted", input: "hello" }), newRun("r2"), event("r2", { event: "WorkflowStarted", input: "hello" }), event("r1", { event: "StepStarted", ...loc })],
    [...content, event("r2", { event: "WaitStarted", ...loc, wait_kind: "timer", wait_key: "0~0", wake_at: NOW + 5000 }, { path: "0~0@wait", stepName: null, output: { kind: "timer", wakeAt: NOW + 5000 } })],
    [
      event("r1", { event: "StepCompleted", ...loc, content: { done: true }, duration_ms: 1.5 }, { path: "0", stepName: "s", output: { done: true } }),
      event("r1", { event: "WorkflowCompleted", content: { done: true }, duration_ms: 3 }),
      event("r2", { event: "WaitCompleted", ...loc, wait_kind: "timer", wait_key: "0~0", timed_out: false }, { path: "0~0", stepName: null, output: { timedOut: false } }),
    ],
  ];
}

let postgres: TestPostgres;
let dbUrl: string;
let pool: pg.Pool;
let sqlite: Db;
let temp: ReturnType<typeof tempDir>;

beforeAll(async () => {
  postgres = await startPostgres();
  dbUrl = await postgres.createDatabase("flowd_batch_writer_test");
  await migratePostgres(dbUrl);
  pool = testPool(dbUrl, 2);
  temp = tempDir();
  sqlite = openDb(join(temp.dir, "flowd.db"));
}, 60_000);
afterAll(async () => {
  await pool?.end();
  sqlite?.close();
  temp?.remove();
  await postgres?.stop();
});

/** A table's rows as comparable values: JSON columns parsed, numbers as numbers. */
function comparable(rows: readonly Record<string, unknown>[], json: readonly string[]): Record<string, unknown>[] {
  return rows.map((row) =>
    Object.fromEntries(
      Object.entries(row).map(([key, value]) => {
        if (json.includes(key) && typeof value === "string") return [key, JSON.parse(value) as unknown];
        if (typeof value === "string" && /^\d+$/.test(value) && key.endsWith("_at")) return [key, Number(value)];
        return [key, value];
      }),
    ),
  );
}

describe("group commit on PostgreSQL stores what SQLite stores", () => {
  it("the same batches give the same committed frames and the same rows in every table", async () => {
    const onSqlite = new BatchWriter(sqlite.sqlite, clock);
    const onPostgres = new PgBatchWriter(pool, clock);
    for (const batch of batches()) {
      const fromSqlite = onSqlite.commit(batch);
      const fromPostgres = await onPostgres.commit(batch);
      expect(fromPostgres.map((e) => [e.runId, e.index, e.event, e.frame])).toEqual(fromSqlite.map((e) => [e.runId, e.index, e.event, e.frame]));
    }
    const tables: [string, string, string[]][] = [
      ["runs", "run_id, workflow_id, workflow_name, session_id, user_id, status, input, additional_data, output, error, last_event_index, attempt, crash_resumes, paused_at, cancel_requested_at, wait_kind, wait_name, wait_until, created_at, updated_at, started_at, finished_at", ["additional_data", "output"]],
      ["events", "run_id, event_index", []],
      ["step_checkpoints", "run_id, step_path", ["output"]],
      ["idempotency_keys", "workflow_id, key", []],
    ];
    for (const [table, columns, json] of tables) {
      // The runs' columns both databases have (PostgreSQL adds the leases); the key first, for the order.
      const select = table === "runs" ? `SELECT ${columns} FROM runs ORDER BY run_id` : `SELECT * FROM ${table} ORDER BY ${columns}`;
      const lite = comparable(sqlite.sqlite.prepare(select).all() as Record<string, unknown>[], json);
      const post = comparable((await pool.query(select)).rows as Record<string, unknown>[], json);
      expect(post, table).toEqual(lite);
    }
    const r1 = (await pool.query("SELECT status, last_event_index, finished_at FROM runs WHERE run_id = 'r1'")).rows[0];
    expect(r1).toEqual({ status: "completed", last_event_index: 703, finished_at: String(NOW) });
  });

  it("refuses a batch with an event for a finished run, and writes none of it", async () => {
    const writer = new PgBatchWriter(pool, clock);
    const before = (await pool.query("SELECT count(*)::int AS n FROM events")).rows[0] as { n: number };
    await expect(
      writer.commit([event("r2", { event: "StepStarted", ...loc }), event("r1", { event: "StepStarted", ...loc })]),
    ).rejects.toMatchObject({ code: "RUN_FINISHED" });
    expect((await pool.query("SELECT count(*)::int AS n FROM events")).rows[0]).toEqual(before);
  });
});

describe("appends fenced by run leases (many nodes on one database)", () => {
  it("a node whose lease lapsed and was taken over cannot write into the run; the new owner goes on from the right index", async () => {
    let now = NOW;
    const tick = (): number => now;
    const leasesA = new RunLeases(pool, "node-a", 5000, tick);
    const leasesB = new RunLeases(pool, "node-b", 5000, tick);
    const epochsA = new Map<string, number>();
    const epochsB = new Map<string, number>();
    const fence = (nodeId: string, epochs: Map<string, number>): Fencing => ({ nodeId, leaseMs: 5000, epochOf: (runId) => epochs.get(runId) });
    const writerA = new PgBatchWriter(pool, tick, fence("node-a", epochsA));
    const writerB = new PgBatchWriter(pool, tick, fence("node-b", epochsB));

    // Node A creates the run: it holds it at epoch 1.
    epochsA.set("f1", 1);
    await writerA.commit([newRun("f1"), event("f1", { event: "WorkflowStarted", input: "hello" }), event("f1", { event: "StepStarted", ...loc })]);
    expect(await leasesB.acquire("f1")).toBeNull();
    expect((await leasesA.renew(epochsA)).lost).toEqual([]);

    // Node A stops (SIGSTOP) past its lease: node B takes the run over.
    now += 6000;
    expect(await leasesB.orphans()).toContain("f1");
    const epoch = await leasesB.acquire("f1");
    expect(epoch).toBe(2);
    epochsB.set("f1", epoch!);
    await writerB.commit([event("f1", { event: "WorkflowResumed", attempt: 2, after_crash: true, resume_step_name: "s", resume_step_path: "0", restored_steps: 0, superseded_from_index: 1, superseded_to_index: 1 })]);

    // Node A wakes up and appends: refused, nothing written.
    await expect(writerA.commit([event("f1", { event: "StepCompleted", ...loc, content: "late", duration_ms: 1 })])).rejects.toMatchObject({ code: "LEASE_LOST" });
    // A large batch (its events go by COPY) is refused too, and so is a batch that also holds a run node A still holds: whole.
    epochsA.set("f2", 1);
    await writerA.commit([newRun("f2"), event("f2", { event: "WorkflowStarted", input: "hello" })]);
    const late = Array.from({ length: 300 }, (_, i) => event("f1", { event: "RunContent", ...loc, content: `late ${i}` }));
    await expect(writerA.commit(late)).rejects.toMatchObject({ code: "LEASE_LOST", message: expect.stringContaining("node node-b took it over") });
    await expect(writerA.commit([event("f2", { event: "StepStarted", ...loc }), event("f1", { event: "StepStarted", ...loc })])).rejects.toMatchObject({ code: "LEASE_LOST" });
    const { rows: f2 } = await pool.query<{ last_event_index: number; events: number }>(
      "SELECT last_event_index, (SELECT count(*)::int FROM events WHERE run_id = 'f2') AS events FROM runs WHERE run_id = 'f2'",
    );
    expect(f2).toEqual([{ last_event_index: 0, events: 1 }]);
    epochsA.delete("f2");
    expect((await leasesA.renew(epochsA)).lost).toEqual(["f1"]);
    await writerB.commit([event("f1", { event: "StepStarted", ...loc }), event("f1", { event: "WorkflowCompleted", content: "done", duration_ms: 9 })]);
    const { rows } = await pool.query<{ event_index: number; event: string }>("SELECT event_index, event FROM events WHERE run_id = 'f1' ORDER BY event_index");
    expect(rows).toEqual([
      { event_index: 0, event: "WorkflowStarted" },
      { event_index: 1, event: "StepStarted" },
      { event_index: 2, event: "WorkflowResumed" },
      { event_index: 3, event: "StepStarted" },
      { event_index: 4, event: "WorkflowCompleted" },
    ]);
    // A finished run is nobody's to take.
    now += 60_000;
    expect(await leasesA.acquire("f1")).toBeNull();
  });
});

describe("taking over an orphaned run", () => {
  it("of five nodes racing to take the same lapsed run, exactly one gets it", async () => {
    let now = NOW;
    const tick = (): number => now;
    const owner = new PgBatchWriter(pool, tick, { nodeId: "node-0", leaseMs: 1000, epochOf: () => 1 });
    await owner.commit([newRun("race"), event("race", { event: "WorkflowStarted", input: "hello" })]);
    now += 5000;
    const nodes = Array.from({ length: 5 }, (_, i) => new RunLeases(pool, `node-${i + 1}`, 1000, tick));
    const taken = await Promise.all(nodes.map((leases) => leases.acquire("race")));
    expect(taken.filter((epoch) => epoch !== null)).toEqual([2]);
    const { rows } = await pool.query<{ owner_node: string; lease_epoch: number }>("SELECT owner_node, lease_epoch FROM runs WHERE run_id = 'race'");
    expect(rows[0]?.lease_epoch).toBe(2);
    expect(nodes.map((leases) => leases.nodeId)[taken.findIndex((epoch) => epoch !== null)]).toBe(rows[0]?.owner_node);
  });
});

describe("commits announced to every node (LISTEN/NOTIFY)", () => {
  it("a node hears another node's commit, per run with its last index and its events when they are small, and nothing of a batch that failed", async () => {
    const heard: CommitNotice[] = [];
    const listener = new CommitListener(dbUrl, (notice) => heard.push(notice));
    await listener.start();
    try {
      const writer = new PgBatchWriter(pool, clock);
      const first = await writer.commit([newRun("n1"), event("n1", { event: "WorkflowStarted", input: "hello" }), newRun("n2"), event("n2", { event: "WorkflowStarted", input: "hello" }), event("n1", { event: "StepStarted", ...loc })]);
      await expect(writer.commit([event("n1", { event: "StepStarted", ...loc }), event("no-such-run", { event: "StepStarted", ...loc })])).rejects.toMatchObject({ code: "RUN_NOT_FOUND" });
      const second = await writer.commit([event("n2", { event: "StepStarted", ...loc })]);
      // Too large to come along (a notice holds at most 8000 bytes): read from the log instead.
      await writer.commit([event("n2", { event: "RunContent", ...loc, content: "✓".repeat(2500) })]);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(heard.map(({ runId, lastIndex }) => ({ runId, lastIndex }))).toEqual([
        { runId: "n1", lastIndex: 1 },
        { runId: "n2", lastIndex: 0 },
        { runId: "n2", lastIndex: 1 },
        { runId: "n2", lastIndex: 2 },
      ]);
      const frames = (events: CommittedEvent[] | null) => events?.map((e) => ({ runId: e.runId, index: e.index, event: e.event, frame: e.frame })) ?? null;
      expect(frames(inlineEvents(heard[0]!))).toEqual(frames(first.filter((e) => e.runId === "n1")));
      expect(frames(inlineEvents(heard[1]!))).toEqual(frames(first.filter((e) => e.runId === "n2")));
      expect(frames(inlineEvents(heard[2]!))).toEqual(frames(second));
      expect(inlineEvents(heard[3]!)).toBeNull();
    } finally {
      await listener.close();
    }
  });
});
