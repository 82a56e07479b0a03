import { and, count, desc, eq, getTableColumns, gte, inArray, sql, type SQL } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { Errors } from "../../errors.ts";
import type { RunRow } from "../schema.ts";
import type { KeyReservation, RunFilter, RunRecords, StoredSignal, WaitColumns } from "../store.ts";
import { idempotencyKeys, runs, signals } from "./schema.ts";

// The columns both databases have: the lease columns are PostgreSQL's own, and RunOwnership's business.
const { ownerNode: _owner, leaseUntil: _until, leaseEpoch: _epoch, ...RUN_COLUMNS } = getTableColumns(runs);

/** Run rows on PostgreSQL: the same queries as RunStore on SQLite. */
export class PgRunStore implements RunRecords {
  constructor(private readonly orm: NodePgDatabase) {}

  async get(runId: string): Promise<RunRow | undefined> {
    const [row] = await this.orm.select(RUN_COLUMNS).from(runs).where(eq(runs.runId, runId));
    return row;
  }

  async suspendedCounts(): Promise<{ paused: number; waiting: number }> {
    const rows = await this.orm
      .select({ status: runs.status, count: count() })
      .from(runs)
      .where(inArray(runs.status, ["paused", "waiting"]))
      .groupBy(runs.status);
    const of = (status: string): number => Number(rows.find((row) => row.status === status)?.count ?? 0);
    return { paused: of("paused"), waiting: of("waiting") };
  }

  async list(filter: RunFilter = {}): Promise<RunRow[]> {
    const conditions: SQL[] = [];
    if (filter.workflowId) conditions.push(eq(runs.workflowId, filter.workflowId));
    if (filter.sessionId) conditions.push(eq(runs.sessionId, filter.sessionId));
    if (filter.status) conditions.push(eq(runs.status, filter.status));
    if (filter.userId !== undefined) conditions.push(eq(runs.userId, filter.userId));
    return this.orm
      .select(RUN_COLUMNS)
      .from(runs)
      .where(and(...conditions))
      .orderBy(desc(runs.createdAt))
      .limit(filter.limit ?? 100)
      .offset(filter.offset ?? 0);
  }

  async idempotentStart(workflowId: string, key: string, notBefore: number): Promise<{ run: RunRow; requestHash: string } | undefined> {
    const [row] = await this.orm
      .select({ run: RUN_COLUMNS, requestHash: idempotencyKeys.requestHash })
      .from(idempotencyKeys)
      .innerJoin(runs, eq(runs.runId, idempotencyKeys.runId))
      .where(and(eq(idempotencyKeys.workflowId, workflowId), eq(idempotencyKeys.key, key), gte(idempotencyKeys.createdAt, notBefore)));
    return row;
  }

  async reserveIdempotencyKey(reservation: KeyReservation): Promise<{ runId: string; requestHash: string } | null> {
    const { workflowId, key, requestHash, runId, now, notBefore, takeFrom } = reservation;
    const taken = await this.orm.execute<{ run_id: string }>(sql`
      INSERT INTO idempotency_keys (workflow_id, key, request_hash, run_id, created_at)
      VALUES (${workflowId}, ${key}, ${requestHash}, ${runId}, ${now})
      ON CONFLICT (workflow_id, key) DO UPDATE SET request_hash = excluded.request_hash, run_id = excluded.run_id, created_at = excluded.created_at
        WHERE idempotency_keys.created_at < ${notBefore} OR idempotency_keys.run_id = ${takeFrom ?? null}
      RETURNING run_id`);
    if (taken.rows[0]?.run_id === runId) return null;
    const [holder] = await this.orm
      .select({ runId: idempotencyKeys.runId, requestHash: idempotencyKeys.requestHash })
      .from(idempotencyKeys)
      .where(and(eq(idempotencyKeys.workflowId, workflowId), eq(idempotencyKeys.key, key)));
    // Let go of meanwhile (it expired between the two statements): try again.
    return holder ?? this.reserveIdempotencyKey(reservation);
  }

  async markPaused(runId: string): Promise<void> {
    const now = Date.now();
    await this.orm.update(runs).set({ pausedAt: now, updatedAt: now }).where(eq(runs.runId, runId));
  }

  async markSuspended(runId: string, wait: WaitColumns): Promise<void> {
    await this.orm.update(runs).set({ ...wait, updatedAt: Date.now() }).where(eq(runs.runId, runId));
  }

  async keepSignal(runId: string, name: string, payload: unknown, limit: number): Promise<number> {
    const [kept] = await this.orm.select({ n: count() }).from(signals).where(eq(signals.runId, runId));
    if ((kept?.n ?? 0) >= limit) throw Errors.tooManySignals(runId, limit);
    const [row] = await this.orm.insert(signals).values({ runId, name, payload, createdAt: Date.now() }).returning({ signalId: signals.signalId });
    return row!.signalId;
  }

  async oldestSignal(runId: string, name: string, taken: ReadonlySet<number>): Promise<StoredSignal | undefined> {
    const rows = await this.orm
      .select({ signalId: signals.signalId, payload: signals.payload })
      .from(signals)
      .where(and(eq(signals.runId, runId), eq(signals.name, name)))
      .orderBy(signals.signalId)
      .limit(taken.size + 1);
    return rows.find((row) => !taken.has(row.signalId));
  }

  async markCancelRequested(runId: string): Promise<void> {
    const now = Date.now();
    await this.orm.update(runs).set({ cancelRequestedAt: now, updatedAt: now }).where(eq(runs.runId, runId));
  }
}
