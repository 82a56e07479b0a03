import type { Statement } from "better-sqlite3";
import { FlowdError, errorMessage } from "../errors.ts";
import { CommittedEvent, EventBatch, isTerminalEvent, type RunEventBody, type RunEventName } from "../protocol/run-events.ts";
import { isFinished, type RunStatus } from "../protocol/run-status.ts";
import type { Db } from "./db.ts";
import { Notifier, type EventListener, type FailureListener } from "./notifier.ts";
import type { RunRow } from "./schema.ts";

/** What creating a run needs. */
export interface NewRun {
  runId: string;
  workflowId: string;
  workflowName: string;
  sessionId: string;
  userId: string | null;
  input: string;
  additionalData: unknown;
}

interface RunEnvelopeRow {
  attempt: number;
  workflow_id: string;
  workflow_name: string;
  session_id: string;
  status: RunStatus;
  last_event_index: number;
}

/** An event row as `[event_index, event, payload]`: rows as arrays, not objects, read ~25% faster (catch-up reads many). */
type EventRow = [index: number, event: RunEventName, payload: string];

/** A node's completion (or a decision) to store with its event, for resume. */
export interface Checkpoint {
  path: string;
  stepName: string | null;
  output: unknown;
}

/** What waits for the next commit: a new run's row, or an event. */
type PendingWrite =
  | { kind: "run"; runId: string; row: RunRow }
  | { kind: "event"; runId: string; body: RunEventBody; checkpoint: Checkpoint | undefined };

/** A run's row as a batch changes it: each column keeps the last value its events set. */
interface RunUpdate {
  runId: string;
  index: number;
  now: number;
  status: RunStatus | null;
  startedAt: number | null;
  finishedAt: number | null;
  output: string | null;
  error: string | null;
  attempt: number | null;
  crashIncrement: number;
}

/** What a committed batch wrote: its events, and each touched run's state after it. */
interface WrittenBatch {
  committed: CommittedEvent[];
  runs: Map<string, RunInBatch>;
}

interface RunInBatch {
  envelope: RunEnvelopeRow;
  update: RunUpdate;
  /** The frame's closing envelope fields after `event_index`, the same for all of this run's events in the batch. */
  frameTail: string;
}

/** Applies one event's effect on its run row to the batch's pending update. */
function applyTransition(update: RunUpdate, body: RunEventBody, now: number): void {
  switch (body.event) {
    case "WorkflowResumed":
      update.status = "running";
      update.attempt = body.attempt;
      if (body.after_crash) update.crashIncrement += 1;
      return;
    case "WorkflowStarted":
      update.status = "running";
      update.startedAt ??= now;
      return;
    case "WorkflowCompleted":
      update.status = "completed";
      update.finishedAt = now;
      update.output = JSON.stringify(body.content ?? null);
      return;
    case "WorkflowError":
      update.status = "error";
      update.finishedAt = now;
      update.error = body.error;
      return;
    case "WorkflowCancelled":
      update.status = "cancelled";
      update.finishedAt = now;
      update.error = body.reason;
      return;
    default:
      return;
  }
}

/**
 * Whether a batch failed because of one of its writes (a constraint, a run that is not
 * there or has ended), so that the others can still be committed without it.
 */
function failedForOneWrite(error: unknown): boolean {
  if (error instanceof FlowdError) return true;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && (code.startsWith("SQLITE_CONSTRAINT") || code === "SQLITE_TOOBIG" || code === "SQLITE_MISMATCH");
}

/** What a run's followers are told when one of its writes cannot be stored. */
function storageFailure(write: PendingWrite, cause: unknown): FlowdError {
  const reason = errorMessage(cause);
  if (write.kind === "run") {
    return new FlowdError(
      "STORAGE_FAILED",
      `Run ${write.runId} could not be created: the database refused it (${reason}). Nothing of it was stored; ` +
        "start it again once the database accepts writes (the server log has details).",
    );
  }
  return new FlowdError(
    "STORAGE_FAILED",
    `Run ${write.runId} stopped: the database refused its events (${reason}). Everything delivered before this is stored; ` +
      "the run resumes from there when flowd restarts with a writable database. Reconnect then with your last_event_index.",
  );
}

/**
 * Longest an event waits for its commit while this thread is busy elsewhere (a burst of
 * requests in one poll phase, a long producer slice): a later append commits the batch.
 * Also how often the log commits under load while nobody follows any run live.
 */
const MAX_COMMIT_DELAY_MS = 2;

/** How long producers may run in a turn before they let the event loop serve sockets. */
const PRODUCER_SLICE_MS = 1;

/**
 * How long one producer runs before the next waiting one gets the rest of the slice.
 * Producers take turns in streaks rather than event by event: a batch then holds long
 * runs of few runs' events, and its commit touches few places in the events index.
 */
const PRODUCER_QUANTUM_MS = 0.25;

/**
 * While anyone follows a run live, the slice also ends once this many events wait for
 * the commit: committing and delivering them takes a couple of milliseconds, after which
 * the event loop serves sockets again (a burst of starts gets its first events sooner).
 */
const WATCHED_SLICE_EVENTS = 300;

/**
 * While runs are being started (one was created in the last STARTING_WINDOW_MS), a slice
 * ends at this many events instead. A burst of starts then waits behind commits of a few
 * dozen events (~0.1 ms) rather than of WATCHED_SLICE_EVENTS (~1.4 ms with their delivery),
 * so each start's first event leaves sooner; once the burst is over, slices grow back.
 */
const STARTING_SLICE_EVENTS = 32;
const STARTING_WINDOW_MS = 1;

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
 */
export class EventLog {
  readonly notifier: Notifier;
  private readonly selectEnvelope: Statement<[string], RunEnvelopeRow>;
  private readonly insertRun: Statement<[string, string, string, string, string | null, string, string | null, number, number]>;
  private readonly insertEvent: Statement<[string, number, string, string | null, string, number]>;
  private readonly updateRun: Statement<[RunUpdate]>;
  private readonly advanceRun: Statement<[number, number, string]>;
  private readonly insertCheckpoint: Statement<[string, string, string | null, string, number, number, number]>;
  private readonly selectAfter: Statement<[string, number], EventRow>;
  private readonly selectPage: Statement<[string, number, number], EventRow>;
  private readonly writeTx: (batch: readonly PendingWrite[]) => WrittenBatch;
  /**
   * Active runs' envelopes as last committed, so a batch does not read each run's row
   * again. Only commits change what it holds; a run leaves it when it ends.
   */
  private readonly envelopes = new Map<string, RunEnvelopeRow>();
  /**
   * Unfinished runs that no longer progress in this process (their events could not be
   * stored, or nothing here runs them), with what their followers are told.
   */
  private readonly haltedRuns = new Map<string, FlowdError>();
  private pending: PendingWrite[] = [];
  /** Runs whose row is in `pending`: they exist for followers, with nothing committed yet. */
  private pendingRuns = new Set<string>();
  private firstPendingAt = 0;
  private turnScheduled = false;
  /**
   * When producers first asked to go on since the last turn (null: not yet). The slice
   * starts there, not when the turn did: a producer woken by I/O after the loop sat idle
   * (a paced or streaming one) has used none of it, and emits at once.
   */
  private sliceStartedAt: number | null = null;
  /** The slice of this turn is used up: producers wait for the next turn. */
  private sliceOver = false;
  /** A new run is queued: its id has been handed out, so its row commits at the next turn. */
  private runQueued = false;
  /** When the last run was created (performance.now()): slices stay short while runs are being started. */
  private lastRunCreatedAt = -Infinity;
  /** Commits a deferred batch once its oldest write has waited MAX_COMMIT_DELAY_MS, if no append did first. */
  private commitTimer: NodeJS.Timeout | null = null;
  private commitWaiters: (() => void)[] = [];
  /** Producers waiting for the slice, in order; each is resumed alone. */
  private readonly waiting: { producer: string; resume: () => void }[] = [];
  /** The producer whose streak it is (null: the next to ask takes it). */
  private current: string | null = null;
  private quantumStartedAt = 0;

  constructor(
    db: Db,
    private readonly onAppendError: (error: unknown, runId: string) => void,
    onListenerError: (error: unknown, runId: string) => void = onAppendError,
  ) {
    const { sqlite } = db;
    this.notifier = new Notifier(onListenerError);
    this.selectEnvelope = sqlite.prepare(
      "SELECT attempt, workflow_id, workflow_name, session_id, status, last_event_index FROM runs WHERE run_id = ?",
    );
    this.insertRun = sqlite.prepare(
      `INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.insertEvent = sqlite.prepare(
      "INSERT INTO events (run_id, event_index, event, step_path, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    );
    this.updateRun = sqlite.prepare(
      `UPDATE runs SET last_event_index = @index, updated_at = @now, status = coalesce(@status, status),
         started_at = coalesce(started_at, @startedAt), finished_at = coalesce(@finishedAt, finished_at),
         output = coalesce(@output, output), error = coalesce(@error, error),
         attempt = coalesce(@attempt, attempt), crash_resumes = crash_resumes + @crashIncrement,
         paused_at = CASE WHEN @attempt IS NULL THEN paused_at ELSE NULL END
       WHERE run_id = @runId`,
    );
    // Most batches only move a run forward: a statement that touches no indexed column.
    this.advanceRun = sqlite.prepare("UPDATE runs SET last_event_index = ?, updated_at = ? WHERE run_id = ?");
    this.insertCheckpoint = sqlite.prepare(
      `INSERT INTO step_checkpoints (run_id, step_path, step_name, output, attempt, event_index, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.selectAfter = sqlite
      .prepare<[string, number], EventRow>("SELECT event_index, event, payload FROM events WHERE run_id = ? AND event_index > ? ORDER BY event_index")
      .raw(true);
    this.selectPage = sqlite
      .prepare<[string, number, number], EventRow>(
        "SELECT event_index, event, payload FROM events WHERE run_id = ? AND event_index > ? ORDER BY event_index LIMIT ?",
      )
      .raw(true);
    // BEGIN IMMEDIATE: a deferred transaction that reads before it writes (a run's row)
    // gets SQLITE_BUSY at once when another connection holds the write lock, without
    // waiting busy_timeout for it.
    this.writeTx = sqlite.transaction((batch: readonly PendingWrite[]) => this.writeBatch(batch)).immediate;
  }

  /**
   * Queues a new run's row for the next group commit, where its first event usually
   * joins it: starting a run costs no commit of its own. Until then the run is known
   * only to `follow` (nothing of it is committed yet, so it has nothing to catch up on).
   */
  createRun(run: NewRun): RunRow {
    const now = Date.now();
    const additionalData = run.additionalData ?? null;
    // The row as the column defaults make it.
    const row: RunRow = {
      ...run,
      additionalData,
      status: "pending",
      output: null,
      error: null,
      lastEventIndex: -1,
      attempt: 1,
      crashResumes: 0,
      pausedAt: null,
      cancelRequestedAt: null,
      createdAt: now,
      updatedAt: now,
      startedAt: null,
      finishedAt: null,
    };
    this.pendingRuns.add(run.runId);
    this.runQueued = true;
    this.lastRunCreatedAt = performance.now();
    this.enqueue({ kind: "run", runId: run.runId, row });
    return row;
  }

  /**
   * Queues one event for the next group commit. A checkpoint given with it is stored in
   * the same transaction: an event that says a step completed and the output a resume
   * reuses are never apart. Failures are reported to `onAppendError`, once per run.
   */
  append(runId: string, body: RunEventBody, checkpoint?: Checkpoint): void {
    this.enqueue({ kind: "event", runId, body, checkpoint });
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
   * a run live, a new run's id is out, or the oldest write has waited long enough.
   */
  private commitDue(now: number): boolean {
    return this.notifier.watchedRunCount > 0 || this.runQueued || now - this.firstPendingAt >= MAX_COMMIT_DELAY_MS;
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
    this.sliceStartedAt = null;
    this.sliceOver = false;
    this.current = null;
    this.handOver(performance.now());
  };

  /** Resumes the longest-waiting producer, whose streak starts now. */
  private handOver(now: number): void {
    const next = this.waiting.shift();
    if (!next) return;
    this.current = next.producer;
    this.quantumStartedAt = now;
    next.resume();
    // Whoever waits after it gets the next turn at the latest, whatever this one does.
    if (this.waiting.length > 0) this.scheduleTurn();
  }

  /** Events queued and not yet committed. */
  get pendingCount(): number {
    return this.pending.length;
  }

  /**
   * For producers that never await I/O (a generator yielding in a loop), called by
   * `producer` (its run id) before each event: null to go on, or a promise to await first.
   * Producers share a slice of each turn (PRODUCER_SLICE_MS, fewer events while anyone
   * watches), then wait for the next turn, after the event loop has served sockets:
   * without it such a producer would starve every client, and its events would pile up
   * faster than they are sent. Within the slice they take streaks of PRODUCER_QUANTUM_MS
   * each, in the order they came to wait, one at a time.
   */
  yieldTurn(producer: string): Promise<void> | null {
    const now = performance.now();
    if (this.sliceStartedAt === null) {
      this.sliceStartedAt = now;
      // The next turn ends this slice, however the producers go on.
      this.scheduleTurn();
    }
    if (!this.sliceOver && (now - this.sliceStartedAt >= PRODUCER_SLICE_MS || this.sliceFull(now))) {
      // Commit what the slice produced now, so requests served before the next turn (a
      // burst of starts) commit in small batches of their own.
      this.sliceOver = true;
      this.current = null;
      this.commitIfDue();
    }
    if (this.sliceOver) return this.wait(producer);
    if (this.current === null) {
      this.current = producer;
      this.quantumStartedAt = now;
    }
    // Another producer's streak: wait for its end.
    if (this.current !== producer) return this.wait(producer);
    if (now - this.quantumStartedAt < PRODUCER_QUANTUM_MS) return null;
    if (this.waiting.length === 0) {
      // Nobody else waits: a fresh streak.
      this.quantumStartedAt = now;
      return null;
    }
    // The streak is over and others wait: the longest-waiting one gets the rest of the slice.
    const wait = this.wait(producer);
    this.handOver(now);
    return wait;
  }

  /** Whether the slice has produced as many events as someone waiting for a commit should wait behind. */
  private sliceFull(now: number): boolean {
    const limit = now - this.lastRunCreatedAt < STARTING_WINDOW_MS ? STARTING_SLICE_EVENTS : WATCHED_SLICE_EVENTS;
    return this.pending.length >= limit && this.commitDue(now);
  }

  private wait(producer: string): Promise<void> {
    this.scheduleTurn();
    return new Promise((resume) => this.waiting.push({ producer, resume }));
  }

  /** Resolves once every event appended so far is committed (and delivered). */
  flushed(): Promise<void> {
    if (this.pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.commitWaiters.push(resolve));
  }

  /** Commits what is queued now, then hands each event to its run's live listeners. */
  flushNow(): void {
    if (this.pending.length === 0) return;
    const batch = this.pending;
    const waiters = this.commitWaiters;
    this.pending = [];
    this.commitWaiters = [];
    this.runQueued = false;
    if (this.commitTimer) {
      clearTimeout(this.commitTimer);
      this.commitTimer = null;
    }
    const committed: CommittedEvent[] = [];
    /** Runs with a write that failed for good: the first cause, and what their followers are told. */
    const failed = new Map<string, { cause: unknown; error: FlowdError }>();
    const fail = (write: PendingWrite, cause: unknown): void => {
      if (!failed.has(write.runId)) failed.set(write.runId, { cause, error: storageFailure(write, cause) });
    };
    try {
      this.remember(this.writeTx(batch), committed);
    } catch (batchError) {
      if (failedForOneWrite(batchError)) {
        // One bad write must not sink the others: commit them one by one.
        for (const write of batch) {
          try {
            this.remember(this.writeTx([write]), committed);
          } catch (error) {
            fail(write, error);
          }
        }
      } else {
        // The database itself refused (locked, full, I/O): each write alone would wait on the same lock or disk again.
        for (const write of batch) fail(write, batchError);
      }
    }
    for (const [runId, { cause }] of failed) this.onAppendError(cause, runId);
    // Committed (or failed for good): from here on a run's row is found, or it is not.
    if (this.pendingRuns.size > 0) this.pendingRuns = new Set();
    this.publish(committed);
    for (const [runId, { error }] of failed) this.halt(runId, error);
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

  /** Why `runId` gets no more events from this process, if it does not. */
  haltReason(runId: string): FlowdError | undefined {
    return this.haltedRuns.get(runId);
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

  /** After a commit: collects its events and keeps the envelopes of the runs still going. */
  private remember(written: WrittenBatch, committed: CommittedEvent[]): void {
    for (const event of written.committed) committed.push(event);
    for (const [runId, { envelope, update }] of written.runs) {
      const status = update.status ?? envelope.status;
      if (isFinished(status)) {
        this.envelopes.delete(runId);
      } else {
        this.envelopes.set(runId, { ...envelope, status, last_event_index: update.index, attempt: update.attempt ?? envelope.attempt });
      }
    }
  }

  private writeBatch(batch: readonly PendingWrite[]): WrittenBatch {
    const now = Date.now();
    const createdAt = Math.floor(now / 1000);
    const runs = new Map<string, RunInBatch>();
    /** Runs inserted by this batch, as inserted: their first events need not read the row back. */
    const created = new Map<string, RunEnvelopeRow>();
    const committed: CommittedEvent[] = [];
    for (const write of batch) {
      const { runId } = write;
      if (write.kind === "run") {
        const { row } = write;
        const additionalData = row.additionalData === null ? null : JSON.stringify(row.additionalData);
        this.insertRun.run(runId, row.workflowId, row.workflowName, row.sessionId, row.userId, row.input, additionalData, row.createdAt, row.updatedAt);
        created.set(runId, {
          attempt: row.attempt,
          workflow_id: row.workflowId,
          workflow_name: row.workflowName,
          session_id: row.sessionId,
          status: row.status,
          last_event_index: row.lastEventIndex,
        });
        continue;
      }
      const { body, checkpoint } = write;
      let run = runs.get(runId);
      if (!run) {
        const envelope = this.envelopes.get(runId) ?? created.get(runId) ?? this.selectEnvelope.get(runId);
        if (!envelope) throw new FlowdError("RUN_NOT_FOUND", `Run ${runId} not found`);
        run = {
          envelope,
          update: {
            runId,
            index: envelope.last_event_index,
            now,
            status: null,
            startedAt: null,
            finishedAt: null,
            output: null,
            error: null,
            attempt: null,
            crashIncrement: 0,
          },
          frameTail:
            `,"run_id":${JSON.stringify(runId)},"workflow_id":${JSON.stringify(envelope.workflow_id)},` +
            `"workflow_name":${JSON.stringify(envelope.workflow_name)},"session_id":${JSON.stringify(envelope.session_id)},` +
            `"created_at":${createdAt}}`,
        };
        runs.set(runId, run);
      }
      const { envelope, update } = run;
      if (isFinished(update.status ?? envelope.status)) {
        throw new FlowdError("RUN_FINISHED", `Run ${runId} is already ${update.status ?? envelope.status}; it takes no more events.`);
      }
      const index = update.index + 1;
      // The body's own fields (`event` first), then the envelope: the body is serialized
      // once and the envelope appended as text, the cheapest way to build the frame.
      const bodyJson = JSON.stringify(body);
      const frame = `${bodyJson.slice(0, -1)},"event_index":${index}${run.frameTail}`;
      const { event } = body;
      const stepPath = "step_path" in body ? body.step_path : null;
      this.insertEvent.run(runId, index, event, stepPath, frame, now);
      if (checkpoint) {
        const output = JSON.stringify(checkpoint.output ?? null);
        this.insertCheckpoint.run(runId, checkpoint.path, checkpoint.stepName, output, update.attempt ?? envelope.attempt, index, now);
      }
      update.index = index;
      applyTransition(update, body, now);
      committed.push(new CommittedEvent(runId, index, event, frame));
    }
    for (const { update } of runs.values()) {
      if (update.status === null && update.attempt === null) this.advanceRun.run(update.index, update.now, update.runId);
      else this.updateRun.run(update);
    }
    return { committed, runs };
  }

  /** The run's events after `afterIndex` (-1: from the start), in index order, read lazily. */
  *readAfter(runId: string, afterIndex: number): Generator<CommittedEvent> {
    for (const [index, event, payload] of this.selectAfter.iterate(runId, afterIndex)) {
      yield new CommittedEvent(runId, index, event, payload);
    }
  }

  /**
   * At most `limit` events after `afterIndex`: one page of a catch-up, or null if there
   * are none. (Keeping recent full pages for other subscribers at the same place made
   * 50 simultaneous catch-ups of one run 25% faster, but kept even for one turn, pages
   * outlived V8's young generation: a stalled subscriber catching up on 1M events grew
   * the server by 50 MB more.)
   */
  readPage(runId: string, afterIndex: number, limit: number): EventBatch | null {
    // A run whose row is not committed yet has no events to read (a start follows its new run at once).
    if (this.pendingRuns.has(runId)) return null;
    const rows = this.selectPage.all(runId, afterIndex, limit);
    if (rows.length === 0) return null;
    return new EventBatch(rows.map(([index, event, payload]) => new CommittedEvent(runId, index, event, payload)));
  }

  /**
   * Delivers every event after `afterIndex` to `listener`, then every later one live,
   * each exactly once and in order (I3). Returns the unsubscribe function, or null when
   * the run has already ended: then everything there is has been delivered. If the run's
   * events cannot be stored (now or later, in this process), `onFailure` says so instead.
   *
   * Why there is no gap or duplicate at the handoff: better-sqlite3 is synchronous and
   * all commits run on this one JS thread, so nothing can commit between the range read
   * and the registration below — they happen in one synchronous block. Every committed
   * event up to the read is in the backlog; every later one reaches the listener via
   * publish(), which runs only after its commit. Keep this function free of `await`.
   */
  follow(runId: string, afterIndex: number, listener: EventListener, onFailure?: FailureListener): (() => void) | null {
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
          listener(new EventBatch(backlog));
          backlog = [];
        }
      }
      if (backlog.length > 0) listener(new EventBatch(backlog));
      if (ended) return null;
      const run = this.selectEnvelope.get(runId);
      if (!run) throw new FlowdError("RUN_NOT_FOUND", `Run ${runId} not found`);
      // The terminal event was at or before afterIndex: nothing will ever follow.
      if (isFinished(run.status)) return null;
      // Nothing more comes from this process (until a restart): say why.
      const halted = this.haltedRuns.get(runId);
      if (halted) {
        onFailure?.(halted);
        return null;
      }
      lastIndex = run.last_event_index;
    }
    // A client may name an index the run has not reached yet: skip live events up to it,
    // but never the terminal one, so the client learns that the run ended.
    if (afterIndex <= lastIndex) return this.notifier.subscribe(runId, listener, onFailure);
    return this.notifier.subscribe(
      runId,
      (batch) => {
        const rest = batch.filter((event) => event.index > afterIndex || isTerminalEvent(event.event));
        if (rest) listener(rest);
      },
      onFailure,
    );
  }
}
