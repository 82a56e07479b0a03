import type { FlowdError } from "../errors.ts";
import type { EventBatch } from "../protocol/run-events.ts";

/**
 * Someone following a run (see EventLog.follow). It gets the run's committed events in
 * index order, a commit's worth at a time, and then exactly one of `ended` or `failed`,
 * unless it stops first. All three are required, so that no follower can forget how a
 * run ends and wait for ever. None may throw.
 */
export interface RunFollower {
  events(batch: EventBatch): void;
  /** The run's terminal event has been delivered, or was at or before the index followed from. */
  ended(): void;
  /** No more of the run's events will come from this server (see EventLog.halt): why, and what to do. */
  failed(error: FlowdError): void;
}

/**
 * The in-process live feed, keyed by run id. It holds no history: the log is the
 * buffer, so anything a follower needs from the past it reads from the database.
 */
export class Notifier {
  private readonly followers = new Map<string, Set<RunFollower>>();

  constructor(private readonly onFollowerError: (error: unknown, runId: string) => void) {}

  /** Registers `follower` for events of `runId` committed from now on; returns the unsubscribe function. */
  subscribe(runId: string, follower: RunFollower): () => void {
    let followers = this.followers.get(runId);
    if (!followers) {
      followers = new Set();
      this.followers.set(runId, followers);
    }
    followers.add(follower);
    const own = followers;
    return () => {
      own.delete(follower);
      if (own.size === 0 && this.followers.get(runId) === own) this.followers.delete(runId);
    };
  }

  /** Hands what a commit added to a run to every follower of it; after the terminal event the run has none left. */
  publish(runId: string, batch: EventBatch): void {
    const followers = this.followers.get(runId);
    if (!followers) return;
    if (batch.endsRun) this.followers.delete(runId);
    // A snapshot: one who starts following during this loop read these events from the log already.
    for (const follower of [...followers]) {
      // Stopped during this loop (by another follower's callback, say).
      if (!followers.has(follower)) continue;
      this.call(runId, () => follower.events(batch));
      // Not if it stopped on that batch (a backed-up feed re-reads the end from the log).
      if (batch.endsRun && followers.has(follower)) this.call(runId, () => follower.ended());
    }
  }

  /** Whether anyone follows `runId` live. */
  watches(runId: string): boolean {
    return this.followers.has(runId);
  }

  /** No more events of `runId` will come (see EventLog.halt): tells its followers why, and drops them. */
  fail(runId: string, error: FlowdError): void {
    const followers = this.followers.get(runId);
    if (!followers) return;
    this.followers.delete(runId);
    for (const follower of followers) this.call(runId, () => follower.failed(error));
  }

  /** How many runs someone follows live. */
  get watchedRunCount(): number {
    return this.followers.size;
  }

  private call(runId: string, deliver: () => void): void {
    try {
      deliver();
    } catch (error) {
      this.onFollowerError(error, runId);
    }
  }
}
