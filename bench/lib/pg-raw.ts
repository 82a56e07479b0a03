import pg from "pg";
import { percentile } from "./percentile.ts";

const RAW_TABLE = `CREATE TABLE IF NOT EXISTS raw_events (
  run_id text NOT NULL, event_index integer NOT NULL, event text NOT NULL, payload text NOT NULL, created_at bigint NOT NULL,
  PRIMARY KEY (run_id, event_index))`;

/**
 * PostgreSQL's raw batched append on this machine: `events` rows of `frame` spread over
 * `runs` runs, `perTransaction` rows per transaction, each transaction one prepared
 * multi-row INSERT (the limit B1-pg is measured against). Events per second.
 */
export async function rawPgAppend(url: string, events: number, perTransaction: number, frame: string, runs: number): Promise<number> {
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  pool.on("error", () => {});
  try {
    await pool.query(RAW_TABLE);
    await pool.query("TRUNCATE raw_events");
    const client = await pool.connect();
    try {
      const values = Array.from({ length: perTransaction }, (_, i) => `($${i * 5 + 1}, $${i * 5 + 2}, $${i * 5 + 3}, $${i * 5 + 4}, $${i * 5 + 5})`);
      const insert = { name: `raw-append-${perTransaction}`, text: `INSERT INTO raw_events (run_id, event_index, event, payload, created_at) VALUES ${values.join(", ")}` };
      const next = new Array<number>(runs).fill(0);
      const started = performance.now();
      for (let written = 0; written < events; written += perTransaction) {
        const params: unknown[] = [];
        for (let i = 0; i < perTransaction; i++) {
          const run = (written + i) % runs;
          params.push(`run-${run}`, next[run]!++, "RunContent", frame, Date.now());
        }
        await client.query("BEGIN");
        await client.query({ ...insert, values: params });
        await client.query("COMMIT");
      }
      return events / ((performance.now() - started) / 1000);
    } finally {
      client.release();
    }
  } finally {
    await pool.query("DROP TABLE IF EXISTS raw_events").catch(() => {});
    await pool.end();
  }
}

/**
 * The cross-node floor: one connection commits a row and NOTIFY with it at `rate` per
 * second, another LISTENs; latency from before the commit to the notification (ms).
 */
export async function rawPgNotifyLatency(url: string, rate: number, seconds: number): Promise<{ p50: number; p99: number }> {
  const writer = new pg.Client({ connectionString: url });
  const listener = new pg.Client({ connectionString: url });
  await Promise.all([writer.connect(), listener.connect()]);
  try {
    await writer.query(RAW_TABLE);
    const latencies: number[] = [];
    const total = Math.round(rate * seconds);
    const all = new Promise<void>((resolve) => {
      listener.on("notification", (message) => {
        latencies.push(performance.timeOrigin + performance.now() - Number(message.payload));
        if (latencies.length === total) resolve();
      });
    });
    await listener.query("LISTEN raw_bench");
    const started = performance.now();
    for (let i = 0; i < total; i++) {
      const due = started + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const stamp = String(performance.timeOrigin + performance.now());
      await writer.query("BEGIN");
      await writer.query("INSERT INTO raw_events (run_id, event_index, event, payload, created_at) VALUES ('notify', $1, 'RunContent', $2, 0)", [i, stamp]);
      await writer.query("SELECT pg_notify('raw_bench', $1)", [stamp]);
      await writer.query("COMMIT");
    }
    await all;
    return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
  } finally {
    await writer.query("DROP TABLE IF EXISTS raw_events").catch(() => {});
    await Promise.all([writer.end(), listener.end()]);
  }
}
