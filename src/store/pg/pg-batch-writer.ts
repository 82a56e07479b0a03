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
const INLINE_BATCH_BYTES = 16 * 1024;

// All of a batch's new runs in one statement. With fencing, a node holds the runs it creates (epoch 1) from their first commit.
const INSERT_RUNS =
  "INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data, created_at, updated_at, owner_node, lease_until, lease_epoch) " +
  "SELECT run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data::jsonb, created_at, updated_at, $10::text, $11::bigint, CASE WHEN $10::text IS NULL THEN 0 ELSE 1 END " +
  "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[]) " +
  "AS r(run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data, created_at, updated_at)";
// An expired key (the only kind a start finds and does not return) is taken over.
const UPSERT_IDEMPOTENCY_KEY =
  "INSERT INTO idempotency_keys (workflow_id, key, request_hash, run_id, created_at) VALUES ($1, $2, $3, $4, $5) " +
  "ON CONFLICT (workflow_id, key) DO UPDATE SET request_hash = excluded.request_hash, run_id = excluded.run_id, created_at = excluded.created_at";
const INSERT_CHECKPOINTS =
  "INSERT INTO step_checkpoints (run_id, step_path, step_name, output, attempt, event_index, created_at) " +
  "SELECT run_id, step_path, step_name, output::jsonb, attempt, event_index, $7 " +
  "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[], $6::integer[]) AS c(run_id, step_path, step_name, output, attempt, event_index)";
const DELETE_SIGNALS = "DELETE FROM signals USING unnest($1::integer[], $2::text[]) AS s(signal_id, run_id) WHERE signals.signal_id = s.signal_id AND signals.run_id = s.run_id";
// A finished run waits for nothing more: the signals it kept go with its end.
const DROP_SIGNALS = "DELETE FROM signals WHERE run_id = ANY($1::text[])";
/**
 * Every run row a batch touches, in one statement: each moved to its last index, with what
 * its events changed (status, times, output, wait). Fenced (with fencing: only where this
 * node holds the run at its epoch), and each announced on COMMIT_CHANNEL (sent by
 * PostgreSQL at the commit, never for a rollback), with its events when they are small
 * (see inlineTail): other nodes then need not read them.
 */
const UPDATE_RUNS = `UPDATE runs SET last_event_index = u.last_index, updated_at = u.updated_at,
    status = coalesce(u.status, runs.status),
    started_at = coalesce(runs.started_at, u.started_at), finished_at = coalesce(u.finished_at, runs.finished_at),
    output = coalesce(u.output::jsonb, runs.output), error = coalesce(u.error, runs.error),
    attempt = coalesce(u.attempt, runs.attempt), crash_resumes = runs.crash_resumes + u.crash_increment,
    paused_at = CASE WHEN u.attempt IS NULL THEN runs.paused_at ELSE NULL END,
    wait_kind = CASE WHEN u.wait_set = 1 THEN u.wait_kind ELSE runs.wait_kind END,
    wait_name = CASE WHEN u.wait_set = 1 THEN u.wait_name ELSE runs.wait_name END,
    wait_until = CASE WHEN u.wait_set = 1 THEN u.wait_until ELSE runs.wait_until END
  FROM unnest($1::text[], $2::integer[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::text[],
      $9::integer[], $10::integer[], $11::integer[], $12::text[], $13::text[], $14::bigint[], $15::integer[], $16::text[])
    AS u(run_id, last_index, updated_at, status, started_at, finished_at, output, error,
      attempt, crash_increment, wait_set, wait_kind, wait_name, wait_until, epoch, tail)
  WHERE runs.run_id = u.run_id AND ($17::text IS NULL OR (runs.owner_node = $17::text AND runs.lease_epoch = u.epoch))
  RETURNING runs.run_id, pg_notify('${COMMIT_CHANNEL}', runs.last_event_index || ':' || runs.run_id || u.tail)`;

/** Rows of `width` values as `width` column arrays: the parameters of a statement that reads them with unnest. */
function columnsOf(rows: readonly (readonly unknown[])[], width: number): unknown[][] {
  return Array.from({ length: width }, (_, i) => rows.map((row) => row[i]));
}

/** A run update as a row of UPDATE_RUNS's first 14 columns. */
function updateRow(u: RunUpdate): unknown[] {
  return [u.runId, u.index, u.now, u.status, u.startedAt, u.finishedAt, u.output, u.error, u.attempt, u.crashIncrement, u.waitSet, u.waitKind, u.waitName, u.waitUntil];
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
      if (plan.newRuns.length > 0) {
        const runs = plan.newRuns;
        await client.query({
          name: "flowd-insert-runs",
          text: INSERT_RUNS,
          values: [
            ...columnsOf(
              runs.map(({ runId, row, additionalData }) => [runId, row.workflowId, row.workflowName, row.sessionId, row.userId, row.input, additionalData, row.createdAt, row.updatedAt]),
              9,
            ),
            fence?.nodeId ?? null,
            fence ? plan.now + fence.leaseMs : null,
          ],
        });
      }
      // With fencing (many nodes), a start took its key before its run's id went out (Engine.reserveKey):
      // writing it again could undo a takeover of a key whose run came too late.
      for (const { runId, row, idempotency } of fence ? [] : plan.newRuns) {
        if (!idempotency) continue;
        await client.query({
          name: "flowd-upsert-idempotency-key",
          text: UPSERT_IDEMPOTENCY_KEY,
          values: [row.workflowId, idempotency.key, idempotency.requestHash, runId, row.createdAt],
        });
      }
      // The run rows first: fenced, and locked until the commit, before anything else is written.
      const epochOf = (runId: string): number | null => (fence ? (fence.epochOf(runId) ?? -1) : null);
      const inlineBudget = { bytes: INLINE_BATCH_BYTES };
      // In run id order, as lease renewals list them: statements that lock the same rows in the same order do not deadlock
      // (PostgreSQL would break one after deadlock_timeout and the batch would be retried run by run).
      const touched = [...plan.runs.values()].sort((a, b) => (a.update.runId < b.update.runId ? -1 : a.update.runId > b.update.runId ? 1 : 0));
      /** Runs whose row update matched (with fencing: held by this node at its epoch). */
      const matched = new Set<string>();
      if (touched.length > 0) {
        const { rows } = await client.query<{ run_id: string }>({
          name: "flowd-update-runs",
          text: UPDATE_RUNS,
          values: [
            ...columnsOf(touched.map((run) => updateRow(run.update)), 14),
            touched.map((run) => epochOf(run.update.runId)),
            touched.map((run) => inlineTail(run.rows, inlineBudget)),
            fence?.nodeId ?? null,
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
      await this.insertEvents(client, touched.flatMap((run) => run.rows));
      const checkpoints = touched.flatMap((run) => run.checkpoints);
      if (checkpoints.length > 0) {
        await client.query({ name: "flowd-insert-checkpoints", text: INSERT_CHECKPOINTS, values: [...columnsOf(checkpoints, 6), plan.now] });
      }
      const consumed = touched.flatMap((run) => run.consumedSignals.map((signalId) => [signalId, run.update.runId] as const));
      if (consumed.length > 0) {
        await client.query({ name: "flowd-delete-signals", text: DELETE_SIGNALS, values: [consumed.map(([id]) => id), consumed.map(([, runId]) => runId)] });
      }
      const finished = touched.filter((run) => run.update.finishedAt !== null).map((run) => run.update.runId);
      if (finished.length > 0) await client.query({ name: "flowd-drop-signals", text: DROP_SIGNALS, values: [finished] });
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
