import { setImmediate as nextTurn, setTimeout as sleep } from "node:timers/promises";
import type { ExpiredRun, RunRetention } from "./store.ts";

/** Events deleted per transaction: short (a quarter to half a millisecond), so that a commit that comes meanwhile waits little. */
const STEP_EVENTS = 100;
/** Pages of the file given back after every step (SQLite's incremental vacuum): more than a step frees, in a fraction of a millisecond. */
const RECLAIM_PAGES = 64;
/**
 * The share of the event loop pruning takes at most: after a step of d ms, it rests
 * d × (1 − share) / share ms. Less while runs are going (their deliveries keep their
 * latency), more when none is (a prune on request ends sooner).
 */
const SHARE_WHILE_RUNS_GO = 0.1;
const SHARE_IDLE = 0.5;
/** Runs looked up at a time. */
const RUNS_PER_LOOKUP = 100;
/** Streamed deltas a compaction step reads at least; more once the fold it extends is large, so that rewriting it stays a fraction of the work. */
const COMPACT_ROWS = 250;
const FOLD_BYTES_PER_ROW = 32;

/** How long finished runs' events are kept: the server's FLOWD_RETENTION, and workflows' own `retention`. */
export interface RetentionRules {
  defaultMs: number | null;
  byWorkflow: ReadonlyMap<string, number>;
  /** FLOWD_COMPACT_AFTER: fold finished runs' streamed deltas this long after they finished; null never. */
  compactAfterMs: number | null;
}

/** What to prune on request (`POST /runs/prune`, `flowd prune`). */
export interface PruneRequest {
  /** Runs that finished more than this long ago; without it, what the retention rules say. */
  olderThanMs: number | null;
  workflowId: string | null;
  dryRun: boolean;
  /** At most this many runs (the caller asks again for more). */
  limit: number;
}

/**
 * Prunes finished runs past their retention: each run marked pruned in its first step
 * (readers get RUN_EXPIRED from then on), then its events deleted oldest first, a few
 * hundred per transaction, resting between transactions so that pruning takes at most
 * a share of the event loop and commits of running runs go on meanwhile. Runs that are running, paused or waiting are
 * never touched (the store marks only finished ones). A prune a crash interrupted is
 * finished after the restart.
 */
export class Pruner {
  private timer: ReturnType<typeof setInterval> | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly retention: RunRetention,
    private readonly rules: RetentionRules,
    private readonly onError: (error: unknown) => void,
    /** Whether any run is going on this server now. */
    private readonly runsGoing: () => boolean = () => true,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Whether any retention is set (FLOWD_RETENTION, or a workflow's own): what a prune without an age goes by. */
  get hasRules(): boolean {
    return this.rules.defaultMs !== null || this.rules.byWorkflow.size > 0;
  }

  /** Looks for due runs now and then every so often: a quarter of the shortest retention, between 100 ms and a minute. */
  start(): void {
    const shortest = Math.min(this.rules.defaultMs ?? Infinity, this.rules.compactAfterMs ?? Infinity, ...this.rules.byWorkflow.values());
    const interval = Math.min(60_000, Math.max(100, Number.isFinite(shortest) ? shortest / 4 : 60_000));
    this.timer = setInterval(() => void this.tick(), interval);
    this.timer.unref();
    void this.tick();
  }

  /** Stops after the step under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  private tick(): Promise<void> {
    this.running ??= this.pruneDue()
      .catch(this.onError)
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  /** Runs past their retention, by the rules, oldest first. */
  private async due(limit: number, now: number, only: string | null = null): Promise<ExpiredRun[]> {
    const found: ExpiredRun[] = [];
    for (const [workflowId, ms] of this.rules.byWorkflow) {
      if (only !== null && workflowId !== only) continue;
      found.push(...(await this.retention.expired({ finishedBefore: now - ms, workflowId, limit })));
    }
    if (this.rules.defaultMs !== null && !(only !== null && this.rules.byWorkflow.has(only))) {
      const others = only !== null ? { workflowId: only } : { exceptWorkflows: [...this.rules.byWorkflow.keys()] };
      found.push(...(await this.retention.expired({ finishedBefore: now - this.rules.defaultMs, ...others, limit })));
    }
    return found.sort((a, b) => a.finishedAt - b.finishedAt).slice(0, limit);
  }

  private async pruneDue(): Promise<void> {
    // Prunes a crash or a failed step left half done (here or on another node): finished first.
    for (const runId of await this.retention.unfinishedPrunes(RUNS_PER_LOOKUP)) await this.pruneRun(runId);
    for (;;) {
      const runs = await this.due(RUNS_PER_LOOKUP, this.clock());
      for (const run of runs) await this.pruneRun(run.runId);
      if (runs.length < RUNS_PER_LOOKUP || this.stopped) break;
    }
    if (this.rules.compactAfterMs === null) return;
    for (;;) {
      const runs = await this.retention.compactable(this.clock() - this.rules.compactAfterMs, RUNS_PER_LOOKUP);
      for (const runId of runs) {
        if (this.stopped) return;
        await this.compactRun(runId);
      }
      if (runs.length < RUNS_PER_LOOKUP) return;
    }
  }

  /** Folds one run's streamed deltas, a step at a time (unless stopped meanwhile: a later pass starts it again); the events removed. */
  async compactRun(runId: string): Promise<number> {
    let removed = 0;
    let from = 0;
    let maxRows = COMPACT_ROWS;
    while (!this.stopped) {
      const started = performance.now();
      const step = await this.retention.compactStep(runId, from, maxRows, this.clock());
      removed += step.removed;
      if (step.next === null) break;
      from = step.next;
      maxRows = Math.max(COMPACT_ROWS, Math.ceil(step.tailBytes / FOLD_BYTES_PER_ROW));
      await this.rest(started);
    }
    return removed;
  }

  /** Deletes a finished run (RUN_NOT_FOUND, RUN_NOT_FINISHED otherwise) in prune steps, its row last; a delete a stop or crash interrupts is finished after the restart. */
  async deleteRun(runId: string): Promise<void> {
    await this.retention.beginDelete(runId, this.clock());
    await this.pruneRun(runId);
  }

  /** Live runs' commits and deliveries go first: after a step that began at `started`, a rest as long as the share says, at least a turn of the loop. */
  private async rest(started: number): Promise<void> {
    const share = this.runsGoing() ? SHARE_WHILE_RUNS_GO : SHARE_IDLE;
    const rest = ((performance.now() - started) * (1 - share)) / share;
    await (rest >= 1 ? sleep(rest) : nextTurn());
  }

  /** Prunes one run to its end (unless stopped meanwhile); the events deleted. */
  async pruneRun(runId: string): Promise<number> {
    let deleted = 0;
    while (!this.stopped) {
      const started = performance.now();
      const step = await this.retention.pruneStep(runId, STEP_EVENTS, this.clock());
      if (!step) break;
      deleted += step.deleted;
      await this.retention.reclaimSpace(RECLAIM_PAGES);
      if (step.done) break;
      await this.rest(started);
    }
    return deleted;
  }

  /** Prunes (or with dryRun, lists) finished runs as asked: up to `limit`, oldest finished first. */
  async prune(request: PruneRequest): Promise<{ runs: ExpiredRun[]; events: number; more: boolean }> {
    const now = this.clock();
    const runs =
      request.olderThanMs === null
        ? await this.due(request.limit + 1, now, request.workflowId)
        : await this.retention.expired({ finishedBefore: now - request.olderThanMs, ...(request.workflowId ? { workflowId: request.workflowId } : {}), limit: request.limit + 1 });
    const chosen = runs.slice(0, request.limit);
    let events = 0;
    for (const run of chosen) events += request.dryRun ? run.events : await this.pruneRun(run.runId);
    return { runs: chosen, events, more: runs.length > request.limit };
  }
}
