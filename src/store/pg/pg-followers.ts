import type pg from "pg";
import { Errors, FlowdError, errorMessage } from "../../errors.ts";
import { EventBatch } from "../../protocol/run-events.ts";
import { isFinished, type RunStatus } from "../../protocol/run-status.ts";
import type { RunFollower } from "../notifier.ts";
import { inlineEvents, type CommitNotice } from "./commit-listener.ts";
import { readPgPage } from "./pg-page-read.ts";

/** Events read per query while a follower catches up. */
const READ_PAGE = 1000;

interface Following {
  runId: string;
  follower: RunFollower;
  /** The index of the last event delivered (-1: none). */
  delivered: number;
  /** A commit was announced while a read was under way: read again after it. */
  dirty: boolean;
  reading: boolean;
  stopped: boolean;
  /** The run's row is in a batch not yet committed: not finding it is no error (its commit wakes the follower). */
  created: boolean;
}

/** How a follow starts. */
export interface FollowOptions {
  /** The run was created on this node and its row is not committed yet. */
  created?: boolean;
  /** The run halted on this node (its events cannot be stored): what its followers are told after what is stored. */
  halted?: FlowdError | undefined;
}

/**
 * Following runs on PostgreSQL, where commits happen on any node and reads are
 * asynchronous. Each follower gets every event after the index it follows from exactly
 * once, in order, then `ended` (or `failed`).
 *
 * Why there is no gap or duplicate at the catch-up → live handoff (I3), with an
 * asynchronous database and commits on other nodes:
 * 1. The follower is registered for commit notices before its first read starts.
 * 2. Every read is a range read by index after the last index delivered, so an event is
 *    delivered only once (the watermark only moves forward), and in index order.
 * 3. A commit that completed before a read's statement began is visible to it (READ
 *    COMMITTED takes its snapshot per statement). A commit that completes later sends its
 *    notice after it completes (PostgreSQL delivers NOTIFY at commit), so the notice reaches
 *    this node after the commit, while the follower is registered (1): it marks the
 *    follower to read again, and that read, a new statement, sees the commit.
 * 4. A notice that arrives during a read is not lost: it marks the follower dirty, and the
 *    read loop reads again before it rests.
 * 5. Notices sent while this node's LISTEN connection was down are lost: `reread()` makes
 *    every follower read again once it is back.
 * 6. Events handed over without a read (this node's own commits, or those that came along
 *    with a notice) are exactly a committed range of the run; they go only to a follower
 *    not reading and exactly up to their first index, so the watermark argument of (2)
 *    holds for them as for a read.
 * 7. A run created on this node and not committed yet has nothing stored, and only this
 *    node can commit its events (no other node knows the run before its first commit,
 *    which makes this node its holder): its followers start without a read and get its
 *    commits as in (6), or this node's failure to commit it (`fail`).
 * So every committed event is read by some read that starts after it commits, and none
 * twice.
 */
export class PgFollowers {
  private readonly byRun = new Map<string, Set<Following>>();

  constructor(
    private readonly pool: pg.Pool,
    /** A follower threw (none should): reported, and the others go on. */
    private readonly onFollowerError: (error: unknown, runId: string) => void = () => {},
  ) {}

  /** Calls a follower; what it throws is reported, never passed to the caller (a commit, a read loop). */
  private call(following: Following, deliver: (follower: RunFollower) => void): void {
    try {
      deliver(following.follower);
    } catch (error) {
      this.onFollowerError(error, following.runId);
    }
  }

  /** Follows a run from after `afterIndex` (-1: from the start); returns the function that stops following. */
  follow(runId: string, afterIndex: number, follower: RunFollower, options: FollowOptions = {}): () => void {
    const following: Following = { runId, follower, delivered: afterIndex, dirty: false, reading: false, stopped: false, created: options.created ?? false };
    if (options.halted) {
      // Nothing more comes from this node: what is stored, then why.
      const halted = options.halted;
      void this.pumpThenFail(following, halted);
      return () => {
        following.stopped = true;
      };
    }
    // (1) Registered before the first read.
    let set = this.byRun.get(runId);
    if (!set) {
      set = new Set();
      this.byRun.set(runId, set);
    }
    set.add(following);
    // (7) Nothing of a run not committed yet is stored to read.
    if (!following.created) void this.pump(following, true);
    return () => this.stop(following);
  }

  /**
   * A commit of the run's events up to `lastIndex`, announced by any node (CommitListener).
   * Events that came along with the notice are handed to followers exactly up to them
   * (as this node's own commits are); the others read what they miss.
   */
  onCommit(notice: CommitNotice): void {
    const set = this.byRun.get(notice.runId);
    if (!set) return;
    let batch: EventBatch | null | undefined;
    for (const following of [...set]) {
      if (following.stopped || notice.lastIndex <= following.delivered) continue;
      if (batch === undefined) {
        const events = inlineEvents(notice);
        batch = events ? new EventBatch(events) : null;
      }
      if (batch && !following.reading && following.delivered === batch.events[0]!.index - 1) this.deliverCommitted(following, batch);
      else this.wake(following);
    }
  }

  /**
   * This node's own commit of a run's events: handed straight to followers that are
   * exactly up to it (no read needed); the others read what they miss.
   */
  committed(batch: EventBatch): void {
    const set = this.byRun.get(batch.events[0]!.runId);
    if (!set) return;
    const first = batch.events[0]!.index;
    for (const following of [...set]) {
      if (following.stopped) continue;
      if (!following.reading && following.delivered === first - 1) {
        this.deliverCommitted(following, batch);
      } else if (batch.last.index > following.delivered) {
        this.wake(following);
      }
    }
  }

  /** Hands a follower a committed batch that starts right after its watermark. */
  private deliverCommitted(following: Following, batch: EventBatch): void {
    following.delivered = batch.last.index;
    this.call(following, (follower) => follower.events(batch));
    if (batch.endsRun && !following.stopped) this.end(following, null);
  }

  /** Whether anyone follows the run on this node. */
  watches(runId: string): boolean {
    return this.byRun.has(runId);
  }

  /** No more of the run's events will come from this node: its followers are told why. */
  fail(runId: string, error: FlowdError): void {
    for (const following of [...(this.byRun.get(runId) ?? [])]) this.end(following, error);
  }

  /** Notices may have been lost (the LISTEN connection dropped): every follower reads again. */
  reread(): void {
    for (const set of this.byRun.values()) for (const following of set) this.wake(following);
  }

  /** How many followers there are. */
  get count(): number {
    let count = 0;
    for (const set of this.byRun.values()) count += set.size;
    return count;
  }

  private wake(following: Following): void {
    following.dirty = true;
    if (!following.reading) void this.pump(following, false);
  }

  private stop(following: Following): void {
    following.stopped = true;
    const set = this.byRun.get(following.runId);
    set?.delete(following);
    if (set?.size === 0) this.byRun.delete(following.runId);
  }

  /** Reads and delivers what was committed after the watermark, until nothing is left and no notice came meanwhile (4). */
  private async pump(following: Following, first: boolean): Promise<void> {
    following.reading = true;
    try {
      let checkedRun = !first;
      do {
        following.dirty = false;
        const stored = await this.deliverStored(following);
        if (stored === "stopped") return;
        if (stored === "ended") return this.end(following, null);
        if (!checkedRun) {
          // The first read found the run's end at or before the index followed from, or no run at all.
          checkedRun = true;
          const { rows } = await this.pool.query<{ status: RunStatus }>({
            name: "flowd-follow-run",
            text: "SELECT status FROM runs WHERE run_id = $1",
            values: [following.runId],
          });
          if (following.stopped) return;
          const run = rows[0];
          if (!run && following.created) {
            checkedRun = false;
            continue;
          }
          if (!run) return this.end(following, Errors.runNotFound(following.runId));
          if (isFinished(run.status)) {
            // Committed after the read above, the end is still to be read: read again.
            following.dirty = true;
            const { rows: after } = await this.pool.query<{ n: number }>({
              name: "flowd-follow-after",
              text: "SELECT count(*)::int AS n FROM events WHERE run_id = $1 AND event_index > $2",
              values: [following.runId, following.delivered],
            });
            if (following.stopped) return;
            if (after[0]?.n === 0) return this.end(following, null);
          }
        }
      } while (following.dirty && !following.stopped);
    } catch (error) {
      if (!following.stopped) this.end(following, error instanceof FlowdError ? error : Errors.databaseUnreadable(new Error(errorMessage(error))));
    } finally {
      following.reading = false;
    }
  }

  /** Delivers what is stored after the follower's index: how that ended. */
  private async deliverStored(following: Following): Promise<"ended" | "stopped" | "caught-up"> {
    for (;;) {
      const page = await readPgPage(this.pool, following.runId, following.delivered, READ_PAGE);
      if (following.stopped) return "stopped";
      if (!page) return "caught-up";
      following.delivered = page.batch.last.index;
      this.call(following, (follower) => follower.events(page.batch));
      if (page.batch.endsRun) return "ended";
      if (!page.full) return "caught-up";
    }
  }

  /** Delivers what is stored after the follower's index, then `failed` with `reason`. */
  private async pumpThenFail(following: Following, reason: FlowdError): Promise<void> {
    try {
      const stored = await this.deliverStored(following);
      if (stored === "ended") this.call(following, (follower) => follower.ended());
      else if (stored === "caught-up") this.call(following, (follower) => follower.failed(reason));
    } catch (error) {
      if (!following.stopped) this.call(following, (follower) => follower.failed(error instanceof FlowdError ? error : Errors.databaseUnreadable(new Error(errorMessage(error)))));
    }
  }

  private end(following: Following, error: FlowdError | null): void {
    this.stop(following);
    if (error) this.call(following, (follower) => follower.failed(error));
    else this.call(following, (follower) => follower.ended());
  }
}
