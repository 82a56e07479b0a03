import type { Database, Statement } from "better-sqlite3";
import { Errors, FlowdError } from "../errors.ts";
import { CommittedEvent, type RunEventBody } from "../protocol/run-events.ts";
import { isFinished, SUSPENDED_STATUSES, type RunStatus } from "../protocol/run-status.ts";
import { requirementKind } from "../protocol/hitl.ts";
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
  /** 1 when an event set (or cleared) what the run waits for. */
  waitSet: 0 | 1;
  waitKind: string | null;
  waitName: string | null;
  waitUntil: number | null;
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
  /**
   * The run's event rows, column after column, inserted together after the loop: rows of
   * one run go into the primary key side by side, which SQLite does far faster than rows
   * of many runs in turn (and only so do many rows to a statement pay).
   */
  rows: unknown[];
}

/** The most event rows one INSERT statement writes (a power of two). */
export const ROWS_PER_INSERT = 32;
const EVENT_COLUMNS = 6;

/**
 * Inserts a run's event rows many to a statement: one statement call costs about as much
 * again as the row it writes (binding, stepping, resetting), so rows go in
 * `ROWS_PER_INSERT` at a time, and what remains as a sum of powers of two.
 */
class EventRowInserter {
  /** `statements[k]` inserts 2^k rows. */
  private readonly statements: Statement<unknown[]>[] = [];

  constructor(sqlite: Database) {
    for (let size = 1; size <= ROWS_PER_INSERT; size *= 2) {
      const values = Array.from({ length: size }, () => "(?, ?, ?, ?, ?, ?)").join(", ");
      this.statements.push(sqlite.prepare(`INSERT INTO events (run_id, event_index, event, step_path, payload, created_at) VALUES ${values}`));
    }
  }

  /** `rows`: the columns of each row in turn (`run_id`, `event_index`, `event`, `step_path`, `payload`, `created_at`). */
  insert(rows: readonly unknown[]): void {
    let from = 0;
    let left = rows.length / EVENT_COLUMNS;
    for (let k = this.statements.length - 1; k >= 0 && left > 0; k--) {
      const size = 1 << k;
      while (left >= size) {
        const to = from + size * EVENT_COLUMNS;
        this.statements[k]!.run(...(from === 0 && to === rows.length ? rows : rows.slice(from, to)));
        from = to;
        left -= size;
      }
    }
  }
}

/**
 * JSON for a column: a value JSON cannot hold (nested deeper than the stack allows, a
 * BigInt) fails its own write as a FlowdError, never the batch it is in.
 */
function encode(value: unknown, what: string, which: string): string {
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
 * Turns a batch of queued writes into rows, in one `BEGIN IMMEDIATE` transaction: new
 * runs' rows, each event under its run's next index with its checkpoint, and each
 * touched run's row updated once. Each event's frame is built here, once, and stored as
 * its payload: what subscribers are sent is what is stored.
 */
export class BatchWriter {
  private readonly selectEnvelope: Statement<[string], RunEnvelopeRow>;
  private readonly insertRun: Statement<[string, string, string, string, string | null, string, string | null, number, number]>;
  private readonly eventRows: EventRowInserter;
  private readonly updateRun: Statement<[RunUpdate]>;
  private readonly advanceRun: Statement<[number, number, string]>;
  private readonly insertCheckpoint: Statement<[string, string, string | null, string, number, number, number]>;
  private readonly insertIdempotencyKey: Statement<[string, string, string, string, number]>;
  private readonly deleteSignal: Statement<[number, string]>;
  private readonly dropSignals: Statement<[string]>;
  private readonly writeTx: (batch: readonly PendingWrite[]) => WrittenBatch;
  /**
   * Active runs' envelopes as last committed, so a batch does not read each run's row
   * again. Only commits change what it holds; a run leaves it when it ends.
   */
  private readonly envelopes = new Map<string, RunEnvelopeRow>();

  constructor(sqlite: Database) {
    this.selectEnvelope = sqlite.prepare(
      "SELECT attempt, workflow_id, workflow_name, session_id, status, last_event_index FROM runs WHERE run_id = ?",
    );
    this.insertRun = sqlite.prepare(
      `INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.eventRows = new EventRowInserter(sqlite);
    this.updateRun = sqlite.prepare(
      `UPDATE runs SET last_event_index = @index, updated_at = @now, status = coalesce(@status, status),
         started_at = coalesce(started_at, @startedAt), finished_at = coalesce(@finishedAt, finished_at),
         output = coalesce(@output, output), error = coalesce(@error, error),
         attempt = coalesce(@attempt, attempt), crash_resumes = crash_resumes + @crashIncrement,
         paused_at = CASE WHEN @attempt IS NULL THEN paused_at ELSE NULL END,
         wait_kind = CASE WHEN @waitSet THEN @waitKind ELSE wait_kind END,
         wait_name = CASE WHEN @waitSet THEN @waitName ELSE wait_name END,
         wait_until = CASE WHEN @waitSet THEN @waitUntil ELSE wait_until END
       WHERE run_id = @runId`,
    );
    // Most batches only move a run forward: a statement that touches no indexed column.
    this.advanceRun = sqlite.prepare("UPDATE runs SET last_event_index = ?, updated_at = ? WHERE run_id = ?");
    this.insertCheckpoint = sqlite.prepare(
      `INSERT INTO step_checkpoints (run_id, step_path, step_name, output, attempt, event_index, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    // An expired key (the only kind a start finds and does not return) is taken over.
    this.insertIdempotencyKey = sqlite.prepare(
      "INSERT OR REPLACE INTO idempotency_keys (workflow_id, key, request_hash, run_id, created_at) VALUES (?, ?, ?, ?, ?)",
    );
    this.deleteSignal = sqlite.prepare("DELETE FROM signals WHERE signal_id = ? AND run_id = ?");
    this.dropSignals = sqlite.prepare("DELETE FROM signals WHERE run_id = ?");
    // BEGIN IMMEDIATE: a deferred transaction that reads before it writes (a run's row)
    // gets SQLITE_BUSY at once when another connection holds the write lock, without
    // waiting busy_timeout for it.
    this.writeTx = sqlite.transaction((batch: readonly PendingWrite[]) => this.write(batch)).immediate;
  }

  /** Writes and commits `batch`, or throws and writes nothing; returns its events as committed. */
  commit(batch: readonly PendingWrite[]): CommittedEvent[] {
    const written = this.writeTx(batch);
    this.remember(written);
    return written.committed;
  }

  /** The run's row as stored (what `follow` needs to know where the run stands), or undefined. */
  storedEnvelope(runId: string): RunEnvelopeRow | undefined {
    return this.selectEnvelope.get(runId);
  }

  /** After a commit: keeps the envelopes of the runs still going. */
  private remember(written: WrittenBatch): void {
    for (const [runId, { envelope, update }] of written.runs) {
      const status = update.status ?? envelope.status;
      // A run that waits may wait for days: its envelope is read again when it goes on.
      if (isFinished(status) || SUSPENDED_STATUSES.has(status)) {
        this.envelopes.delete(runId);
      } else {
        this.envelopes.set(runId, { ...envelope, status, last_event_index: update.index, attempt: update.attempt ?? envelope.attempt });
      }
    }
  }

  /** Inside the transaction: writes every row of the batch, or throws. */
  private write(batch: readonly PendingWrite[]): WrittenBatch {
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
        const additionalData = row.additionalData === null ? null : encode(row.additionalData, "run's additional_data", "");
        this.insertRun.run(runId, row.workflowId, row.workflowName, row.sessionId, row.userId, row.input, additionalData, row.createdAt, row.updatedAt);
        if (write.idempotency) {
          this.insertIdempotencyKey.run(row.workflowId, write.idempotency.key, write.idempotency.requestHash, runId, row.createdAt);
        }
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
        const envelope = this.envelopes.get(runId) ?? created.get(runId) ?? this.selectEnvelope.get(runId);
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
        };
        runs.set(runId, run);
      }
      const { envelope, update } = run;
      if (isFinished(update.status ?? envelope.status)) {
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
        this.insertCheckpoint.run(runId, checkpoint.path, checkpoint.stepName, output, update.attempt ?? envelope.attempt, index, now);
      }
      // A wait that took a signal from the mailbox: the signal goes with the event that records it.
      if (consumesSignal !== undefined) this.deleteSignal.run(consumesSignal, runId);
      update.index = index;
      applyTransition(update, body, now);
      committed.push(new CommittedEvent(runId, index, event, frame));
    }
    for (const { update, rows } of runs.values()) {
      this.eventRows.insert(rows);
      // A finished run waits for nothing more: the signals it kept go with its end.
      if (update.finishedAt !== null) this.dropSignals.run(update.runId);
      if (update.status === null && update.attempt === null) this.advanceRun.run(update.index, update.now, update.runId);
      else this.updateRun.run(update);
    }
    return { committed, runs };
  }
}
