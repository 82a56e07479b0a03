/**
 * A batch of queued writes planned into rows, the same for every database: each event
 * under its run's next index, its frame built once (what subscribers are sent is what is
 * stored), its checkpoint and consumed signal, and each touched run's row changes. The
 * database's writer then stores the plan in one transaction.
 */
import { Errors } from "../errors.ts";
import { requirementKind } from "../protocol/hitl.ts";
import { CommittedEvent, type RunEventBody } from "../protocol/run-events.ts";
import { isFinished, SUSPENDED_STATUSES, type RunStatus } from "../protocol/run-status.ts";
import type { RunRow } from "./schema.ts";

/** What a batch needs of a run's row to append to it (and `follow` to know where it stands). */
export interface RunEnvelopeRow {
  attempt: number;
  workflow_id: string;
  workflow_name: string;
  session_id: string;
  status: RunStatus;
  last_event_index: number;
}

/** A node's completion (or a decision) to store with its event, for resume. */
export interface Checkpoint {
  path: string;
  stepName: string | null;
  output: unknown;
}

/** A start's idempotency key, and a hash of what it asked for (see the idempotency_keys table). */
export interface IdempotentStart {
  key: string;
  requestHash: string;
}

/** What waits for the next commit: a new run's row, or an event. */
export type PendingWrite =
  | { kind: "run"; runId: string; row: RunRow; idempotency: IdempotentStart | undefined }
  | { kind: "event"; runId: string; body: RunEventBody; checkpoint: Checkpoint | undefined; consumesSignal: number | undefined };

/** A run's row as a batch changes it: each column keeps the last value its events set. */
export interface RunUpdate {
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
  /** 1 when an event set (or cleared) what the run waits for. */
  waitSet: 0 | 1;
  waitKind: string | null;
  waitName: string | null;
  waitUntil: number | null;
}

/** A checkpoint row: run, step path, step name, output (JSON), attempt, event index. */
export type CheckpointRow = [runId: string, stepPath: string, stepName: string | null, output: string, attempt: number, eventIndex: number];

/** A new run's row, as planned. */
export interface PlannedRun {
  runId: string;
  row: RunRow;
  /** `additional_data` as JSON, or null. */
  additionalData: string | null;
  idempotency: IdempotentStart | undefined;
}

/** One touched run's share of a batch. */
export interface RunInBatch {
  envelope: RunEnvelopeRow;
  update: RunUpdate;
  /** The frame's closing envelope fields after `event_index`, the same for all of this run's events in the batch. */
  frameTail: string;
  /**
   * The run's event rows, column after column (see EVENT_COLUMNS), inserted together: rows
   * of one run go into the primary key side by side, which databases do far faster than
   * rows of many runs in turn.
   */
  rows: unknown[];
  checkpoints: CheckpointRow[];
  /** Kept signals its events took (deleted with them). */
  consumedSignals: number[];
}

/** The columns of an event row, in order: `run_id`, `event_index`, `event`, `step_path`, `payload`, `created_at`. */
export const EVENT_COLUMNS = 6;

/** A planned batch: new runs' rows, each touched run's share, and the events as committed once stored. */
export interface BatchPlan {
  now: number;
  newRuns: PlannedRun[];
  runs: Map<string, RunInBatch>;
  committed: CommittedEvent[];
}

/**
 * JSON for a column: a value JSON cannot hold (nested deeper than the stack allows, a
 * BigInt) fails its own write as a FlowdError, never the batch it is in.
 */
export function encode(value: unknown, what: string, which: string): string {
  try {
    return JSON.stringify(value);
  } catch (error) {
    // The message is built only here: encoding is on the hot path, failing is not.
    throw Errors.unencodable(`${what}${which}`, error);
  }
}

/** Sets (or, with nulls, clears) what the run waits for. */
function setWait(update: RunUpdate, kind: string | null, name: string | null, until: number | null): void {
  update.waitSet = 1;
  update.waitKind = kind;
  update.waitName = name;
  update.waitUntil = until;
}

/** Applies one event's effect on its run row to the batch's pending update. */
function applyTransition(update: RunUpdate, body: RunEventBody, now: number): void {
  switch (body.event) {
    case "WaitStarted":
      update.status = "waiting";
      setWait(update, body.wait_kind, body.signal_name ?? null, body.wake_at ?? body.timeout_at ?? null);
      return;
    case "WorkflowPaused": {
      update.status = "paused";
      const open = body.step_requirements[body.step_requirements.length - 1];
      setWait(update, open ? requirementKind(open) : "confirmation", body.paused_step_name, body.timeout_at);
      return;
    }
    case "WaitCompleted":
    case "StepContinued":
    case "StepExecutorContinued":
      update.status = "running";
      setWait(update, null, null, null);
      return;
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
      setWait(update, null, null, null);
      update.finishedAt = now;
      update.output = JSON.stringify(body.content ?? null);
      return;
    case "WorkflowError":
      update.status = "error";
      setWait(update, null, null, null);
      update.finishedAt = now;
      update.error = body.error;
      return;
    case "WorkflowCancelled":
      update.status = "cancelled";
      setWait(update, null, null, null);
      update.finishedAt = now;
      update.error = body.reason;
      return;
    default:
      return;
  }
}

/**
 * Plans `batch`: `envelopeOf` gives a run's row as stored (or cached) for runs not created
 * in this batch. Throws, before anything is written, for a write that cannot be stored
 * (an unknown or finished run, a value JSON cannot hold).
 */
export function planBatch(batch: readonly PendingWrite[], envelopeOf: (runId: string) => RunEnvelopeRow | undefined, now: number): BatchPlan {
  const createdAt = Math.floor(now / 1000);
  const runs = new Map<string, RunInBatch>();
  /** Runs inserted by this batch, as inserted: their first events need not read the row back. */
  const created = new Map<string, RunEnvelopeRow>();
  const newRuns: PlannedRun[] = [];
  const committed: CommittedEvent[] = [];
  for (const write of batch) {
    const { runId } = write;
    if (write.kind === "run") {
      const { row } = write;
      const additionalData = row.additionalData === null ? null : encode(row.additionalData, "run's additional_data", "");
      newRuns.push({ runId, row, additionalData, idempotency: write.idempotency });
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
    const { body, checkpoint, consumesSignal } = write;
    let run = runs.get(runId);
    if (!run) {
      const envelope = created.get(runId) ?? envelopeOf(runId);
      if (!envelope) throw Errors.runNotFound(runId);
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
          waitSet: 0,
          waitKind: null,
          waitName: null,
          waitUntil: null,
        },
        frameTail:
          `,"run_id":${JSON.stringify(runId)},"workflow_id":${JSON.stringify(envelope.workflow_id)},` +
          `"workflow_name":${JSON.stringify(envelope.workflow_name)},"session_id":${JSON.stringify(envelope.session_id)},` +
          `"created_at":${createdAt}}`,
        rows: [],
        checkpoints: [],
        consumedSignals: [],
      };
      runs.set(runId, run);
    }
    const { envelope, update } = run;
    if (isFinished(update.status ?? envelope.status)) {
      // A cancel is idempotent: one that raced the run's end (another node's wake, a second request) adds nothing.
      if (body.event === "WorkflowCancelled") {
        // Nor does it touch the run's row (no longer this node's to write, on PostgreSQL).
        if (run.rows.length === 0) runs.delete(runId);
        continue;
      }
      throw Errors.runFinished(runId, update.status ?? envelope.status, "it takes no more events");
    }
    const index = update.index + 1;
    // The body's own fields (`event` first), then the envelope: the body is serialized
    // once and the envelope appended as text, the cheapest way to build the frame.
    const bodyJson = encode(body, "event ", body.event);
    const frame = `${bodyJson.slice(0, -1)},"event_index":${index}${run.frameTail}`;
    const { event } = body;
    const stepPath = "step_path" in body ? body.step_path : null;
    run.rows.push(runId, index, event, stepPath, frame, now);
    if (checkpoint) {
      const output = encode(checkpoint.output ?? null, "output of step ", checkpoint.path);
      run.checkpoints.push([runId, checkpoint.path, checkpoint.stepName, output, update.attempt ?? envelope.attempt, index]);
    }
    // A wait that took a signal from the mailbox: the signal goes with the event that records it.
    if (consumesSignal !== undefined) run.consumedSignals.push(consumesSignal);
    update.index = index;
    applyTransition(update, body, now);
    committed.push(new CommittedEvent(runId, index, event, frame));
  }
  return { now, newRuns, runs, committed };
}

/** After a commit: keeps in `cache` the envelopes of the runs still going (a run that ends or waits leaves it). */
export function rememberEnvelopes(plan: BatchPlan, cache: Map<string, RunEnvelopeRow>): void {
  for (const [runId, { envelope, update }] of plan.runs) {
    const status = update.status ?? envelope.status;
    // A run that waits may wait for days: its envelope is read again when it goes on.
    if (isFinished(status) || SUSPENDED_STATUSES.has(status)) {
      cache.delete(runId);
    } else {
      cache.set(runId, { ...envelope, status, last_event_index: update.index, attempt: update.attempt ?? envelope.attempt });
    }
  }
}
