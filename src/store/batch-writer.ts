import type { Database, Statement } from "better-sqlite3";
import type { CommittedEvent } from "../protocol/run-events.ts";
import {
  EVENT_COLUMNS,
  planBatch,
  rememberEnvelopes,
  type BatchPlan,
  type PendingWrite,
  type RunEnvelopeRow,
  type RunUpdate,
} from "./batch-plan.ts";

export type { Checkpoint, IdempotentStart, PendingWrite, RunEnvelopeRow } from "./batch-plan.ts";

/** The most event rows one INSERT statement writes (a power of two). */
export const ROWS_PER_INSERT = 32;

/**
 * Inserts a run's event rows many to a statement: one statement call costs about as much
 * again as the row it writes (binding, stepping, resetting), so rows go in
 * `ROWS_PER_INSERT` at a time, and what remains as a sum of powers of two.
 */
class EventRowInserter {
  /** `statements[k]` inserts 2^k rows. */
  private readonly statements: Statement<unknown[]>[] = [];

  constructor(
    sqlite: Database,
    private readonly clock: () => number = Date.now,
  ) {
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
 * Turns a batch of queued writes into rows, in one `BEGIN IMMEDIATE` transaction: new
 * runs' rows, each event under its run's next index with its checkpoint, and each
 * touched run's row updated once. Each event's frame is built here, once, and stored as
 * its payload: what subscribers are sent is what is stored.
 */
export class BatchWriter {
  private readonly selectEnvelope: Statement<[string], RunEnvelopeRow>;
  private readonly insertRun: Statement<[string, string, string, string, string | null, string, string | null, number, number, string | null]>;
  private readonly eventRows: EventRowInserter;
  private readonly updateRun: Statement<[RunUpdate]>;
  private readonly advanceRun: Statement<[number, number, string]>;
  private readonly insertCheckpoint: Statement<[string, string, string | null, string, number, number, number]>;
  private readonly insertIdempotencyKey: Statement<[string, string, string, string, number]>;
  private readonly deleteSignal: Statement<[number, string]>;
  private readonly dropSignals: Statement<[string]>;
  private readonly writeTx: (batch: readonly PendingWrite[]) => BatchPlan;
  /**
   * Active runs' envelopes as last committed, so a batch does not read each run's row
   * again. Only commits change what it holds; a run leaves it when it ends.
   */
  private readonly envelopes = new Map<string, RunEnvelopeRow>();

  constructor(
    sqlite: Database,
    private readonly clock: () => number = Date.now,
  ) {
    this.selectEnvelope = sqlite.prepare(
      "SELECT attempt, workflow_id, workflow_name, session_id, status, last_event_index FROM runs WHERE run_id = ?",
    );
    this.insertRun = sqlite.prepare(
      `INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data, created_at, updated_at, trace_parent)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
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
    const plan = this.writeTx(batch);
    rememberEnvelopes(plan, this.envelopes);
    return plan.committed;
  }

  /** The run's row as stored (what `follow` needs to know where the run stands), or undefined. */
  storedEnvelope(runId: string): RunEnvelopeRow | undefined {
    return this.selectEnvelope.get(runId);
  }

  /** Inside the transaction: plans the batch (reading rows of runs not cached) and writes every row of it, or throws. */
  private write(batch: readonly PendingWrite[]): BatchPlan {
    const plan = planBatch(batch, (runId) => this.envelopes.get(runId) ?? this.selectEnvelope.get(runId), this.clock());
    for (const { runId, row, additionalData, idempotency } of plan.newRuns) {
      this.insertRun.run(runId, row.workflowId, row.workflowName, row.sessionId, row.userId, row.input, additionalData, row.createdAt, row.updatedAt, row.traceParent);
      if (idempotency) this.insertIdempotencyKey.run(row.workflowId, idempotency.key, idempotency.requestHash, runId, row.createdAt);
    }
    for (const { update, rows, checkpoints, consumedSignals } of plan.runs.values()) {
      this.eventRows.insert(rows);
      for (const checkpoint of checkpoints) this.insertCheckpoint.run(...checkpoint, plan.now);
      for (const signalId of consumedSignals) this.deleteSignal.run(signalId, update.runId);
      // A finished run waits for nothing more: the signals it kept go with its end.
      if (update.finishedAt !== null) this.dropSignals.run(update.runId);
      if (update.status === null && update.attempt === null) this.advanceRun.run(update.index, update.now, update.runId);
      else this.updateRun.run(update);
    }
    return plan;
  }
}
