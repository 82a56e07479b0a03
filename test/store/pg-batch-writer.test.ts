import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PendingWrite } from "../../src/store/batch-plan.ts";
import { BatchWriter } from "../../src/store/batch-writer.ts";
import { openDb, type Db } from "../../src/store/db.ts";
import { migratePostgres } from "../../src/store/pg/migrate.ts";
import { PgBatchWriter } from "../../src/store/pg/pg-batch-writer.ts";
import type { RunRow } from "../../src/store/schema.ts";
import { startPostgres, type TestPostgres } from "../../testkit/postgres.ts";
import { tempDir } from "../helpers/server.ts";

const NOW = 1_800_000_000_123;
const clock = (): number => NOW;

function newRun(runId: string, additionalData: unknown = null): PendingWrite {
  const row: RunRow = {
    runId,
    workflowId: "wf",
    workflowName: "Workflow",
    sessionId: `s-${runId}`,
    userId: null,
    status: "pending",
    input: "hello",
    additionalData,
    output: null,
    error: null,
    lastEventIndex: -1,
    attempt: 1,
    crashResumes: 0,
    pausedAt: null,
    cancelRequestedAt: null,
    waitKind: null,
    waitName: null,
    waitUntil: null,
    createdAt: NOW,
    updatedAt: NOW,
    startedAt: null,
    finishedAt: null,
  };
  return { kind: "run", runId, row, idempotency: runId === "r1" ? { key: "k1", requestHash: "h1" } : undefined };
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
let pool: pg.Pool;
let sqlite: Db;
let temp: ReturnType<typeof tempDir>;

beforeAll(async () => {
  postgres = await startPostgres();
  const url = await postgres.createDatabase("flowd_batch_writer_test");
  await migratePostgres(url);
  pool = new pg.Pool({ connectionString: url, max: 2 });
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
      ["runs", "run_id", ["additional_data", "output"]],
      ["events", "run_id, event_index", []],
      ["step_checkpoints", "run_id, step_path", ["output"]],
      ["idempotency_keys", "workflow_id, key", []],
    ];
    for (const [table, order, json] of tables) {
      const lite = comparable(sqlite.sqlite.prepare(`SELECT * FROM ${table} ORDER BY ${order}`).all() as Record<string, unknown>[], json);
      const post = comparable((await pool.query(`SELECT * FROM ${table} ORDER BY ${order}`)).rows as Record<string, unknown>[], json);
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
