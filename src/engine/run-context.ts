import type { Context } from "@opentelemetry/api";
import type { ModelProvider } from "../agents/model-provider.ts";
import type { RunEventBody } from "../protocol/run-events.ts";
import type { StepRequirement } from "../protocol/hitl.ts";
import type { Checkpoint, StoredSignal } from "../store/store.ts";
import type { RunSuspended } from "./interruption.ts";
import type { WaitRecord } from "./waits.ts";

/** What the step runner needs from the run it executes. */
export interface RunContext {
  readonly runId: string;
  readonly sessionId: string;
  readonly message: string;
  readonly additionalData: unknown;
  /** The run's span (OpenTelemetry): its steps' spans are its children. */
  readonly trace: Context;
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
  /**
   * Appends an event to the run's log, with the checkpoint it completes, if any (committed
   * with the next group commit), and the kept signal it consumes, if any. A start event
   * this attempt already sent (the run goes on after a wait) is not sent again.
   */
  emit(body: RunEventBody, checkpoint?: Checkpoint, consumesSignal?: number): void;
  /** Whether this attempt already sent the start event with this key (see startKey): the run goes on after a wait. */
  hasStarted(key: string): boolean;
  /** Opens a wait: appends `events` (the last one with the stored wait) and registers it; returns what to throw. */
  openWait(key: string, record: WaitRecord, events: readonly RunEventBody[]): RunSuspended;
  /** Suspends again on a wait an earlier execution opened: nothing is appended. */
  resumeWait(key: string, record: WaitRecord): RunSuspended;
  /** Takes the oldest signal kept for `name`, claimed until the write that consumes it commits. */
  takeSignal(name: string): Promise<StoredSignal | undefined>;
  /** How many times signals were kept for this run so far: a wait about to open reads the mailbox again if it changed. */
  signalsKept(): number;
  /** The requirements people resolved so far in this run, in order (WorkflowPaused lists them). */
  resolvedRequirements(): StepRequirement[];
  /** Once committed: the index of the step's latest StepStarted and of the run's latest event (a retry's superseded range). */
  attemptRange(stepPath: string): Promise<{ from: number | null; to: number | null }>;
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
