import type pg from "pg";
import { errorMessage, Errors, FlowdError } from "../../errors.ts";
import { EventBatch, type CommittedEvent, type RunEventBody } from "../../protocol/run-events.ts";
import { idempotentStartKey, newRunRow } from "../event-log.ts";
import type { Checkpoint, PendingWrite } from "../batch-plan.ts";
import type { LogPage } from "../event-reader.ts";
import type { RunFollower } from "../notifier.ts";
import type { RunRow } from "../schema.ts";
import { observe, type CommitObserver, type NewRun, type RunLog } from "../store.ts";
import type { PgBatchWriter } from "./pg-batch-writer.ts";
import type { PgFollowers } from "./pg-followers.ts";
import { readPgPage } from "./pg-page-read.ts";

/** Events queued after which a producer waits for the commit before it goes on. */
const MAX_PENDING = 4000;
/** How long producers that never await I/O run before they let the event loop serve sockets and commits. */
const PRODUCER_SLICE_MS = 1;
/**
 * Batches committing at once, each on a connection of its own. A run is in at most one
 * of them, so each run's events still commit in order; a run that is not in the batch
 * under way (a run just started) need not wait for it.
 */
const COMMIT_LANES = 2;

/** A write waiting for its batch, numbered in the order it was appended. */
interface Queued {
  write: PendingWrite;
  seq: number;
}

/** The writes of a run that are appended and not all done (committed, or failed for good). */
interface RunProgress {
  /** The number of its latest write. */
  appended: number;
  /** The number of its latest write that is done: its writes are done in order. */
  done: number;
}

/** PostgreSQL's answers that say the database itself refuses (connection lost, shutting down, out of resources). */
function failedForWholeDatabase(error: unknown): boolean {
  if (error instanceof FlowdError) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code !== "string") return true; // a socket error: no SQLSTATE
  // 54000 included: a full NOTIFY queue refuses every commit, whichever run it holds.
  return /^(08|53|54|57|58|XX)/.test(code);
}

/** How long this node remembers an idempotent start after its commit (longer than any read of the key takes). */
const RECENT_START_MS = 60_000;

/**
 * The run event log on PostgreSQL: the same contract as EventLog on SQLite (group commit,
 * one append path, committed before anyone is told), with commits that take a round trip.
 * Up to COMMIT_LANES batches are in flight at a time, never two with the same run; what is
 * appended meanwhile forms the next. Followers read committed ranges (PgFollowers); this
 * node's own commits are handed to them at once, other nodes' arrive by NOTIFY.
 */
export class PgEventLog implements RunLog {
  private pending: Queued[] = [];
  private pendingRuns = new Set<string>();
  /**
   * Idempotent starts of this node not yet committed, and those committed in the last
   * RECENT_START_MS: a repeat whose database read began before the first one committed
   * finds it here (on SQLite the read and the commit cannot interleave).
   */
  private readonly recentStarts = new Map<string, { run: RunRow; requestHash: string; committedAt: number | null }>();
  /** The number of the latest write appended. */
  private appendedSeq = 0;
  private readonly progress = new Map<string, RunProgress>();
  /** Runs in a batch in flight, and the first write number of each such batch. */
  private readonly runsInFlight = new Set<string>();
  private readonly batchesInFlight = new Set<{ firstSeq: number }>();
  /** Checked after each batch: resolved once their condition holds. */
  private waiters: { ready: () => boolean; resolve: () => void }[] = [];
  private scheduled = false;
  private readonly haltedRuns = new Map<string, FlowdError>();
  /** Runs another node took over, with why: this node's writes to them are dropped (its execution is being stopped). */
  private readonly lostRuns = new Map<string, FlowdError>();
  private readonly stoppedByStorage = new Set<string>();
  storageFault: FlowdError | null = null;
  /** The first write number of the batch that reported `storageFault`: only a later batch's success clears it (lanes commit side by side). */
  private storageFaultSeq = 0;
  private sliceStartedAt: number | null = null;

  constructor(
    private readonly pool: pg.Pool,
    private readonly writer: PgBatchWriter,
    readonly followers: PgFollowers,
    private readonly onAppendError: (error: unknown, runId: string) => void,
    private readonly onLost: (runId: string, error: FlowdError) => void,
    /** Told of each commit: the events it stored, and how long it took (metrics). */
    private readonly onCommitted: CommitObserver = () => {},
  ) {}

  createRun(run: NewRun): RunRow {
    const row = newRunRow(run, Date.now());
    this.pendingRuns.add(run.runId);
    if (run.idempotency) {
      this.forgetOldStarts();
      this.recentStarts.set(idempotentStartKey(run.workflowId, run.idempotency.key), { run: row, requestHash: run.idempotency.requestHash, committedAt: null });
    }
    this.enqueue({ kind: "run", runId: run.runId, row, idempotency: run.idempotency });
    return row;
  }

  pendingStart(workflowId: string, key: string): { run: RunRow; requestHash: string } | undefined {
    this.forgetOldStarts();
    return this.recentStarts.get(idempotentStartKey(workflowId, key));
  }

  private forgetOldStarts(): void {
    const before = Date.now() - RECENT_START_MS;
    for (const [key, start] of this.recentStarts) {
      // In insertion order: the first one that is not old ends the scan.
      if (start.committedAt === null || start.committedAt >= before) break;
      this.recentStarts.delete(key);
    }
  }

  append(runId: string, body: RunEventBody, checkpoint?: Checkpoint, consumesSignal?: number): void {
    this.enqueue({ kind: "event", runId, body, checkpoint, consumesSignal });
  }

  /** This node holds the run again (it took it over once more): its writes are accepted again. */
  regained(runId: string): void {
    this.lostRuns.delete(runId);
    // Stopped here by a storage failure: taken again, it is resumed and writes again.
    this.haltedRuns.delete(runId);
    this.stoppedByStorage.delete(runId);
    // Another node may have written it meanwhile.
    this.writer.forget(runId);
  }

  private enqueue(write: PendingWrite): void {
    const seq = ++this.appendedSeq;
    this.pending.push({ write, seq });
    const progress = this.progress.get(write.runId);
    if (progress) progress.appended = seq;
    else this.progress.set(write.runId, { appended: seq, done: seq - 1 });
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.batchesInFlight.size >= COMMIT_LANES) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.startBatches();
    });
  }

  yieldTurn(): Promise<void> | null {
    if (this.pending.length >= MAX_PENDING) return this.flushed();
    const now = performance.now();
    if (this.sliceStartedAt === null) {
      this.sliceStartedAt = now;
      return null;
    }
    if (now - this.sliceStartedAt < PRODUCER_SLICE_MS) return null;
    return new Promise((resolve) =>
      setImmediate(() => {
        this.sliceStartedAt = null;
        resolve();
      }),
    );
  }

  /** Resolves once `ready()` holds, checked now and after each batch. */
  private until(ready: () => boolean): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ ready, resolve }));
  }

  /** Whether every write numbered up to `seq` is done. */
  private doneThrough(seq: number): boolean {
    if ((this.pending[0]?.seq ?? Infinity) <= seq) return false;
    for (const batch of this.batchesInFlight) if (batch.firstSeq <= seq) return false;
    return true;
  }

  flushed(): Promise<void> {
    const seq = this.appendedSeq;
    return this.until(() => this.doneThrough(seq));
  }

  committed(runId: string): Promise<void> {
    return this.committedSince(runId, this.progress.get(runId)?.appended ?? 0);
  }

  async committedSince(runId: string, mark: number): Promise<void> {
    await this.until(() => (this.progress.get(runId)?.done ?? Infinity) >= mark);
    const refused = this.haltedRuns.get(runId) ?? this.lostRuns.get(runId);
    if (refused) throw refused;
  }

  /** The number of the latest write: read right after an append, it names that append (see committedSince). */
  get appendMark(): number {
    return this.appendedSeq;
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  get runsStoppedByStorage(): number {
    return this.stoppedByStorage.size;
  }

  halt(runId: string, reason: FlowdError): void {
    this.haltedRuns.set(runId, reason);
    this.followers.fail(runId, reason);
  }

  endHalted(runId: string, terminal: RunEventBody): boolean {
    if (!this.haltedRuns.delete(runId)) return false;
    this.stoppedByStorage.delete(runId);
    this.append(runId, terminal);
    return true;
  }

  /** Starts batches while a lane is free and writes of runs not in flight are queued. */
  private startBatches(): void {
    while (this.batchesInFlight.size < COMMIT_LANES) {
      const taken: Queued[] = [];
      const rest: Queued[] = [];
      for (const queued of this.pending) (this.runsInFlight.has(queued.write.runId) ? rest : taken).push(queued);
      if (taken.length === 0) return;
      this.pending = rest;
      void this.commitTaken(taken);
    }
  }

  /** Commits one batch, marks its writes done (failed ones too), and starts what waited for its lane or its runs. */
  private async commitTaken(taken: Queued[]): Promise<void> {
    const inFlight = { firstSeq: taken[0]!.seq };
    this.batchesInFlight.add(inFlight);
    const runs = new Set(taken.map((queued) => queued.write.runId));
    for (const runId of runs) this.runsInFlight.add(runId);
    const batch = taken.map((queued) => queued.write).filter((write) => !this.haltedRuns.has(write.runId) && !this.lostRuns.has(write.runId));
    try {
      await this.commitBatch(batch, inFlight.firstSeq);
    } catch (error) {
      // Whatever failed after the commit (a hook), the log goes on and no waiter hangs.
      for (const runId of new Set(batch.map((write) => write.runId))) this.onAppendError(error, runId);
    }
    this.batchesInFlight.delete(inFlight);
    for (const { write, seq } of taken) {
      const progress = this.progress.get(write.runId);
      if (!progress) continue;
      progress.done = seq;
      if (progress.done >= progress.appended) this.progress.delete(write.runId);
    }
    for (const runId of runs) this.runsInFlight.delete(runId);
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) {
      if (waiter.ready()) waiter.resolve();
      else this.waiters.push(waiter);
    }
    this.startBatches();
  }

  private async commitBatch(batch: PendingWrite[], firstSeq: number): Promise<void> {
    if (batch.length === 0) return;
    const failed = new Map<string, unknown>();
    let committed: CommittedEvent[] = [];
    let wholeDatabase = false;
    const started = performance.now();
    try {
      committed = await this.writer.commit(batch);
      if (firstSeq > this.storageFaultSeq) this.storageFault = null;
    } catch (batchError) {
      wholeDatabase = failedForWholeDatabase(batchError);
      if (wholeDatabase) {
        for (const write of batch) if (!failed.has(write.runId)) failed.set(write.runId, batchError);
        this.storageFault = Errors.databaseRefusedCommit(batchError);
        this.storageFaultSeq = Math.max(this.storageFaultSeq, firstSeq);
      } else {
        // One run's bad write (or lost lease) must not sink the others: each run's writes on their own.
        const byRun = new Map<string, PendingWrite[]>();
        for (const write of batch) {
          const writes = byRun.get(write.runId);
          if (writes) writes.push(write);
          else byRun.set(write.runId, [write]);
        }
        for (const [runId, writes] of byRun) {
          try {
            committed.push(...(await this.writer.commit(writes)));
          } catch (error) {
            failed.set(runId, error);
          }
        }
      }
    }
    observe(this.onCommitted, committed, (performance.now() - started) / 1000);
    const now = Date.now();
    for (const write of batch) {
      if (write.kind !== "run") continue;
      this.pendingRuns.delete(write.runId);
      const start = write.idempotency ? this.recentStarts.get(idempotentStartKey(write.row.workflowId, write.idempotency.key)) : undefined;
      if (start) start.committedAt = now;
    }
    this.publish(committed);
    for (const [runId, cause] of failed) {
      if (cause instanceof FlowdError && cause.code === "LEASE_LOST") {
        // Another node executes it now: its followers here go on reading what that node writes.
        this.lostRuns.set(runId, cause);
        this.onLost(runId, cause);
        continue;
      }
      this.onAppendError(cause, runId);
      const createdHere = batch.some((write) => write.kind === "run" && write.runId === runId);
      this.halt(runId, createdHere ? Errors.runNotCreated(runId, errorMessage(cause)) : Errors.runStopped(runId, errorMessage(cause)));
      if (wholeDatabase && !createdHere) this.stoppedByStorage.add(runId);
    }
  }

  /** Hands each run's share of a commit to this node's followers of it. */
  private publish(committed: readonly CommittedEvent[]): void {
    if (committed.length === 0) return;
    const byRun = new Map<string, CommittedEvent[]>();
    for (const event of committed) {
      if (!this.followers.watches(event.runId)) continue;
      const events = byRun.get(event.runId);
      if (events) events.push(event);
      else byRun.set(event.runId, [event]);
    }
    for (const events of byRun.values()) this.followers.committed(new EventBatch(events));
  }

  follow(runId: string, afterIndex: number, follower: RunFollower): () => void {
    const halted = this.haltedRuns.get(runId);
    return this.followers.follow(runId, afterIndex, follower, { created: this.pendingRuns.has(runId), halted });
  }

  async readPage(runId: string, afterIndex: number, limit: number): Promise<LogPage | null> {
    if (this.pendingRuns.has(runId)) return null;
    return readPgPage(this.pool, runId, afterIndex, limit);
  }

}
