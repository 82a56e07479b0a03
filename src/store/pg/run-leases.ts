import type pg from "pg";

/**
 * Which node executes a run, on PostgreSQL: a lease on the run's row (`owner_node`,
 * `lease_until`, `lease_epoch`) that its node renews. A node takes a run only when it has
 * no owner or its lease has lapsed, and each take raises the epoch: a node's appends are
 * fenced by the epoch it took (PgBatchWriter), so one that was paused or cut off past its
 * lease can never write into a run another node took over.
 */
export class RunLeases {
  constructor(
    private readonly pool: pg.Pool,
    /** This node's id (unique among the nodes on one database). */
    readonly nodeId: string,
    /** How long a lease lasts without renewal (FLOWD_LEASE_MS). */
    readonly leaseMs: number,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Takes an unfinished run whose lease is free or lapsed (or already this node's): the new epoch, or null if another node holds it. */
  async acquire(runId: string): Promise<number | null> {
    const now = this.clock();
    const { rows } = await this.pool.query<{ lease_epoch: number }>({
      name: "flowd-acquire-lease",
      text: `UPDATE runs SET owner_node = $2, lease_until = $3, lease_epoch = lease_epoch + 1
              WHERE run_id = $1 AND status NOT IN ('completed', 'error', 'cancelled')
                AND (owner_node IS NULL OR owner_node = $2 OR lease_until < $4)
              RETURNING lease_epoch`,
      values: [runId, this.nodeId, now + this.leaseMs, now],
    });
    return rows[0]?.lease_epoch ?? null;
  }

  /**
   * Extends this node's leases on the runs it holds at `epochs`; returns the runs it no
   * longer holds (taken over meanwhile), and those of the others a cancel was asked for.
   */
  async renew(epochs: ReadonlyMap<string, number>): Promise<{ lost: string[]; cancelRequested: string[] }> {
    if (epochs.size === 0) return { lost: [], cancelRequested: [] };
    // In run id order, as a batch lists the run rows it updates (see PgBatchWriter).
    const runIds = [...epochs.keys()].sort();
    const { rows } = await this.pool.query<{ run_id: string; lease_epoch: number; cancel_requested: boolean }>({
      name: "flowd-renew-leases",
      text: `UPDATE runs SET lease_until = $3
              WHERE run_id = ANY($1::text[]) AND owner_node = $2
              RETURNING run_id, lease_epoch, cancel_requested_at IS NOT NULL AS cancel_requested`,
      values: [runIds, this.nodeId, this.clock() + this.leaseMs],
    });
    const held = new Map(rows.map((row) => [row.run_id, row.lease_epoch]));
    let lost = runIds.filter((runId) => held.get(runId) !== epochs.get(runId));
    if (lost.length > 0) {
      // A run created in a batch not committed yet had no row to renew (and may have one
      // now, held at its first epoch): only a run another node holds, or holds again, is lost.
      const { rows: stored } = await this.pool.query<{ run_id: string; owner_node: string | null; lease_epoch: number }>({
        name: "flowd-lease-holders",
        text: "SELECT run_id, owner_node, lease_epoch FROM runs WHERE run_id = ANY($1::text[])",
        values: [lost],
      });
      lost = stored.filter((row) => row.owner_node !== this.nodeId || row.lease_epoch !== epochs.get(row.run_id)).map((row) => row.run_id);
    }
    const cancelRequested = rows.filter((row) => row.cancel_requested && epochs.get(row.run_id) === row.lease_epoch).map((row) => row.run_id);
    return { lost, cancelRequested };
  }

  /** Gives a run up at once (graceful shutdown: another node may take it without waiting for the lease). */
  async release(runId: string, epoch: number): Promise<void> {
    await this.pool.query({
      name: "flowd-release-lease",
      text: "UPDATE runs SET owner_node = NULL, lease_until = NULL WHERE run_id = $1 AND owner_node = $2 AND lease_epoch = $3",
      values: [runId, this.nodeId, epoch],
    });
  }

  /** When the next lease of another node's unfinished run lapses (epoch ms), or null if none is held. */
  async nextLapse(): Promise<number | null> {
    const { rows } = await this.pool.query<{ next: string | null }>({
      name: "flowd-next-lapse",
      text: `SELECT min(lease_until) AS next FROM runs
              WHERE status NOT IN ('completed', 'error', 'cancelled') AND owner_node IS NOT NULL AND owner_node <> $1 AND lease_until >= $2`,
      values: [this.nodeId, this.clock()],
    });
    const next = rows[0]?.next;
    return next === null || next === undefined ? null : Number(next);
  }

  /**
   * Unfinished runs whose lease has lapsed (their node died) or that no node holds, oldest
   * first. A run that waits holds no node, unless its node was executing a branch of it
   * beside the wait (or ending one of its waits): held and lapsed, it is an orphan too.
   */
  async orphans(limit = 100): Promise<string[]> {
    const { rows } = await this.pool.query<{ run_id: string }>({
      name: "flowd-orphan-runs",
      text: `SELECT run_id FROM runs
              WHERE (status IN ('pending', 'running') AND (owner_node IS NULL OR lease_until < $1))
                 OR (status IN ('waiting', 'paused') AND owner_node IS NOT NULL AND lease_until < $1)
              ORDER BY created_at LIMIT $2`,
      values: [this.clock(), limit],
    });
    return rows.map((row) => row.run_id);
  }
}
