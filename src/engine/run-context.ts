import type { ModelProvider } from "../agents/model-provider.ts";
import type { RunEventBody } from "../protocol/run-events.ts";
import type { Checkpoint } from "../store/event-log.ts";

/** What the step runner needs from the run it executes. */
export interface RunContext {
  readonly runId: string;
  readonly sessionId: string;
  readonly message: string;
  readonly additionalData: unknown;
  /** 1 for a fresh run, 2 after the first resume, … */
  readonly attempt: number;
  /** Aborted to stop the run at its next content boundary (cancel, or a shutdown that ran out of patience). */
  readonly signal: AbortSignal;
  /** True while the server drains: the run stops at its next step boundary. */
  isDraining(): boolean;
  /** Outputs of completed steps by name; the runner fills it. */
  readonly outputs: Record<string, unknown>;
  /** Checkpoints of an earlier attempt, by path: those nodes are not run again. */
  readonly restored: ReadonlyMap<string, unknown>;
  /** The model each agent step talks to. */
  readonly models: ModelProvider;
  /** Appends an event to the run's log, with the checkpoint it completes, if any (committed with the next group commit). */
  emit(body: RunEventBody, checkpoint?: Checkpoint): void;
  /**
   * Before user code runs (a step, an evaluator, a selector): null if every checkpoint
   * this run emitted is committed, else a promise that resolves once it is, so that
   * nothing acts on an outcome a crash could still lose (I8). Rejects with RunInterrupted
   * if it cannot be stored.
   */
  settled(): Promise<void> | null;
  /** A promise to await when the run has had its share of this turn (see EventLog.yieldTurn), else null. */
  breathe(): Promise<void> | null;
}
