import type { FlowdError } from "../errors.ts";
import type { EventBatch } from "../protocol/run-events.ts";

/** Receives a run's committed events, a commit's worth at a time, in index order. Must not throw. */
export type EventListener = (batch: EventBatch) => void;

/** Told that a run halted in this process (see EventLog.halt): no more of its events will come. Must not throw. */
export type FailureListener = (error: FlowdError) => void;

/**
 * The in-process live feed, keyed by run id. It holds no history: the log is the
 * buffer, so anything a listener needs from the past it reads from the database.
 */
export class Notifier {
  private readonly listeners = new Map<string, Map<EventListener, FailureListener | undefined>>();

  constructor(private readonly onListenerError: (error: unknown, runId: string) => void) {}

  /**
   * Registers `listener` for events of `runId` committed from now on, and `onFailure` for
   * their end if the run halts; returns the unsubscribe function.
   */
  subscribe(runId: string, listener: EventListener, onFailure?: FailureListener): () => void {
    let followers = this.listeners.get(runId);
    if (!followers) {
      followers = new Map();
      this.listeners.set(runId, followers);
    }
    followers.set(listener, onFailure);
    return () => {
      const current = this.listeners.get(runId);
      if (!current) return;
      current.delete(listener);
      if (current.size === 0) this.listeners.delete(runId);
    };
  }

  /** Hands what a commit added to a run to every listener of it; after the terminal event the run has none left. */
  publish(runId: string, batch: EventBatch): void {
    const followers = this.listeners.get(runId);
    if (!followers) return;
    for (const listener of followers.keys()) {
      try {
        listener(batch);
      } catch (error) {
        this.onListenerError(error, runId);
      }
    }
    if (batch.endsRun) this.listeners.delete(runId);
  }

  /** Whether anyone follows `runId` live. */
  watches(runId: string): boolean {
    return this.listeners.has(runId);
  }

  /** No more events of `runId` will come (see EventLog.halt): tells its listeners why, and drops them. */
  fail(runId: string, error: FlowdError): void {
    const followers = this.listeners.get(runId);
    if (!followers) return;
    this.listeners.delete(runId);
    for (const onFailure of followers.values()) {
      try {
        onFailure?.(error);
      } catch (listenerError) {
        this.onListenerError(listenerError, runId);
      }
    }
  }

  /** How many runs someone follows live. */
  get watchedRunCount(): number {
    return this.listeners.size;
  }
}
