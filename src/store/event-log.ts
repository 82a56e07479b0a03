import type { Statement } from "better-sqlite3";
import { FlowdError } from "../errors.ts";
import { isTerminalEvent, type CommittedEvent, type RunEventBody, type RunEventName } from "../protocol/run-events.ts";
import { isFinished, type RunStatus } from "../protocol/run-status.ts";
import type { Db } from "./db.ts";
import { Notifier, type EventListener } from "./notifier.ts";

interface RunEnvelopeRow {
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
}

function transitionFor(body: RunEventBody): RunTransition {
  const none: RunTransition = { status: null, started: false, finished: false, output: null, error: null };
  switch (body.event) {
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

/**
 * The run event log. `append` is the only code that writes events: one transaction
 * assigns the run's next index, inserts the event and updates the run row, and only
 * after it commits are live listeners told (I1, I2).
 */
export class EventLog {
  readonly notifier: Notifier;
  private readonly selectEnvelope: Statement<[string], RunEnvelopeRow>;
  private readonly insertEvent: Statement<[string, number, string, string | null, string, number]>;
  private readonly updateRun: Statement<
    [number, number, RunStatus | null, number | null, number | null, string | null, string | null, string]
  >;
  private readonly selectAfter: Statement<[string, number], EventRow>;
  private readonly appendTx: (runId: string, body: RunEventBody) => CommittedEvent;

  constructor(db: Db, onListenerError: (error: unknown, runId: string) => void) {
    const { sqlite } = db;
    this.notifier = new Notifier(onListenerError);
    this.selectEnvelope = sqlite.prepare(
      "SELECT workflow_id, workflow_name, session_id, status, last_event_index FROM runs WHERE run_id = ?",
    );
    this.insertEvent = sqlite.prepare(
      "INSERT INTO events (run_id, event_index, event, step_path, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    );
    this.updateRun = sqlite.prepare(
      `UPDATE runs SET last_event_index = ?, updated_at = ?, status = coalesce(?, status),
         started_at = coalesce(started_at, ?), finished_at = coalesce(?, finished_at),
         output = coalesce(?, output), error = coalesce(?, error)
       WHERE run_id = ?`,
    );
    this.selectAfter = sqlite.prepare(
      "SELECT event_index, event, payload FROM events WHERE run_id = ? AND event_index > ? ORDER BY event_index",
    );
    this.appendTx = sqlite.transaction((runId: string, body: RunEventBody) => this.writeEvent(runId, body));
  }

  /** Appends one event to a run and, once committed, hands it to the run's live listeners. */
  append(runId: string, body: RunEventBody): CommittedEvent {
    const committed = this.appendTx(runId, body);
    this.notifier.publish(committed);
    return committed;
  }

  private writeEvent(runId: string, body: RunEventBody): CommittedEvent {
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
    const t = transitionFor(body);
    this.updateRun.run(index, now, t.status, t.started ? now : null, t.finished ? now : null, t.output, t.error, runId);
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
   * each exactly once and in order (I3). Returns the unsubscribe function.
   *
   * Why there is no gap or duplicate at the handoff: better-sqlite3 is synchronous and
   * all appends run on this one JS thread, so nothing can commit between the range read
   * and the registration below — they happen in one synchronous block. Every event up
   * to the read is in the backlog; every later one reaches the listener via publish().
   * Keep this function free of `await`.
   */
  follow(runId: string, afterIndex: number, listener: EventListener): () => void {
    for (const event of this.readAfter(runId, afterIndex)) {
      listener(event);
      if (isTerminalEvent(event.event)) return () => {};
    }
    return this.notifier.subscribe(runId, listener);
  }
}
