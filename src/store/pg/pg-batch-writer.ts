import type pg from "pg";
import { Errors } from "../../errors.ts";
import type { CommittedEvent } from "../../protocol/run-events.ts";
import { COMMIT_CHANNEL, commitNoticePayload } from "./commit-listener.ts";
import { EVENT_COLUMNS, planBatch, rememberEnvelopes, type PendingWrite, type RunEnvelopeRow, type RunUpdate } from "../batch-plan.ts";

/** The most event rows one INSERT statement writes; a run's rows go in chunks of powers of two up to it. */
export const PG_ROWS_PER_INSERT = 512;

const ENVELOPE_COLUMNS = "run_id, attempt, workflow_id, workflow_name, session_id, status, last_event_index";

/** The prepared multi-row INSERT of `size` event rows. */
function eventInsert(size: number): pg.QueryConfig {
  const values = Array.from({ length: size }, (_, i) => {
    const at = i * EVENT_COLUMNS;
    return `($${at + 1}, $${at + 2}, $${at + 3}, $${at + 4}, $${at + 5}, $${at + 6})`;
  });
  return { name: `flowd-events-${size}`, text: `INSERT INTO events (run_id, event_index, event, step_path, payload, created_at) VALUES ${values.join(", ")}` };
}

const EVENT_INSERTS = new Map<number, pg.QueryConfig>();
for (let size = 1; size <= PG_ROWS_PER_INSERT; size *= 2) EVENT_INSERTS.set(size, eventInsert(size));

const INSERT_RUN =
  "INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data, created_at, updated_at) " +
  "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)";
// An expired key (the only kind a start finds and does not return) is taken over.
const UPSERT_IDEMPOTENCY_KEY =
  "INSERT INTO idempotency_keys (workflow_id, key, request_hash, run_id, created_at) VALUES ($1, $2, $3, $4, $5) " +
  "ON CONFLICT (workflow_id, key) DO UPDATE SET request_hash = excluded.request_hash, run_id = excluded.run_id, created_at = excluded.created_at";
const INSERT_CHECKPOINT =
  "INSERT INTO step_checkpoints (run_id, step_path, step_name, output, attempt, event_index, created_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)";
const ADVANCE_RUNS =
  "UPDATE runs SET last_event_index = moved.last_index, updated_at = $3 " +
  "FROM unnest($1::text[], $2::integer[]) AS moved(run_id, last_index) WHERE runs.run_id = moved.run_id";
const UPDATE_RUN = `UPDATE runs SET last_event_index = $2, updated_at = $3, status = coalesce($4::text, status),
    started_at = coalesce(started_at, $5::bigint), finished_at = coalesce($6::bigint, finished_at),
    output = coalesce($7::jsonb, output), error = coalesce($8::text, error),
    attempt = coalesce($9::integer, attempt), crash_resumes = crash_resumes + $10::integer,
    paused_at = CASE WHEN $9::integer IS NULL THEN paused_at ELSE NULL END,
    wait_kind = CASE WHEN $11::integer = 1 THEN $12::text ELSE wait_kind END,
    wait_name = CASE WHEN $11::integer = 1 THEN $13::text ELSE wait_name END,
    wait_until = CASE WHEN $11::integer = 1 THEN $14::bigint ELSE wait_until END
  WHERE run_id = $1`;

function updateValues(update: RunUpdate): unknown[] {
  return [
    update.runId,
    update.index,
    update.now,
    update.status,
    update.startedAt,
    update.finishedAt,
    update.output,
    update.error,
    update.attempt,
    update.crashIncrement,
    update.waitSet,
    update.waitKind,
    update.waitName,
    update.waitUntil,
  ];
}

/** Appends fenced by run leases (see RunLeases): this node's id, and the epoch it holds each run at. */
export interface Fencing {
  nodeId: string;
  leaseMs: number;
  epochOf(runId: string): number | undefined;
}

/**
 * Group commit on PostgreSQL: the batch planned as on SQLite (batch-plan.ts), stored in
 * one transaction with multi-row INSERTs (a run's rows together, in prepared chunks) and
 * each touched run's row updated once, and each touched run announced on COMMIT_CHANNEL
 * (delivered by PostgreSQL at the commit, never for a batch rolled back). With fencing (many nodes), every touched run's row
 * is read and locked first: a run this node no longer holds at its epoch fails the batch
 * with LEASE_LOST before anything is written.
 */
export class PgBatchWriter {
  /** Active runs' envelopes as last committed (see BatchWriter); not used with fencing, where each batch reads them under lock. */
  private readonly envelopes = new Map<string, RunEnvelopeRow>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly clock: () => number = Date.now,
    private readonly fencing: Fencing | null = null,
  ) {}

  /** Writes and commits `batch`, or throws and writes nothing; returns its events as committed. */
  async commit(batch: readonly PendingWrite[]): Promise<CommittedEvent[]> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      const stored = this.fencing ? await this.lockEnvelopes(client, batch, this.fencing) : await this.readEnvelopes(client, batch);
      const cache = this.fencing ? new Map<string, RunEnvelopeRow>() : this.envelopes;
      const plan = planBatch(batch, (runId) => cache.get(runId) ?? stored.get(runId), this.clock());
      for (const { runId, row, additionalData, idempotency } of plan.newRuns) {
        await client.query({
          name: "flowd-insert-run",
          text: INSERT_RUN,
          values: [runId, row.workflowId, row.workflowName, row.sessionId, row.userId, row.input, additionalData, row.createdAt, row.updatedAt],
        });
        // A node holds the runs it creates (epoch 1).
        if (this.fencing) {
          await client.query({
            name: "flowd-own-new-run",
            text: "UPDATE runs SET owner_node = $2, lease_until = $3, lease_epoch = 1 WHERE run_id = $1",
            values: [runId, this.fencing.nodeId, plan.now + this.fencing.leaseMs],
          });
        }
        if (idempotency) {
          await client.query({
            name: "flowd-upsert-idempotency-key",
            text: UPSERT_IDEMPOTENCY_KEY,
            values: [row.workflowId, idempotency.key, idempotency.requestHash, runId, row.createdAt],
          });
        }
      }
      // Every run's rows in as few statements as can carry them: a round trip costs more than
      // PostgreSQL's B-tree pays for rows of many runs side by side.
      await this.insertEvents(client, [...plan.runs.values()].flatMap((run) => run.rows));
      for (const { update, checkpoints, consumedSignals } of plan.runs.values()) {
        for (const checkpoint of checkpoints) {
          await client.query({ name: "flowd-insert-checkpoint", text: INSERT_CHECKPOINT, values: [...checkpoint, plan.now] });
        }
        for (const signalId of consumedSignals) {
          await client.query({ name: "flowd-delete-signal", text: "DELETE FROM signals WHERE signal_id = $1 AND run_id = $2", values: [signalId, update.runId] });
        }
        // A finished run waits for nothing more: the signals it kept go with its end.
        if (update.finishedAt !== null) await client.query({ name: "flowd-drop-signals", text: "DELETE FROM signals WHERE run_id = $1", values: [update.runId] });
        if (update.status !== null || update.attempt !== null) {
          await client.query({ name: "flowd-update-run", text: UPDATE_RUN, values: updateValues(update) });
        }
      }
      // Most runs of a batch only move forward: all of them in one statement.
      const advanced = [...plan.runs.values()].filter(({ update }) => update.status === null && update.attempt === null);
      if (advanced.length > 0) {
        await client.query({
          name: "flowd-advance-runs",
          text: ADVANCE_RUNS,
          values: [advanced.map(({ update }) => update.runId), advanced.map(({ update }) => update.index), plan.now],
        });
      }
      // Announced to every node's CommitListener when, and only if, this commits.
      if (plan.runs.size > 0) {
        const notices = [...plan.runs.values()].map(({ update }) => commitNoticePayload(update.runId, update.index));
        await client.query({ name: "flowd-notify-commits", text: "SELECT pg_notify($1, notice) FROM unnest($2::text[]) AS notice", values: [COMMIT_CHANNEL, notices] });
      }
      await client.query("COMMIT");
      if (!this.fencing) rememberEnvelopes(plan, this.envelopes);
      return plan.committed;
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }

  /** The rows of the batch's runs that are neither cached nor created by it, in one read. */
  private async readEnvelopes(client: pg.PoolClient, batch: readonly PendingWrite[]): Promise<Map<string, RunEnvelopeRow>> {
    const created = new Set(batch.filter((write) => write.kind === "run").map((write) => write.runId));
    const missing = [...new Set(batch.map((write) => write.runId))].filter((runId) => !created.has(runId) && !this.envelopes.has(runId));
    const stored = new Map<string, RunEnvelopeRow>();
    if (missing.length === 0) return stored;
    const { rows } = await client.query<RunEnvelopeRow & { run_id: string }>({
      name: "flowd-select-envelopes",
      text: `SELECT ${ENVELOPE_COLUMNS} FROM runs WHERE run_id = ANY($1::text[])`,
      values: [missing],
    });
    for (const { run_id: runId, ...envelope } of rows) stored.set(runId, envelope);
    return stored;
  }

  /**
   * The rows of the batch's runs not created by it, read and locked until the commit:
   * another node's batch for the same run waits, and a run this node no longer holds at
   * its epoch (taken over after its lease lapsed) fails the batch.
   */
  private async lockEnvelopes(client: pg.PoolClient, batch: readonly PendingWrite[], fencing: Fencing): Promise<Map<string, RunEnvelopeRow>> {
    const created = new Set(batch.filter((write) => write.kind === "run").map((write) => write.runId));
    const touched = [...new Set(batch.map((write) => write.runId))].filter((runId) => !created.has(runId));
    const stored = new Map<string, RunEnvelopeRow>();
    if (touched.length === 0) return stored;
    const { rows } = await client.query<RunEnvelopeRow & { run_id: string; owner_node: string | null; lease_epoch: number }>({
      name: "flowd-lock-envelopes",
      // In run id order, so that two nodes locking the same runs cannot deadlock.
      text: `SELECT ${ENVELOPE_COLUMNS}, owner_node, lease_epoch FROM runs WHERE run_id = ANY($1::text[]) ORDER BY run_id FOR UPDATE`,
      values: [touched],
    });
    for (const { run_id: runId, owner_node: owner, lease_epoch: epoch, ...envelope } of rows) {
      if (owner !== fencing.nodeId || epoch !== fencing.epochOf(runId)) {
        throw Errors.leaseLost(runId, fencing.nodeId, owner, epoch);
      }
      stored.set(runId, envelope);
    }
    return stored;
  }

  /** A run's event rows (EVENT_COLUMNS values each), in chunks of powers of two up to PG_ROWS_PER_INSERT. */
  private async insertEvents(client: pg.PoolClient, rows: readonly unknown[]): Promise<void> {
    let from = 0;
    let left = rows.length / EVENT_COLUMNS;
    for (let size = PG_ROWS_PER_INSERT; size >= 1 && left > 0; size /= 2) {
      while (left >= size) {
        const to = from + size * EVENT_COLUMNS;
        await client.query({ ...EVENT_INSERTS.get(size)!, values: rows.slice(from, to) as unknown[] });
        from = to;
        left -= size;
      }
    }
  }
}
