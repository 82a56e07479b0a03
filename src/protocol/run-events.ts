import type { StepRequirement, UserInputField, ExecutorRequirement } from "./hitl.ts";
import { encodeSseEvent } from "./sse.ts";
import { isTerminalEvent } from "./terminal-events.ts";
import { encodeTextFrames } from "./ws-frame.ts";

/**
 * Run events: what the engine emits and the log stores, named as in AgentOS.
 * The body is what the engine supplies; the event log adds the envelope
 * (event_index, run_id, workflow_id, workflow_name, session_id, created_at).
 */

/** Where a step sits in the workflow tree, shared by every step-scoped event. */
export interface StepLocation {
  step_name: string;
  /** Index of the step within its parent (top-level steps: position in the workflow). */
  step_index: number;
  /** Stable path from the workflow root, e.g. "1", "2.0", "3[1].0" (loop iteration 1). */
  step_path: string;
}

/** Every run event body the engine can emit, keyed on `event`. */
export type RunEventBody =
  | { event: "WorkflowStarted"; input: string }
  | { event: "WorkflowCompleted"; content: unknown; duration_ms: number }
  | { event: "WorkflowError"; error: string; step_name?: string }
  | { event: "WorkflowCancelled"; reason: string }
  | {
      event: "WorkflowResumed";
      /** 2 for the first resume, 3 for the second, … */
      attempt: number;
      /** False when a graceful shutdown paused the run; true after a crash. */
      after_crash: boolean;
      /** The step that runs again from its start (null if the run stopped between steps). */
      resume_step_name: string | null;
      resume_step_path: string | null;
      /** Completed steps whose stored outputs are reused instead of running them again. */
      restored_steps: number;
      /** Index range of the interrupted step's partial events, which this attempt supersedes. */
      superseded_from_index: number | null;
      superseded_to_index: number | null;
    }
  | ({ event: "StepStarted" } & StepLocation)
  | ({ event: "StepCompleted"; content: unknown; duration_ms: number } & StepLocation)
  | ({ event: "StepError"; error: string; duration_ms: number } & StepLocation)
  | ({ event: "StepOutput"; content: unknown } & StepLocation)
  | ({ event: "RunContent"; content: string; agent_run_id?: string } & StepLocation)
  /** Never emitted by a run: what compaction (FLOWD_COMPACT_AFTER) stores in place of RunContent deltas, at the first one's index. */
  | ({ event: "RunContentCompacted"; content: string; agent_run_id?: string; compacted_to_index: number } & StepLocation)
  | ({ event: "RunStarted"; agent_name: string; agent_run_id: string; model: string } & StepLocation)
  | ({
      event: "RunCompleted";
      agent_name: string;
      agent_run_id: string;
      model: string;
      content: string;
      usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
      time_to_first_token_ms: number | null;
      duration_ms: number;
    } & StepLocation)
  | ({ event: "RunError"; agent_name: string; agent_run_id: string; error: string; duration_ms: number } & StepLocation)
  | ({ event: "ToolCallStarted"; agent_run_id: string; tool_call_id: string; tool_name: string; tool_args: unknown } & StepLocation)
  | ({
      event: "ToolCallCompleted";
      agent_run_id: string;
      tool_call_id: string;
      tool_name: string;
      tool_args: unknown;
      result: unknown;
      error: string | null;
      duration_ms: number;
    } & StepLocation)
  | ({ event: "CustomEvent"; name: string; data: unknown } & StepLocation)
  | ({ event: "SubStepCompleted"; sub_step_name: string; sub_step_key: string; content: unknown; duration_ms: number } & StepLocation)
  | ({
      event: "StepPaused";
      step_id: string;
      requires_confirmation: boolean;
      confirmation_message: string | null;
      requires_user_input: boolean;
      user_input_message: string | null;
      user_input_schema?: UserInputField[];
      /** flowd's `onError: "pause"`: the step failed and a person decides `retry` or `skip`. */
      requires_error_decision?: true;
      error_message?: string;
    } & StepLocation)
  | ({
      event: "RouterPaused";
      available_choices: string[];
      user_input_message: string | null;
      allow_multiple_selections: boolean;
    } & StepLocation)
  | ({
      event: "StepExecutorPaused";
      step_id: string;
      executor_name: string;
      executor_run_id: string;
      executor_type: "agent";
      executor_requirements: ExecutorRequirement[];
    } & StepLocation)
  | {
      event: "WorkflowPaused";
      status: "paused";
      paused_step_index: number;
      paused_step_name: string;
      paused_step_path: string;
      pause_kind: "step" | "executor";
      /** Every requirement of the run so far; the last one is open. */
      step_requirements: StepRequirement[];
      /** When the pause ends by itself (`hitlTimeoutMs`), in epoch ms; null if never. */
      timeout_at: number | null;
    }
  | ({
      event: "StepContinued";
      step_id: string;
      confirmed?: boolean;
      user_input?: Record<string, unknown> | null;
      selected_choices?: string[] | null;
      decision?: string;
      /** True when no one answered in time and `onTimeout` decided. */
      timed_out: boolean;
    } & StepLocation)
  | ({
      event: "StepExecutorContinued";
      step_id: string;
      executor_name: string;
      executor_run_id: string;
      executor_type: "agent";
      tool_call_id: string;
      confirmed: boolean;
      timed_out: boolean;
    } & StepLocation)
  | ({ event: "StepSkipped"; reason: string } & StepLocation)
  | ({
      event: "WaitStarted";
      wait_kind: "timer" | "signal";
      /** The durable call this is (`<step_path>~<n>`, or `<step_path>!retry<n>` for a retry's delay). */
      wait_key: string;
      wake_at?: number;
      signal_name?: string;
      timeout_at?: number | null;
    } & StepLocation)
  | ({
      event: "WaitCompleted";
      wait_kind: "timer" | "signal";
      wait_key: string;
      timed_out: boolean;
      payload?: unknown;
    } & StepLocation)
  | ({
      event: "StepRetrying";
      /** The attempt that failed (1 for the first). */
      attempt: number;
      max_retries: number;
      error: string;
      delay_ms: number;
      /** Index range of the failed attempt's events, which the next attempt supersedes. */
      superseded_from_index: number | null;
      superseded_to_index: number | null;
    } & StepLocation)
  | ({ event: "StepsExecutionStarted"; steps_count: number } & StepLocation)
  | ({ event: "StepsExecutionCompleted"; steps_executed: number; duration_ms: number } & StepLocation)
  | ({ event: "ParallelExecutionStarted"; parallel_step_count: number } & StepLocation)
  | ({ event: "ParallelExecutionCompleted"; parallel_step_count: number; duration_ms: number } & StepLocation)
  | ({ event: "ConditionExecutionStarted"; condition_result: boolean } & StepLocation)
  | ({ event: "ConditionExecutionCompleted"; condition_result: boolean; executed_steps: number; duration_ms: number } & StepLocation)
  | ({ event: "LoopExecutionStarted"; max_iterations: number } & StepLocation)
  | ({ event: "LoopIterationStarted"; iteration: number; max_iterations: number } & StepLocation)
  | ({ event: "LoopIterationCompleted"; iteration: number; max_iterations: number; content: unknown } & StepLocation)
  | ({ event: "LoopExecutionCompleted"; total_iterations: number; max_iterations: number; duration_ms: number } & StepLocation)
  | ({ event: "RouterExecutionStarted"; selected_steps: string[] } & StepLocation)
  | ({ event: "RouterExecutionCompleted"; selected_steps: string[]; executed_steps: number; duration_ms: number } & StepLocation);

/** The name of a run event. */
export type RunEventName = RunEventBody["event"];

/** A committed event as the log hands it out: the frame is serialized once and sent as-is. */
export class CommittedEvent {
  constructor(
    readonly runId: string,
    readonly index: number,
    /** A run event's name, or "gap": a notice that the indices up to this one no longer exist (compaction). */
    readonly event: RunEventName | "gap",
    /** The JSON text of the frame: stored in `events.payload` and sent to every subscriber. */
    readonly frame: string,
  ) {}
}

/**
 * Consecutive events of one run, in index order, as a subscriber is sent them: what one
 * commit added (live), or a page read from the log (catch-up). Their frames are encoded
 * once, into one buffer, however many subscribers get them: each subscriber gets one
 * write per commit, not one per event.
 */
export class EventBatch {
  private ws: Buffer | null = null;
  private sse: Buffer | null = null;

  /** `events` is not empty. */
  constructor(readonly events: readonly CommittedEvent[]) {}

  get last(): CommittedEvent {
    return this.events[this.events.length - 1]!;
  }

  /** The run's terminal event is in it (it is always the run's last). */
  get endsRun(): boolean {
    return isTerminalEvent(this.last.event);
  }

  /** The WebSocket frames (headers and UTF-8 text), back to back. */
  wsFrames(): Buffer {
    this.ws ??= encodeTextFrames(this.events.map((event) => event.frame));
    return this.ws;
  }

  /** The SSE messages (`id`, `event`, `data`), back to back. */
  sseBytes(): Buffer {
    this.sse ??= Buffer.from(this.events.map((event) => encodeSseEvent(event.index, event.event, event.frame)).join(""));
    return this.sse;
  }

  /** The events that pass `keep` (this batch itself if all do), or null if none does. */
  filter(keep: (event: CommittedEvent) => boolean): EventBatch | null {
    const kept = this.events.filter(keep);
    if (kept.length === this.events.length) return this;
    return kept.length > 0 ? new EventBatch(kept) : null;
  }
}

export { TERMINAL_EVENTS, isTerminalEvent } from "./terminal-events.ts";
