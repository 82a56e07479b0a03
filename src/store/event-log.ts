import type { Statement } from "better-sqlite3";
import { FlowdError } from "../errors.ts";
import { isTerminalEvent, type CommittedEvent, type RunEventBody, type RunEventName } from "../protocol/run-events.ts";
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

/** How an event changes its run row, besides `last_event_index`. */
interface RunTransition {
  status: RunStatus | null;
  started: boolean;
  finished: boolean;
  output: string | null;
  error: string | null;
  /** Set by WorkflowResumed: the new attempt, whether it follows a crash. */
  resumed: { attempt: number; afterCrash: boolean } | null;
}

/** A node's completion (or a decision) to store with its event, for resume. */
export interface Checkpoint {
  path: string;
  stepName: string | null;
  output: unknown;
}

function transitionFor(body: RunEventBody): RunTransition {
  const none: RunTransition = { status: null, started: false, finished: false, output: null, error: null, resumed: null };
  switch (body.event) {
    case "WorkflowResumed":
      return { ...none, status: "running", resumed: { attempt: body.attempt, afterCrash: body.after_crash } };
    case "WorkflowStarted":
      return { ...none, status: "running", started: true };
    case "WorkflowCompleted":
      return { ...none, status: "completed", finished: true, output: JSON.stringify(body.content ?? null) };
    case "WorkflowError":
      return { ...none, status: "error", finished: true, error: body.error };
    case "WorkflowCancelled":
      return { ...none, status: "cancelled", finished: true, error: body.reason };
    default:
      return none;
  }
}

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

/**
 * The run event log. `append` is the only code that writes events: one transaction
 * assigns the run's next index, inserts the event and updates the run row, and only
 * after it commits are live listeners told (I1, I2).
 */
export class EventLog {
  readonly notifier: Notifier;
  private readonly selectEnvelope: Statement<[string], RunEnvelopeRow>;
  private readonly insertEvent: Statement<[string, number, string, string | null, string, number]>;
  private readonly updateRun: Statement<[RunUpdate]>;
  private readonly insertCheckpoint: Statement<[string, string, string | null, string, number, number, number]>;
  private readonly selectAfter: Statement<[string, number], EventRow>;
  private readonly appendTx: (runId: string, body: RunEventBody, checkpoint: Checkpoint | undefined) => CommittedEvent;

  constructor(db: Db, onListenerError: (error: unknown, runId: string) => void) {
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
    this.appendTx = sqlite.transaction((runId: string, body: RunEventBody, checkpoint: Checkpoint | undefined) =>
      this.writeEvent(runId, body, checkpoint),
    );
  }

  /**
   * Appends one event to a run and, once committed, hands it to the run's live listeners.
   * A checkpoint given with it is stored in the same transaction: an event that says a
   * step completed and the output a resume reuses are never apart.
   */
  append(runId: string, body: RunEventBody, checkpoint?: Checkpoint): CommittedEvent {
    const committed = this.appendTx(runId, body, checkpoint);
    this.notifier.publish(committed);
    return committed;
  }

  private writeEvent(runId: string, body: RunEventBody, checkpoint: Checkpoint | undefined): CommittedEvent {
    const run = this.selectEnvelope.get(runId);
    if (!run) throw new FlowdError("RUN_NOT_FOUND", `Run ${runId} not found`);
    if (isFinished(run.status)) {
      throw new FlowdError("RUN_FINISHED", `Run ${runId} is already ${run.status}; it takes no more events.`);
    }
    const index = run.last_event_index + 1;
    const now = Date.now();
    // The frame is serialized once: the same text is stored and sent to every subscriber.
    // `event` leads, then the envelope, then the body's own fields.
    const { event, ...fields } = body;
    const frame = JSON.stringify({
      event,
      event_index: index,
      run_id: runId,
      workflow_id: run.workflow_id,
      workflow_name: run.workflow_name,
      session_id: run.session_id,
      created_at: Math.floor(now / 1000),
      ...fields,
    });
    const stepPath = "step_path" in body ? body.step_path : null;
    this.insertEvent.run(runId, index, body.event, stepPath, frame, now);
    if (checkpoint) {
      const output = JSON.stringify(checkpoint.output ?? null);
      this.insertCheckpoint.run(runId, checkpoint.path, checkpoint.stepName, output, run.attempt, index, now);
    }
    const t = transitionFor(body);
    this.updateRun.run({
      runId,
      index,
      now,
      status: t.status,
      startedAt: t.started ? now : null,
      finishedAt: t.finished ? now : null,
      output: t.output,
      error: t.error,
      attempt: t.resumed?.attempt ?? null,
      crashIncrement: t.resumed?.afterCrash ? 1 : 0,
    });
    return { runId, index, event: body.event, frame };
  }

  /** The run's events after `afterIndex` (-1: from the start), in index order, read lazily. */
  *readAfter(runId: string, afterIndex: number): Generator<CommittedEvent> {
    for (const row of this.selectAfter.iterate(runId, afterIndex)) {
      yield { runId, index: row.event_index, event: row.event, frame: row.payload };
    }
  }

  /**
   * Delivers every event after `afterIndex` to `listener`, then every later one live,
   * each exactly once and in order (I3). Returns the unsubscribe function, or null when
   * the run has already ended: then everything there is has been delivered.
   *
   * Why there is no gap or duplicate at the handoff: better-sqlite3 is synchronous and
   * all appends run on this one JS thread, so nothing can commit between the range read
   * and the registration below — they happen in one synchronous block. Every event up
   * to the read is in the backlog; every later one reaches the listener via publish().
   * Keep this function free of `await`.
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
