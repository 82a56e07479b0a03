import type pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { Errors, type FlowdError } from "../../errors.ts";
import type { CommittedEvent } from "../../protocol/run-events.ts";
import { COMMIT_CHANNEL, inlineTail } from "./commit-listener.ts";
import { EVENT_COLUMNS, planBatch, rememberEnvelopes, type CheckpointRow, type PendingWrite, type PlannedRun, type RunEnvelopeRow, type RunUpdate } from "../batch-plan.ts";

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

/** A batch with at most this many events commits in one statement, its events with the rest; a larger one COPYs them. */
const ONE_STATEMENT_EVENTS = 128;

/** Numbered parameters of a statement built from parts: `add` gives the placeholder of a value. */
class Parameters {
  readonly values: unknown[] = [];
  add(value: unknown, type: string): string {
    this.values.push(value);
    return `$${this.values.length}::${type}`;
  }
  /** Columns as arrays, read back as rows by unnest. */
  unnest(rows: readonly (readonly unknown[])[], types: readonly string[]): string {
    return `unnest(${types.map((type, i) => this.add(rows.map((row) => row[i]), `${type}[]`)).join(", ")})`;
  }
}

/** What a batch commits apart from its event rows, with them when they come along (eventRows). */
interface BatchParts {
  newRuns: PlannedRun[];
  /** Each touched run's update, its epoch (fencing) and its notice tail, in run id order. */
  updates: { update: RunUpdate; epoch: number | null; tail: string }[];
  keys: (readonly unknown[])[];
  checkpoints: CheckpointRow[];
  consumed: (readonly [number, string])[];
  eventRows: (readonly unknown[])[] | null;
}

/**
 * A batch's writes as one statement (see PgBatchWriter): new runs inserted as they stand
 * after the batch, the other touched runs' rows updated, fenced; the batch's other rows
 * written only for runs so matched; and flowd_finish_batch (migration 0005) aborting it all
 * if a touched run did not match, or announcing each on COMMIT_CHANNEL.
 */
function batchStatement(parts: BatchParts, fence: Fencing | null, now: number): { name: string; text: string; values: unknown[] } {
  const p = new Parameters();
  const owner = p.add(fence?.nodeId ?? null, "text");
  const u = p.unnest(
    parts.updates.map(({ update, epoch, tail }) => [...updateRow(update), epoch, tail]),
    ["text", "integer", "bigint", "text", "bigint", "bigint", "text", "text", "integer", "integer", "integer", "text", "text", "bigint", "integer", "text"],
  );
  const ctes = [
    `u AS (SELECT * FROM ${u} AS u(run_id, last_index, updated_at, status, started_at, finished_at, output, error,
      attempt, crash_increment, wait_set, wait_kind, wait_name, wait_until, epoch, tail))`,
  ];
  let name = "flowd-commit";
  let held = "SELECT run_id, last_event_index FROM updated";
  if (parts.newRuns.length > 0) {
    name += "-runs";
    const r = p.unnest(
      parts.newRuns.map(({ runId, row, additionalData }) => [runId, row.workflowId, row.workflowName, row.sessionId, row.userId, row.input, additionalData, row.createdAt, row.updatedAt, row.status, row.attempt, row.lastEventIndex, row.traceParent]),
      ["text", "text", "text", "text", "text", "text", "text", "bigint", "bigint", "text", "integer", "integer", "text"],
    );
    // With fencing, a node holds the runs it creates (epoch 1) from their first commit.
    ctes.push(`created AS (INSERT INTO runs (run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data, created_at,
        updated_at, status, attempt, last_event_index, started_at, finished_at, output, error, crash_resumes, wait_kind, wait_name, wait_until,
        owner_node, lease_until, lease_epoch, trace_parent)
      SELECT r.run_id, r.workflow_id, r.workflow_name, r.session_id, r.user_id, r.input, r.additional_data::jsonb, r.created_at,
        coalesce(u.updated_at, r.updated_at), coalesce(u.status, r.status), coalesce(u.attempt, r.attempt), coalesce(u.last_index, r.last_event_index),
        u.started_at, u.finished_at, u.output::jsonb, u.error, coalesce(u.crash_increment, 0),
        CASE WHEN u.wait_set = 1 THEN u.wait_kind END, CASE WHEN u.wait_set = 1 THEN u.wait_name END, CASE WHEN u.wait_set = 1 THEN u.wait_until END,
        ${owner}, ${p.add(fence ? now + fence.leaseMs : null, "bigint")}, CASE WHEN ${owner} IS NULL THEN 0 ELSE 1 END, r.trace_parent
      FROM ${r} AS r(run_id, workflow_id, workflow_name, session_id, user_id, input, additional_data, created_at, updated_at, status, attempt, last_event_index, trace_parent)
      LEFT JOIN u ON u.run_id = r.run_id
      RETURNING run_id, last_event_index)`);
    held = `SELECT run_id, last_event_index FROM created UNION ALL ${held}`;
  }
  // Runs created by this batch are not in the statement's snapshot: only the others match.
  ctes.push(`updated AS (UPDATE runs SET last_event_index = u.last_index, updated_at = u.updated_at,
      status = coalesce(u.status, runs.status),
      started_at = coalesce(runs.started_at, u.started_at), finished_at = coalesce(u.finished_at, runs.finished_at),
      output = coalesce(u.output::jsonb, runs.output), error = coalesce(u.error, runs.error),
      attempt = coalesce(u.attempt, runs.attempt), crash_resumes = runs.crash_resumes + u.crash_increment,
      paused_at = CASE WHEN u.attempt IS NULL THEN runs.paused_at ELSE NULL END,
      wait_kind = CASE WHEN u.wait_set = 1 THEN u.wait_kind ELSE runs.wait_kind END,
      wait_name = CASE WHEN u.wait_set = 1 THEN u.wait_name ELSE runs.wait_name END,
      wait_until = CASE WHEN u.wait_set = 1 THEN u.wait_until ELSE runs.wait_until END
    FROM u WHERE runs.run_id = u.run_id AND (${owner} IS NULL OR (runs.owner_node = ${owner} AND runs.lease_epoch = u.epoch))
    RETURNING runs.run_id, runs.last_event_index, u.finished_at)`);
  ctes.push(`held AS (${held})`);
  if (parts.keys.length > 0) {
    name += "-keys";
    // An expired key (the only kind a start finds and does not return) is taken over.
    ctes.push(`keys AS (INSERT INTO idempotency_keys (workflow_id, key, request_hash, run_id, created_at)
      SELECT * FROM ${p.unnest(parts.keys, ["text", "text", "text", "text", "bigint"])}
      ON CONFLICT (workflow_id, key) DO UPDATE SET request_hash = excluded.request_hash, run_id = excluded.run_id, created_at = excluded.created_at)`);
  }
  if (parts.checkpoints.length > 0) {
    name += "-checkpoints";
    ctes.push(`checkpoints AS (INSERT INTO step_checkpoints (run_id, step_path, step_name, output, attempt, event_index, created_at)
      SELECT c.run_id, c.step_path, c.step_name, c.output::jsonb, c.attempt, c.event_index, ${p.add(now, "bigint")}
      FROM ${p.unnest(parts.checkpoints, ["text", "text", "text", "text", "integer", "integer"])} AS c(run_id, step_path, step_name, output, attempt, event_index)
      WHERE c.run_id IN (SELECT run_id FROM held))`);
  }
  const finishing = parts.updates.some(({ update }) => update.finishedAt !== null);
  if (parts.consumed.length > 0 || finishing) {
    name += "-signals";
    // A finished run waits for nothing more: the signals it kept go with its end.
    ctes.push(`signals_done AS (DELETE FROM signals WHERE run_id IN (SELECT run_id FROM updated WHERE finished_at IS NOT NULL)
      OR (signal_id, run_id) IN (SELECT s.signal_id, s.run_id FROM ${p.unnest(parts.consumed, ["integer", "text"])} AS s(signal_id, run_id)
        WHERE s.run_id IN (SELECT run_id FROM held)))`);
  }
  if (parts.eventRows) {
    name += "-events";
    ctes.push(`events_in AS (INSERT INTO events (run_id, event_index, event, step_path, payload, created_at)
      SELECT e.run_id, e.event_index, e.event, e.step_path, e.payload, e.created_at
      FROM ${p.unnest(parts.eventRows, ["text", "integer", "text", "text", "text", "bigint"])} AS e(run_id, event_index, event, step_path, payload, created_at)
      WHERE e.run_id IN (SELECT run_id FROM held))`);
  }
  const touched = [...new Set([...parts.newRuns.map((run) => run.runId), ...parts.updates.map(({ update }) => update.runId)])];
  const text = `WITH ${ctes.join(",\n")}
    SELECT flowd_finish_batch(${p.add(COMMIT_CHANNEL, "text")}, array(SELECT run_id FROM held), ${p.add(touched, "text[]")},
      array(SELECT h.last_event_index || ':' || h.run_id || u.tail FROM held h JOIN u ON u.run_id = h.run_id))`;
  return { name, text, values: p.values };
}

/** A run update as a row of its first 14 columns in batchStatement. */
function updateRow(u: RunUpdate): unknown[] {
  return [u.runId, u.index, u.now, u.status, u.startedAt, u.finishedAt, u.output, u.error, u.attempt, u.crashIncrement, u.waitSet, u.waitKind, u.waitName, u.waitUntil];
}

/** Flat event rows (EVENT_COLUMNS values each) as rows. */
function eventRowsOf(flat: readonly unknown[]): unknown[][] {
  const rows: unknown[][] = [];
  for (let i = 0; i < flat.length; i += EVENT_COLUMNS) rows.push(flat.slice(i, i + EVENT_COLUMNS));
  return rows;
}

/** PostgreSQL's answer when a batch touched a run this node does not hold (flowd_finish_batch). */
const NOT_HELD = "FL001";

/** Appends fenced by run leases (see RunLeases): this node's id, and the epoch it holds each run at. */
export interface Fencing {
  nodeId: string;
  leaseMs: number;
  epochOf(runId: string): number | undefined;
}

/**
 * Group commit on PostgreSQL: the batch planned as on SQLite (batch-plan.ts), stored all or
 * nothing. Its run rows, checkpoints and signal deletions take one statement (batchStatement),
 * and so do its events when the batch is small: a round trip in all, which is what a
 * commit's latency is made of on a busy machine. A larger batch's events go in one COPY,
 * after that statement, in the same transaction. The statement locks each touched run's
 * row first (a takeover waits for the commit, and sees it), and with fencing (many nodes)
 * matches only runs this node holds at its epoch: one that does not match (taken over
 * after this node's lease lapsed) aborts the batch with LEASE_LOST. Each touched run is
 * announced on COMMIT_CHANNEL, which PostgreSQL delivers at the commit, never for a batch
 * rolled back.
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
    let inTransaction = false;
    try {
      const stored = await this.readEnvelopes(client, batch);
      const plan = planBatch(batch, (runId) => this.envelopes.get(runId) ?? stored.get(runId), this.clock());
      const fence = this.fencing;
      const inlineBudget = { bytes: INLINE_BATCH_BYTES };
      // In run id order, as lease renewals list them: statements that lock the same rows in the same order do not deadlock
      // (PostgreSQL would break one after deadlock_timeout and the batch would be retried run by run).
      const touched = [...plan.runs.values()].sort((a, b) => (a.update.runId < b.update.runId ? -1 : a.update.runId > b.update.runId ? 1 : 0));
      const eventRows = touched.flatMap((run) => run.rows);
      const oneStatement = eventRows.length <= ONE_STATEMENT_EVENTS * EVENT_COLUMNS;
      const statement = batchStatement(
        {
          newRuns: plan.newRuns,
          updates: touched.map((run) => ({ update: run.update, epoch: fence ? (fence.epochOf(run.update.runId) ?? -1) : null, tail: inlineTail(run.rows, inlineBudget) })),
          // With fencing (many nodes), a start took its key before its run's id went out (Engine.reserveKey):
          // writing it again could undo a takeover of a key whose run came too late.
          keys: fence ? [] : plan.newRuns.flatMap(({ runId, row, idempotency }) => (idempotency ? [[row.workflowId, idempotency.key, idempotency.requestHash, runId, row.createdAt]] : [])),
          checkpoints: touched.flatMap((run) => run.checkpoints),
          consumed: touched.flatMap((run) => run.consumedSignals.map((signalId) => [signalId, run.update.runId] as const)),
          eventRows: oneStatement ? eventRowsOf(eventRows) : null,
        },
        fence,
        plan.now,
      );
      if (oneStatement) {
        await client.query(statement);
      } else {
        await client.query("BEGIN");
        inTransaction = true;
        await client.query(statement);
        await this.insertEvents(client, eventRows);
        await client.query("COMMIT");
        inTransaction = false;
      }
      rememberEnvelopes(plan, this.envelopes);
      return plan.committed;
    } catch (error) {
      if (inTransaction) await client.query("ROLLBACK").catch(() => {});
      if ((error as { code?: unknown }).code === NOT_HELD) throw await this.leaseLost(client, (error as { detail?: string }).detail ?? "?");
      throw error;
    } finally {
      client.release();
    }
  }

  /** Why this node may no longer write into a run (another node took it over). */
  private async leaseLost(client: pg.PoolClient, runId: string): Promise<FlowdError> {
    this.envelopes.delete(runId);
    const { rows } = await client.query<{ owner_node: string | null; lease_epoch: number }>({
      name: "flowd-lease-of",
      text: "SELECT owner_node, lease_epoch FROM runs WHERE run_id = $1",
      values: [runId],
    });
    return Errors.leaseLost(runId, this.fencing?.nodeId ?? "?", rows[0]?.owner_node ?? null, rows[0]?.lease_epoch ?? 0);
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
