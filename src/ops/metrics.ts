import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { CommittedEvent } from "../protocol/run-events.ts";

/** What the metrics read when scraped. */
export interface MetricSources {
  /** The server's open feeds of runs to subscribers: live ones, and ones reading from the log. */
  feeds: () => Iterable<{ readonly live: boolean }>;
  /** Runs paused (for a person) and waiting (for a timer or signal), in the whole database. */
  suspendedRuns: () => Promise<{ paused: number; waiting: number }>;
  /** Bytes the database takes: the SQLite file and its WAL, or PostgreSQL's database (no WAL figure). */
  storageBytes: () => Promise<{ database: number; wal: number | null }>;
}

const TERMINAL_STATUS: Readonly<Record<string, string>> = { WorkflowCompleted: "completed", WorkflowError: "error", WorkflowCancelled: "cancelled" };

/**
 * flowd's Prometheus metrics (`GET /metrics`), in a registry of the server's own (a
 * process may run several servers, as the tests do). Counters are this process's: on
 * PostgreSQL, sum them over the nodes; the gauges of runs and sizes are the database's.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly runsStarted: Counter<"workflow">;
  private readonly runsFinished: Counter<"workflow" | "status">;
  private readonly eventsAppended: Counter;
  private readonly batchEvents: Histogram;
  private readonly commitSeconds: Histogram;
  private readonly resumes: Counter;
  private readonly storageFailures: Counter;

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.runsStarted = new Counter({ name: "flowd_runs_started_total", help: "Runs started (WorkflowStarted committed), by workflow.", labelNames: ["workflow"], registers });
    this.runsFinished = new Counter({
      name: "flowd_runs_finished_total",
      help: "Runs that ended (their terminal event committed), by workflow and status: completed, error, cancelled.",
      labelNames: ["workflow", "status"],
      registers,
    });
    this.eventsAppended = new Counter({ name: "flowd_events_appended_total", help: "Events committed to the log.", registers });
    this.batchEvents = new Histogram({
      name: "flowd_commit_batch_events",
      help: "Events per commit (a group commit takes every event queued meanwhile).",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
      registers,
    });
    this.commitSeconds = new Histogram({
      name: "flowd_commit_seconds",
      help: "How long a commit of a batch took.",
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.resumes = new Counter({ name: "flowd_run_resumes_total", help: "Runs this process resumed at its start, after a crash or a restart.", registers });
    this.storageFailures = new Counter({ name: "flowd_storage_failures_total", help: "Runs stopped because their events could not be stored.", registers });
    new Gauge({
      name: "flowd_subscribers",
      help: "Subscribers of runs on this server: fed live, or reading from the log (catching up, or backed up).",
      labelNames: ["state"],
      registers,
      collect() {
        let live = 0;
        let reading = 0;
        for (const feed of sources.feeds()) {
          if (feed.live) live++;
          else reading++;
        }
        this.set({ state: "live" }, live);
        this.set({ state: "reading_log" }, reading);
      },
    });
    new Gauge({
      name: "flowd_suspended_runs",
      help: "Runs paused for a person, or waiting for a timer or a signal (the whole database).",
      labelNames: ["status"],
      registers,
      async collect() {
        const counts = await readOrKeep(sources.suspendedRuns);
        if (!counts) return;
        this.set({ status: "paused" }, counts.paused);
        this.set({ status: "waiting" }, counts.waiting);
      },
    });
    new Gauge({
      name: "flowd_storage_bytes",
      help: "Bytes the database takes: the file and, on SQLite, its WAL.",
      labelNames: ["part"],
      registers,
      async collect() {
        const bytes = await readOrKeep(sources.storageBytes);
        if (!bytes) return;
        this.set({ part: "database" }, bytes.database);
        if (bytes.wal !== null) this.set({ part: "wal" }, bytes.wal);
      },
    });
  }

  /** A batch was committed: its events, and how long the commit took. */
  committed(events: readonly CommittedEvent[], seconds: number): void {
    if (events.length === 0) return;
    this.eventsAppended.inc(events.length);
    this.batchEvents.observe(events.length);
    this.commitSeconds.observe(seconds);
    for (const event of events) {
      // Starts and ends are a few in a batch of thousands: only their frames are parsed.
      const status = TERMINAL_STATUS[event.event];
      if (status === undefined && event.event !== "WorkflowStarted") continue;
      const workflow = workflowOf(event);
      if (status === undefined) this.runsStarted.inc({ workflow });
      else this.runsFinished.inc({ workflow, status });
    }
  }

  resumed(runs: number): void {
    if (runs > 0) this.resumes.inc(runs);
  }

  storageFailed(): void {
    this.storageFailures.inc();
  }

  /** The Prometheus text exposition. */
  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** How long a scrape waits for the database's figures before it answers with the last ones. */
const READ_TIMEOUT_MS = 2000;

/**
 * A gauge's reading from the database, or null if it fails or takes too long: the gauge
 * keeps its last value, and the scrape still answers (with the counters that say what failed).
 */
async function readOrKeep<T>(read: () => Promise<T>): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), READ_TIMEOUT_MS);
  });
  try {
    return await Promise.race([read().catch(() => null), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function workflowOf(event: CommittedEvent): string {
  const frame = JSON.parse(event.frame) as { workflow_id?: unknown };
  return typeof frame.workflow_id === "string" ? frame.workflow_id : "unknown";
}
