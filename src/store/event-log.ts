import type { Statement } from "better-sqlite3";
import { FlowdError } from "../errors.ts";
import { CommittedEvent, isTerminalEvent, type RunEventBody, type RunEventName } from "../protocol/run-events.ts";
import { isFinished, type RunStatus } from "../protocol/run-status.ts";
import type { Db } from "./db.ts";
import { Notifier, type EventListener } from "./notifier.ts";

interface RunEnvelopeRow {
  attempt: number;
  workflow_id: string;
  workflow_name: string;
  session_id: string;
  status: RunStatus;
  last_event_index: number;
}

interface EventRow {
  event_index: number;
  event: RunEventName;
  payload: string;
}

/** A node's completion (or a decision) to store with its event, for resume. */
export interface Checkpoint {
  path: string;
  stepName: string | null;
  output: unknown;
}

interface PendingEvent {
  runId: string;
  body: RunEventBody;
  checkpoint: Checkpoint | undefined;
}

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

interface RunInBatch {
  envelope: RunEnvelopeRow;
  update: RunUpdate;
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

/** How long producers may fill a batch before they let the event loop serve sockets. */
const YIELD_AFTER_MS = 2;

/** Largest batch: a producer that outruns the disk cannot make a batch (or its memory) grow without bound. */
export const MAX_BATCH = 2000;

/**
 * The run event log. `append` is the only way events are written. Events appended in
 * the same turn of the event loop are committed together (group commit): one
 * transaction gives each its run's next index, inserts them, updates each run row
 * once; only after it commits are live listeners told (I1, I2). Under load batches
 * grow by themselves; at low load an event waits one turn.
 */
export class EventLog {
  readonly notifier: Notifier;
  private readonly selectEnvelope: Statement<[string], RunEnvelopeRow>;
  private readonly insertEvent: Statement<[string, number, string, string | null, string, number]>;
  private readonly updateRun: Statement<[RunUpdate]>;
  private readonly insertCheckpoint: Statement<[string, string, string | null, string, number, number, number]>;
  private readonly selectAfter: Statement<[string, number], EventRow>;
  private readonly selectPage: Statement<[string, number, number], EventRow>;
  private readonly writeTx: (batch: readonly PendingEvent[]) => CommittedEvent[];
  private pending: PendingEvent[] = [];
  private flushScheduled = false;
  private waiters: (() => void)[] = [];
  private lastFlushAt = performance.now();

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
    this.insertCheckpoint = sqlite.prepare(
      `INSERT INTO step_checkpoints (run_id, step_path, step_name, output, attempt, event_index, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.selectAfter = sqlite.prepare(
      "SELECT event_index, event, payload FROM events WHERE run_id = ? AND event_index > ? ORDER BY event_index",
    );
    this.selectPage = sqlite.prepare(
      "SELECT event_index, event, payload FROM events WHERE run_id = ? AND event_index > ? ORDER BY event_index LIMIT ?",
    );
    this.writeTx = sqlite.transaction((batch: readonly PendingEvent[]) => this.writeBatch(batch));
  }

  /**
   * Queues one event for the next group commit. A checkpoint given with it is stored in
   * the same transaction: an event that says a step completed and the output a resume
   * reuses are never apart. Failures are reported to `onAppendError`, per run.
   */
  append(runId: string, body: RunEventBody, checkpoint?: Checkpoint): void {
    this.pending.push({ runId, body, checkpoint });
    if (this.pending.length >= MAX_BATCH) {
      this.flushNow();
    } else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.flushNow();
      });
    }
  }

  /** Events queued and not yet committed. */
  get pendingCount(): number {
    return this.pending.length;
  }

  /**
   * True when a producer should wait for the next commit: the batch is large, or it has
   * been filling for a couple of milliseconds. Waiting lets the event loop serve sockets, so a
   * run that never awaits I/O cannot starve other clients.
   */
  shouldYield(maxPending: number): boolean {
    const pending = this.pending.length;
    return pending >= maxPending || (pending > 0 && performance.now() - this.lastFlushAt > YIELD_AFTER_MS);
  }

  /** Resolves once every event appended so far is committed (and delivered). */
  flushed(): Promise<void> {
    if (this.pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Commits what is queued now, then hands each event to its run's live listeners. */
  flushNow(): void {
    if (this.pending.length === 0) return;
    const batch = this.pending;
    const waiters = this.waiters;
    this.pending = [];
    this.waiters = [];
    let committed: CommittedEvent[];
    try {
      committed = this.writeTx(batch);
    } catch {
      // One bad event must not sink the others: commit them one by one and report the failures.
      committed = [];
      for (const event of batch) {
        try {
          committed.push(...this.writeTx([event]));
        } catch (error) {
          this.onAppendError(error, event.runId);
        }
      }
    }
    for (const event of committed) this.notifier.publish(event);
    // Measured from the end of the commit, so producers woken by it get a full slice of time.
    this.lastFlushAt = performance.now();
    for (const resolve of waiters) resolve();
  }

  private writeBatch(batch: readonly PendingEvent[]): CommittedEvent[] {
    const now = Date.now();
    const createdAt = Math.floor(now / 1000);
    const runs = new Map<string, RunInBatch>();
    const committed: CommittedEvent[] = [];
    for (const { runId, body, checkpoint } of batch) {
      let run = runs.get(runId);
      if (!run) {
        const envelope = this.selectEnvelope.get(runId);
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
        };
        runs.set(runId, run);
      }
      const { envelope, update } = run;
      if (isFinished(update.status ?? envelope.status)) {
        throw new FlowdError("RUN_FINISHED", `Run ${runId} is already ${update.status ?? envelope.status}; it takes no more events.`);
      }
      const index = update.index + 1;
      // `event` leads, then the envelope, then the body's own fields.
      const { event, ...fields } = body;
      const frame = JSON.stringify({
        event,
        event_index: index,
        run_id: runId,
        workflow_id: envelope.workflow_id,
        workflow_name: envelope.workflow_name,
        session_id: envelope.session_id,
        created_at: createdAt,
        ...fields,
      });
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
    for (const { update } of runs.values()) this.updateRun.run(update);
    return committed;
  }

  /** The run's events after `afterIndex` (-1: from the start), in index order, read lazily. */
  *readAfter(runId: string, afterIndex: number): Generator<CommittedEvent> {
    for (const row of this.selectAfter.iterate(runId, afterIndex)) {
      yield new CommittedEvent(runId, row.event_index, row.event, row.payload);
    }
  }

  /** At most `limit` events after `afterIndex`: one page of a catch-up. */
  readPage(runId: string, afterIndex: number, limit: number): CommittedEvent[] {
    return this.selectPage.all(runId, afterIndex, limit).map((row) => new CommittedEvent(runId, row.event_index, row.event, row.payload));
  }

  /**
   * Delivers every event after `afterIndex` to `listener`, then every later one live,
   * each exactly once and in order (I3). Returns the unsubscribe function, or null when
   * the run has already ended: then everything there is has been delivered.
   *
   * Why there is no gap or duplicate at the handoff: better-sqlite3 is synchronous and
   * all commits run on this one JS thread, so nothing can commit between the range read
   * and the registration below — they happen in one synchronous block. Every committed
   * event up to the read is in the backlog; every later one reaches the listener via
   * publish(), which runs only after its commit. Keep this function free of `await`.
   */
  follow(runId: string, afterIndex: number, listener: EventListener): (() => void) | null {
    for (const event of this.readAfter(runId, afterIndex)) {
      listener(event);
      if (isTerminalEvent(event.event)) return null;
    }
    const run = this.selectEnvelope.get(runId);
    if (!run) throw new FlowdError("RUN_NOT_FOUND", `Run ${runId} not found`);
    // The terminal event was at or before afterIndex: nothing will ever follow.
    if (isFinished(run.status)) return null;
    // A client may name an index the run has not reached yet: skip live events up to it,
    // but never the terminal one, so the client learns that the run ended.
    if (afterIndex <= run.last_event_index) return this.notifier.subscribe(runId, listener);
    return this.notifier.subscribe(runId, (event) => {
      if (event.index > afterIndex || isTerminalEvent(event.event)) listener(event);
    });
  }
}
