import type pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { Errors } from "../../errors.ts";
import type { CommittedEvent } from "../../protocol/run-events.ts";
import { COMMIT_CHANNEL, inlineTail } from "./commit-listener.ts";
import { EVENT_COLUMNS, planBatch, rememberEnvelopes, type PendingWrite, type RunEnvelopeRow, type RunUpdate } from "../batch-plan.ts";

const ENVELOPE_COLUMNS = "run_id, attempt, workflow_id, workflow_name, session_id, status, last_event_index";

/**
 * All of a batch's event rows in one COPY: PostgreSQL's bulk path, and the cheapest for
 * this node too (one text, next to nothing to escape in a JSON frame).
 */
const COPY_EVENTS = "COPY events (run_id, event_index, event, step_path, payload, created_at) FROM STDIN";

const COPY_ESCAPES: Record<string, string> = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" };
const NEEDS_COPY_ESCAPE = /[\\\t\n\r]/;

/** A text field as COPY's text format reads it: backslash, tab, newline and carriage return escaped, null as \N. */
function copyField(value: string | null): string {
  if (value === null) return "\\N";
  return NEEDS_COPY_ESCAPE.test(value) ? value.replace(/[\\\t\n\r]/g, (c) => COPY_ESCAPES[c]!) : value;
}

/** At most this much of a batch rides in its notices: a large batch is read by other nodes faster than sent twice. */
const INLINE_BATCH_BYTES = 64 * 1024;

// With fencing, a node holds the runs it creates (epoch 1) from their first commit.
const INSERT_RUN =
  "INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data, created_at, updated_at, owner_node, lease_until, lease_epoch) " +
  "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10::text, $11::bigint, CASE WHEN $10::text IS NULL THEN 0 ELSE 1 END)";
// An expired key (the only kind a start finds and does not return) is taken over.
const UPSERT_IDEMPOTENCY_KEY =
  "INSERT INTO idempotency_keys (workflow_id, key, request_hash, run_id, created_at) VALUES ($1, $2, $3, $4, $5) " +
  "ON CONFLICT (workflow_id, key) DO UPDATE SET request_hash = excluded.request_hash, run_id = excluded.run_id, created_at = excluded.created_at";
const INSERT_CHECKPOINT =
  "INSERT INTO step_checkpoints (run_id, step_path, step_name, output, attempt, event_index, created_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)";
// Each run row update is fenced (with fencing: only where this node holds the run at its epoch),
// and announces the commit on COMMIT_CHANNEL (sent by PostgreSQL at the commit, never for a rollback).
const FENCED = "($FENCE_NODE::text IS NULL OR (runs.owner_node = $FENCE_NODE::text AND runs.lease_epoch = $FENCE_EPOCH::integer))";
// The notice carries the run's events when they are small (see inlineTail): other nodes then need not read them.
const NOTIFIED = `RETURNING runs.run_id, pg_notify('${COMMIT_CHANNEL}', runs.last_event_index || ':' || runs.run_id || $TAIL)`;
const ADVANCE_RUNS =
  "UPDATE runs SET last_event_index = moved.last_index, updated_at = $3 " +
  "FROM unnest($1::text[], $2::integer[], $5::integer[], $6::text[]) AS moved(run_id, last_index, epoch, tail) WHERE runs.run_id = moved.run_id AND " +
  FENCED.replaceAll("$FENCE_NODE", "$4").replaceAll("$FENCE_EPOCH::integer", "moved.epoch") +
  " " +
  NOTIFIED.replace("$TAIL", "moved.tail");
const UPDATE_RUN = `UPDATE runs SET last_event_index = $2, updated_at = $3, status = coalesce($4::text, status),
    started_at = coalesce(started_at, $5::bigint), finished_at = coalesce($6::bigint, finished_at),
    output = coalesce($7::jsonb, output), error = coalesce($8::text, error),
    attempt = coalesce($9::integer, attempt), crash_resumes = crash_resumes + $10::integer,
    paused_at = CASE WHEN $9::integer IS NULL THEN paused_at ELSE NULL END,
    wait_kind = CASE WHEN $11::integer = 1 THEN $12::text ELSE wait_kind END,
    wait_name = CASE WHEN $11::integer = 1 THEN $13::text ELSE wait_name END,
    wait_until = CASE WHEN $11::integer = 1 THEN $14::bigint ELSE wait_until END
  WHERE run_id = $1 AND ${FENCED.replaceAll("$FENCE_NODE", "$15").replaceAll("$FENCE_EPOCH", "$16")} ${NOTIFIED.replace("$TAIL", "$17::text")}`;

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
 * one transaction: all its event rows in one INSERT of column arrays, each touched run's
 * row updated once (the runs that only move forward in one UPDATE), and each touched run
 * announced on COMMIT_CHANNEL by that UPDATE (delivered by PostgreSQL at the commit, never
 * for a batch rolled back). With fencing (many nodes) the run row updates match only runs
 * this node holds at its epoch; one that does not match (taken over after this node's
 * lease lapsed) rolls the whole batch back with LEASE_LOST. The update locks the row until
 * the commit, so a takeover waits for it, and sees it.
 */
export class PgBatchWriter {
  /** Active runs' envelopes as last committed (see BatchWriter); with fencing, those of runs this node holds. */
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
      const stored = await this.readEnvelopes(client, batch);
      const plan = planBatch(batch, (runId) => this.envelopes.get(runId) ?? stored.get(runId), this.clock());
      const fence = this.fencing;
      for (const { runId, row, additionalData, idempotency } of plan.newRuns) {
        await client.query({
          name: "flowd-insert-run",
          text: INSERT_RUN,
          values: [
            runId, row.workflowId, row.workflowName, row.sessionId, row.userId, row.input, additionalData, row.createdAt, row.updatedAt,
            fence?.nodeId ?? null, fence ? plan.now + fence.leaseMs : null,
          ],
        });
        if (idempotency) {
          await client.query({
            name: "flowd-upsert-idempotency-key",
            text: UPSERT_IDEMPOTENCY_KEY,
            values: [row.workflowId, idempotency.key, idempotency.requestHash, runId, row.createdAt],
          });
        }
      }
      // The run rows first: fenced, and locked until the commit, before anything else is written.
      /** Runs whose row update matched (with fencing: held by this node at its epoch). */
      const matched = new Set<string>();
      const epochOf = (runId: string): number | null => (fence ? (fence.epochOf(runId) ?? -1) : null);
      const inlineBudget = { bytes: INLINE_BATCH_BYTES };
      for (const { update, rows: events } of plan.runs.values()) {
        if (update.status === null && update.attempt === null) continue;
        const { rows } = await client.query<{ run_id: string }>({
          name: "flowd-update-run",
          text: UPDATE_RUN,
          values: [...updateValues(update), fence?.nodeId ?? null, epochOf(update.runId), inlineTail(events, inlineBudget)],
        });
        for (const row of rows) matched.add(row.run_id);
      }
      // Most runs of a batch only move forward: all of them in one statement.
      const advanced = [...plan.runs.values()].filter(({ update }) => update.status === null && update.attempt === null);
      if (advanced.length > 0) {
        const { rows } = await client.query<{ run_id: string }>({
          name: "flowd-advance-runs",
          text: ADVANCE_RUNS,
          values: [
            advanced.map(({ update }) => update.runId),
            advanced.map(({ update }) => update.index),
            plan.now,
            fence?.nodeId ?? null,
            advanced.map(({ update }) => epochOf(update.runId)),
            advanced.map(({ rows: events }) => inlineTail(events, inlineBudget)),
          ],
        });
        for (const row of rows) matched.add(row.run_id);
      }
      // A run this node no longer holds at its epoch (taken over after its lease lapsed): nothing of the batch is written.
      for (const runId of plan.runs.keys()) {
        if (matched.has(runId)) continue;
        const { rows } = await client.query<{ owner_node: string | null; lease_epoch: number }>({
          name: "flowd-lease-of",
          text: "SELECT owner_node, lease_epoch FROM runs WHERE run_id = $1",
          values: [runId],
        });
        this.envelopes.delete(runId);
        throw Errors.leaseLost(runId, fence?.nodeId ?? "?", rows[0]?.owner_node ?? null, rows[0]?.lease_epoch ?? 0);
      }
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
      }
      await client.query("COMMIT");
      rememberEnvelopes(plan, this.envelopes);
      return plan.committed;
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }

  /** Forgets what it knows of a run's row: another node may have written it (this node takes it over again). */
  forget(runId: string): void {
    this.envelopes.delete(runId);
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

  /** The batch's event rows (EVENT_COLUMNS values each), in one COPY. */
  private async insertEvents(client: pg.PoolClient, rows: readonly unknown[]): Promise<void> {
    if (rows.length === 0) return;
    let text = "";
    for (let i = 0; i < rows.length; i += EVENT_COLUMNS) {
      const field = (column: number): string => copyField(rows[i + column] as string | null);
      text += `${field(0)}\t${rows[i + 1] as number}\t${field(2)}\t${field(3)}\t${field(4)}\t${rows[i + 5] as number}\n`;
    }
    const copy = client.query(copyFrom(COPY_EVENTS));
    await new Promise<void>((resolve, reject) => {
      copy.once("finish", resolve);
      copy.once("error", reject);
      copy.end(text);
    });
  }
}
