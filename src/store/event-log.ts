import { errorMessage, Errors, FlowdError } from "../errors.ts";
import { CommittedEvent, EventBatch, isTerminalEvent, type RunEventBody } from "../protocol/run-events.ts";
import { isFinished } from "../protocol/run-status.ts";
import type { Db } from "./db.ts";
import { Notifier, type RunFollower } from "./notifier.ts";
import { BatchWriter, type Checkpoint, type IdempotentStart, type PendingWrite } from "./batch-writer.ts";
import { EventReader, type LogPage } from "./event-reader.ts";
import { ProducerTurns } from "./producer-turns.ts";
import type { RunRow } from "./schema.ts";
import { observe, type CommitObserver, type NewRun, type RunLog } from "./store.ts";

export type { Checkpoint, IdempotentStart, LogPage, NewRun, RunFollower };

/** A new run's row, as the column defaults make it. */
export function newRunRow(run: NewRun, now: number): RunRow {
  const { idempotency: _idempotency, ...fields } = run;
  return {
    ...fields,
    additionalData: run.additionalData ?? null,
    traceParent: run.traceParent ?? null,
    status: "pending",
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
    createdAt: now,
    updatedAt: now,
    startedAt: null,
    finishedAt: null,
    prunedAt: null,
    removing: null,
    compactedAt: null,
  };
}

/**
 * SQLite's answers that say the database itself refuses writes (locked, full, read-only,
 * broken), so that every write of a batch would fail alike, each after the same wait.
 */
const DATABASE_WIDE_CODES = ["SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_NOMEM", "SQLITE_PROTOCOL"];

/**
 * Whether a batch failed because the database refuses writes, rather than because of
 * one of its writes (a constraint, a run that has ended, a value that cannot be encoded,
 * anything unforeseen): then the others are committed without it, so that no client's
 * write can sink other clients' runs.
 */
function failedForWholeDatabase(error: unknown): boolean {
  if (error instanceof FlowdError) return false;
  // better-sqlite3 throws a TypeError on a closed connection.
  if (error instanceof TypeError && /database connection is not open/.test(error.message)) return true;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && DATABASE_WIDE_CODES.some((wide) => code === wide || code.startsWith(`${wide}_`));
}

/** What a run's followers are told when one of its writes cannot be stored. */
function storageFailure(write: PendingWrite, cause: unknown): FlowdError {
  const reason = errorMessage(cause);
  if (write.kind === "run") {
    return Errors.runNotCreated(write.runId, reason);
  }
  return Errors.runStopped(write.runId, reason);
}

/**
 * Longest an event waits for its commit while this thread is busy elsewhere (a burst of
 * requests in one poll phase, a long producer slice): a later append commits the batch.
 * Also how often the log commits under load while nobody follows any run live.
 */
const MAX_COMMIT_DELAY_MS = 2;

/** The pending-start map's key: a workflow id cannot contain a NUL. */
export const idempotentStartKey = (workflowId: string, key: string): string => `${workflowId}\u0000${key}`;

/** What `follow` returns for a run it has nothing more to deliver of. */
const NOTHING_TO_STOP = (): void => {};

/** Events per batch when `follow` hands over what was committed since a subscriber's last page. */
const FOLLOW_BACKLOG_BATCH = 500;

/** Largest batch: a producer that outruns the disk cannot make a batch (or its memory) grow without bound. */
export const MAX_BATCH = 4000;

/**
 * The run event log. `append` is the only way events are written. Events appended in
 * the same turn of the event loop are committed together (group commit): one
 * transaction gives each its run's next index, inserts them, updates each run row
 * once; only after it commits are live listeners told (I1, I2). Under load batches
 * grow by themselves; at low load an event waits one turn, and never more than about
 * MAX_COMMIT_DELAY_MS while the thread is busy. A new run's row goes into the same
 * group commit as its first event.
 *
 * While nobody follows any run live, no one waits for a commit but the disk: then the log
 * commits every MAX_COMMIT_DELAY_MS rather than every turn. Batches grow about twice as
 * big, and each commit writes the index pages it touches once for twice the events.
 *
 * Its parts: BatchWriter turns a batch into rows; ProducerTurns paces the producers whose
 * slices end with a commit; Notifier hands committed events to live listeners.
 */
export class EventLog implements RunLog {
  readonly notifier: Notifier;
  private readonly writer: BatchWriter;
  /** Reads the log (the same reads the CLI and other read-only users make). */
  readonly reader: EventReader;
  /**
   * Unfinished runs that no longer progress in this process (their events could not be
   * stored, or nothing here runs them), with what their followers are told.
   */
  private readonly haltedRuns = new Map<string, FlowdError>();
  /** Why the last commit failed for the whole database, until one succeeds (`/health` reports it). */
  storageFault: FlowdError | null = null;
  /** Runs stopped here because the database refused every write: only a restart resumes them. */
  private readonly stoppedByStorage = new Set<string>();
  private pending: PendingWrite[] = [];
  /** Runs whose row is in `pending`: they exist for followers, with nothing committed yet. */
  private pendingRuns = new Set<string>();
  /** Idempotent starts whose run's row is in `pending`, by workflow and key (see `pendingStart`). */
  private pendingStarts = new Map<string, { run: RunRow; requestHash: string }>();
  private firstPendingAt = 0;
  private turnScheduled = false;
  /** A new run is queued: its id has been handed out, so its row commits at the next turn. */
  private runQueued = false;
  /** Commits a deferred batch once its oldest write has waited MAX_COMMIT_DELAY_MS, if no append did first. */
  private commitTimer: NodeJS.Timeout | null = null;
  private commitWaiters: (() => void)[] = [];
  /** Batches committed (or failed for good) so far: see `appendMark`. */
  private commits = 0;
  /** Paces producers that never await I/O; their slices end with a commit. */
  private readonly turns = new ProducerTurns({
    pendingCount: () => this.pending.length,
    commitDue: (now) => this.commitDue(now),
    commitIfDue: () => this.commitIfDue(),
    scheduleTurn: () => this.scheduleTurn(),
  });

  constructor(
    db: Db,
    private readonly onAppendError: (error: unknown, runId: string) => void,
    onListenerError: (error: unknown, runId: string) => void = onAppendError,
    /** Told of each commit: the events it stored, and how long it took (metrics). */
    private readonly onCommitted: CommitObserver = () => {},
  ) {
    const { sqlite } = db;
    this.notifier = new Notifier(onListenerError);
    this.writer = new BatchWriter(sqlite);
    this.reader = new EventReader(sqlite);
  }

  /**
   * Queues a new run's row for the next group commit, where its first event usually
   * joins it: starting a run costs no commit of its own. Until then the run is known
   * only to `follow` (nothing of it is committed yet, so it has nothing to catch up on).
   */
  createRun(run: NewRun): RunRow {
    const { idempotency } = run;
    const row = newRunRow(run, Date.now());
    this.pendingRuns.add(run.runId);
    this.runQueued = true;
    this.turns.runCreated(performance.now());
    if (idempotency) this.pendingStarts.set(idempotentStartKey(run.workflowId, idempotency.key), { run: row, requestHash: idempotency.requestHash });
    this.enqueue({ kind: "run", runId: run.runId, row, idempotency });
    return row;
  }

  /**
   * The run a start with this key created in the batch not yet committed (the database
   * knows the others), so that repeats of a start in the same moment get the one run.
   */
  pendingStart(workflowId: string, key: string): { run: RunRow; requestHash: string } | undefined {
    return this.pendingStarts.get(idempotentStartKey(workflowId, key));
  }

  /**
   * Queues one event for the next group commit. A checkpoint given with it is stored in
   * the same transaction: an event that says a step completed and the output a resume
   * reuses are never apart. Failures are reported to `onAppendError`, once per run.
   */
  append(runId: string, body: RunEventBody, checkpoint?: Checkpoint, consumesSignal?: number): void {
    this.enqueue({ kind: "event", runId, body, checkpoint, consumesSignal });
  }

  private enqueue(write: PendingWrite): void {
    const now = performance.now();
    if (this.pending.length === 0) this.firstPendingAt = now;
    this.pending.push(write);
    this.scheduleTurn();
    if (this.pending.length >= MAX_BATCH || now - this.firstPendingAt >= MAX_COMMIT_DELAY_MS) this.flushNow();
  }

  private scheduleTurn(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    setImmediate(this.onTurn);
  }

  /**
   * Whether what is queued should commit now rather than wait for more: someone follows
   * a run live, a new run's id is out, someone waits for the commit (a step's next step,
   * I8), or the oldest write has waited long enough.
   */
  private commitDue(now: number): boolean {
    return (
      this.notifier.watchedRunCount > 0 ||
      this.runQueued ||
      this.commitWaiters.length > 0 ||
      now - this.firstPendingAt >= MAX_COMMIT_DELAY_MS
    );
  }

  /** Commits what is queued if it is due; else makes sure it commits within MAX_COMMIT_DELAY_MS. */
  private commitIfDue(): void {
    if (this.pending.length === 0) return;
    const now = performance.now();
    if (this.commitDue(now)) {
      this.flushNow();
    } else {
      this.commitTimer ??= setTimeout(() => {
        this.commitTimer = null;
        this.flushNow();
      }, Math.ceil(this.firstPendingAt + MAX_COMMIT_DELAY_MS - now));
    }
  }

  /** A turn of the event loop (after its I/O): commit what is queued (if due), then wake the producers. */
  private readonly onTurn = (): void => {
    this.turnScheduled = false;
    this.commitIfDue();
    this.turns.newTurn(performance.now());
  };

  /** Events queued and not yet committed. */
  get pendingCount(): number {
    return this.pending.length;
  }

  /**
   * For producers that never await I/O (a generator yielding in a loop), called by
   * `producer` (its run id) before each event: null to go on, or a promise to await
   * first (see ProducerTurns).
   */
  yieldTurn(producer: string): Promise<void> | null {
    return this.turns.yieldTurn(producer);
  }

  /** Resolves once every event appended so far is committed (and delivered). */
  flushed(): Promise<void> {
    if (this.pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.commitWaiters.push(resolve));
  }

  /** Commits what is queued now, then hands each event to its run's live listeners. */
  flushNow(): void {
    if (this.pending.length === 0) return;
    // A run halted here takes no more writes (until a cancel takes the halt back): what it
    // queued after its failed write is not stored, in this batch or a later one, so its
    // log ends where it failed and its followers keep the reason they were given.
    const batch = this.haltedRuns.size === 0 ? this.pending : this.pending.filter((write) => !this.haltedRuns.has(write.runId));
    const waiters = this.commitWaiters;
    this.pending = [];
    this.commitWaiters = [];
    this.runQueued = false;
    if (this.commitTimer) {
      clearTimeout(this.commitTimer);
      this.commitTimer = null;
    }
    if (batch.length === 0) {
      for (const resolve of waiters) resolve();
      return;
    }
    let committed: CommittedEvent[] = [];
    /** Runs with a write that failed for good: the first cause, and what their followers are told. */
    const failed = new Map<string, { cause: unknown; error: FlowdError }>();
    const fail = (write: PendingWrite, cause: unknown): void => {
      if (!failed.has(write.runId)) failed.set(write.runId, { cause, error: storageFailure(write, cause) });
    };
    let wholeDatabase = false;
    const started = performance.now();
    try {
      committed = this.writer.commit(batch);
      this.storageFault = null;
    } catch (batchError) {
      wholeDatabase = failedForWholeDatabase(batchError);
      if (wholeDatabase) {
        // The database itself refused (locked, full, I/O): each write alone would wait on the same lock or disk again.
        for (const write of batch) fail(write, batchError);
        this.storageFault = Errors.databaseRefusedCommit(batchError);
      } else {
        // One bad write must not sink the others: commit them one by one. A run's writes
        // after its failed one are not stored either: its log ends where it failed.
        for (const write of batch) {
          const earlier = failed.get(write.runId);
          if (earlier) {
            fail(write, earlier.cause);
            continue;
          }
          try {
            committed.push(...this.writer.commit([write]));
            this.storageFault = null;
          } catch (error) {
            fail(write, error);
          }
        }
      }
    }
    this.commits += 1;
    observe(this.onCommitted, committed, (performance.now() - started) / 1000);
    for (const [runId, { cause }] of failed) this.onAppendError(cause, runId);
    // Committed (or failed for good): from here on a run's row is found, or it is not.
    if (this.pendingRuns.size > 0) this.pendingRuns = new Set();
    if (this.pendingStarts.size > 0) this.pendingStarts = new Map();
    this.publish(committed);
    for (const [runId, { error }] of failed) {
      this.halt(runId, error);
      // Stopped by a database that refused everything: a restart on a healthy database resumes it.
      if (wholeDatabase && !this.pendingRunFailed(batch, runId)) this.stoppedByStorage.add(runId);
    }
    for (const resolve of waiters) resolve();
  }

  /**
   * Says that an unfinished run gets no more events from this process (its events cannot
   * be stored, or its workflow is not served here). Its followers, now and later, get
   * everything stored and then `reason`, instead of waiting for ever.
   */
  halt(runId: string, reason: FlowdError): void {
    this.haltedRuns.set(runId, reason);
    this.notifier.fail(runId, reason);
  }

  /** Resolves once everything appended so far is committed; rejects with the reason if `runId` halted here instead. */
  async committed(runId: string): Promise<void> {
    await this.flushed();
    const halted = this.haltedRuns.get(runId);
    if (halted) throw halted;
  }

  /**
   * Like `committed`, for what `runId` appended while `appendMark` was `since`: resolved
   * at once if a commit has happened since (that write was in it), without waiting for
   * the writes queued after it.
   */
  committedSince(runId: string, since: number): Promise<void> {
    if (this.commits === since) return this.committed(runId);
    const halted = this.haltedRuns.get(runId);
    return halted ? Promise.reject(halted) : Promise.resolve();
  }

  /** How many batches have been committed (or failed for good) so far: an append made now goes into the next. */
  get appendMark(): number {
    return this.commits;
  }

  /**
   * Ends a run that halted in this process with `terminal` after all (a cancel): its
   * followers from now on wait for that event instead of being told it halted. False,
   * and nothing appended, if it had not halted.
   */
  endHalted(runId: string, terminal: RunEventBody): boolean {
    if (!this.haltedRuns.delete(runId)) return false;
    this.stoppedByStorage.delete(runId);
    this.append(runId, terminal);
    return true;
  }

  /** How many unfinished runs stopped here because their events could not be stored (a restart resumes them). */
  get runsStoppedByStorage(): number {
    return this.stoppedByStorage.size;
  }

  /** Whether the run's own row was in the batch: a run that was never created stopped nothing. */
  private pendingRunFailed(batch: readonly PendingWrite[], runId: string): boolean {
    return batch.some((write) => write.kind === "run" && write.runId === runId);
  }

  /** Hands each watched run's share of a commit to its listeners, as one batch. */
  private publish(committed: readonly CommittedEvent[]): void {
    const byRun = new Map<string, CommittedEvent[]>();
    for (const event of committed) {
      if (!this.notifier.watches(event.runId)) continue;
      const events = byRun.get(event.runId);
      if (events) events.push(event);
      else byRun.set(event.runId, [event]);
    }
    for (const [runId, events] of byRun) this.notifier.publish(runId, new EventBatch(events));
  }

  /** The run's events after `afterIndex` (-1: from the start), in index order, read lazily. */
  readAfter(runId: string, afterIndex: number): Generator<CommittedEvent> {
    return this.reader.readAfter(runId, afterIndex);
  }

  /** A page of the run's events after `afterIndex` (see EventReader.readPage). */
  async readPage(runId: string, afterIndex: number, limit: number): Promise<LogPage | null> {
    // A run whose row is not committed yet has no events to read (a start follows its new run at once).
    if (this.pendingRuns.has(runId)) return null;
    return this.reader.readPage(runId, afterIndex, limit);
  }

  /**
   * Delivers every event after `afterIndex` to `follower`, then every later one live,
   * each exactly once and in order (I3), and then tells it how the run ended: `ended`
   * after the terminal event, or `failed` if the run halts in this process (see `halt`),
   * now or later. Either may be called before this returns. Returns the function that
   * stops following (harmless once the run has ended).
   *
   * Why there is no gap or duplicate at the handoff: better-sqlite3 is synchronous and
   * all commits run on this one JS thread, so nothing can commit between the range read
   * and the registration below — they happen in one synchronous block. Every committed
   * event up to the read is in the backlog; every later one reaches the follower via
   * publish(), which runs only after its commit. Keep this function free of `await`.
   */
  follow(runId: string, afterIndex: number, follower: RunFollower): () => void {
    let lastIndex = -1;
    // A run created in the batch not yet committed has nothing to read: all its events arrive live.
    if (!this.pendingRuns.has(runId)) {
      // Nothing is stored after a run's terminal event, so if the backlog has it, it is the last.
      let backlog: CommittedEvent[] = [];
      let ended = false;
      for (const event of this.readAfter(runId, afterIndex)) {
        backlog.push(event);
        ended = isTerminalEvent(event.event);
        if (backlog.length === FOLLOW_BACKLOG_BATCH) {
          follower.events(new EventBatch(backlog));
          backlog = [];
        }
      }
      if (backlog.length > 0) follower.events(new EventBatch(backlog));
      if (ended) {
        follower.ended();
        return NOTHING_TO_STOP;
      }
      const run = this.writer.storedEnvelope(runId);
      if (!run) {
        // A run whose creation failed after its id went out: its follower learns why, not "not found".
        const notCreated = this.haltedRuns.get(runId);
        if (!notCreated) throw Errors.runNotFound(runId);
        follower.failed(notCreated);
        return NOTHING_TO_STOP;
      }
      // The terminal event was at or before afterIndex: nothing will ever follow.
      if (isFinished(run.status)) {
        follower.ended();
        return NOTHING_TO_STOP;
      }
      // Nothing more comes from this process (until a restart): say why.
      const halted = this.haltedRuns.get(runId);
      if (halted) {
        follower.failed(halted);
        return NOTHING_TO_STOP;
      }
      lastIndex = run.last_event_index;
    }
    // A client may name an index the run has not reached yet: skip live events up to it,
    // but never the terminal one, so the client learns that the run ended.
    if (afterIndex <= lastIndex) return this.notifier.subscribe(runId, follower);
    return this.notifier.subscribe(runId, {
      events: (batch) => {
        const rest = batch.filter((event) => event.index > afterIndex || isTerminalEvent(event.event));
        if (rest) follower.events(rest);
      },
      ended: () => follower.ended(),
      failed: (error) => follower.failed(error),
    });
  }
}
