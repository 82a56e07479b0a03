import type { RunEvent } from "../client/index.ts";

/** A step of the run as its events tell it. */
export interface StepView {
  path: string;
  name: string;
  /** 0 for top-level steps; one more per level of nesting (`2.0`, `3[1].0`). */
  depth: number;
  status: "running" | "completed" | "error" | "skipped" | "paused" | "waiting" | "retrying";
  firstIndex: number;
  durationMs: number | null;
  detail: string | null;
}

/** A piece of streamed text, with the index of the event that carried it. */
export interface TextPiece {
  index: number;
  text: string;
}

/** The text one agent run (or one function step) streamed, assembled in order. */
export interface StreamView {
  key: string;
  stepPath: string;
  stepName: string;
  /** The agent's name and model, or null for a function step's own stream. */
  agent: { name: string; model: string } | null;
  pieces: TextPiece[];
  status: "streaming" | "completed" | "error";
  /** The pieces as runs of text all superseded or all current (see RunModel.segmentsOf). */
  segments: Segment[];
  /** How many superseded ranges `segments` took into account. */
  segmentsFor: number;
}

/** Consecutive pieces of a stream that are all superseded, or all current. */
export interface Segment {
  superseded: boolean;
  text: string;
  /** The index of its first piece. */
  first: number;
}

export interface ToolCallView {
  id: string;
  name: string;
  stepPath: string;
  args: unknown;
  result: unknown;
  error: string | null;
  durationMs: number | null;
  index: number;
}

/** A superseded range, and the event that replaced it. */
export interface SupersededView {
  from: number;
  to: number;
  by: "WorkflowResumed" | "StepRetrying";
  at: number;
}

/** What the run page shows, built up event by event. */
export class RunModel {
  readonly events: RunEvent[] = [];
  readonly steps = new Map<string, StepView>();
  readonly streams = new Map<string, StreamView>();
  readonly toolCalls = new Map<string, ToolCallView>();
  readonly superseded: SupersededView[] = [];
  /** The open pause (its `WorkflowPaused`), or null once it was answered. */
  pause: Extract<RunEvent, { event: "WorkflowPaused" }> | null = null;
  /** The run's last terminal event, once it came. */
  terminal: Extract<RunEvent, { event: "WorkflowCompleted" | "WorkflowError" | "WorkflowCancelled" }> | null = null;
  /** Bumped on every change: what the page compares to know it has to render again. */
  version = 0;

  isSuperseded(index: number): boolean {
    return this.superseded.some((range) => index >= range.from && index <= range.to);
  }

  /** Applies the run's next event (index = events.length). */
  apply(event: RunEvent): void {
    this.events.push(event);
    this.version += 1;
    switch (event.event) {
      case "StepStarted":
        this.steps.set(event.step_path, {
          path: event.step_path,
          name: event.step_name,
          depth: depthOf(event.step_path),
          status: "running",
          firstIndex: this.steps.get(event.step_path)?.firstIndex ?? event.event_index,
          durationMs: null,
          detail: null,
        });
        return;
      case "StepCompleted":
        this.updateStep(event.step_path, event.step_name, { status: "completed", durationMs: event.duration_ms }, event.event_index);
        this.endStepStream(event.step_path, "completed");
        return;
      case "StepError":
        this.updateStep(event.step_path, event.step_name, { status: "error", durationMs: event.duration_ms, detail: event.error }, event.event_index);
        this.endStepStream(event.step_path, "error");
        return;
      case "StepSkipped":
        this.updateStep(event.step_path, event.step_name, { status: "skipped", detail: event.reason }, event.event_index);
        return;
      case "StepRetrying":
        this.updateStep(event.step_path, event.step_name, { status: "retrying", detail: `attempt ${event.attempt} failed: ${event.error}` }, event.event_index);
        this.supersede(event.superseded_from_index, event.superseded_to_index, "StepRetrying", event.event_index);
        return;
      case "StepPaused":
      case "RouterPaused":
      case "StepExecutorPaused":
        this.updateStep(event.step_path, event.step_name, { status: "paused" }, event.event_index);
        return;
      case "WaitStarted":
        this.updateStep(event.step_path, event.step_name, { status: "waiting", detail: event.wait_kind === "signal" ? `waits for signal "${event.signal_name ?? ""}"` : "sleeps" }, event.event_index);
        return;
      case "WaitCompleted":
      case "StepContinued":
      case "StepExecutorContinued":
        this.updateStep(event.step_path, event.step_name, { status: "running", detail: null }, event.event_index);
        if (event.event !== "WaitCompleted") this.pause = null;
        return;
      case "ParallelExecutionStarted":
      case "ConditionExecutionStarted":
      case "LoopExecutionStarted":
      case "RouterExecutionStarted":
      case "StepsExecutionStarted":
        this.updateStep(event.step_path, event.step_name, { status: "running" }, event.event_index);
        return;
      case "ParallelExecutionCompleted":
      case "ConditionExecutionCompleted":
      case "LoopExecutionCompleted":
      case "RouterExecutionCompleted":
      case "StepsExecutionCompleted":
        this.updateStep(event.step_path, event.step_name, { status: "completed", durationMs: event.duration_ms }, event.event_index);
        return;
      case "RunStarted":
        this.streams.set(event.agent_run_id, { key: event.agent_run_id, stepPath: event.step_path, stepName: event.step_name, agent: { name: event.agent_name, model: event.model }, pieces: [], status: "streaming", segments: [], segmentsFor: this.superseded.length });
        return;
      case "RunContentCompacted":
      case "RunContent": {
        const key = event.agent_run_id ?? `step:${event.step_path}`;
        let stream = this.streams.get(key);
        if (!stream) {
          stream = { key, stepPath: event.step_path, stepName: event.step_name, agent: null, pieces: [], status: "streaming", segments: [], segmentsFor: this.superseded.length };
          this.streams.set(key, stream);
        }
        stream.pieces.push({ index: event.event_index, text: event.content });
        // A new piece is current (ranges name earlier events): it joins the last segment, or starts one.
        const last = stream.segments.at(-1);
        if (last && !last.superseded) last.text += event.content;
        else stream.segments.push({ superseded: false, text: event.content, first: event.event_index });
        return;
      }
      case "RunCompleted":
      case "RunError": {
        const stream = this.streams.get(event.agent_run_id);
        if (stream) stream.status = event.event === "RunCompleted" ? "completed" : "error";
        return;
      }
      case "ToolCallStarted":
        this.toolCalls.set(event.tool_call_id, { id: event.tool_call_id, name: event.tool_name, stepPath: event.step_path, args: event.tool_args, result: undefined, error: null, durationMs: null, index: event.event_index });
        return;
      case "ToolCallCompleted": {
        const call = this.toolCalls.get(event.tool_call_id);
        const base = call ?? { id: event.tool_call_id, name: event.tool_name, stepPath: event.step_path, args: event.tool_args, index: event.event_index };
        this.toolCalls.set(event.tool_call_id, { ...base, result: event.result, error: event.error, durationMs: event.duration_ms });
        return;
      }
      case "WorkflowPaused":
        this.pause = event;
        return;
      case "WorkflowResumed":
        this.supersede(event.superseded_from_index, event.superseded_to_index, "WorkflowResumed", event.event_index);
        return;
      case "WorkflowCompleted":
      case "WorkflowError":
      case "WorkflowCancelled":
        this.terminal = event;
        this.pause = null;
        return;
      default:
        return;
    }
  }

  private updateStep(path: string, name: string, change: Partial<StepView>, index: number): void {
    const step = this.steps.get(path) ?? { path, name, depth: depthOf(path), status: "running", firstIndex: index, durationMs: null, detail: null };
    this.steps.set(path, { ...step, ...change });
  }

  /** A function step's own stream ends with its step. */
  private endStepStream(path: string, status: StreamView["status"]): void {
    const stream = this.streams.get(`step:${path}`);
    if (stream) stream.status = status;
  }

  private supersede(from: number | null, to: number | null, by: SupersededView["by"], at: number): void {
    if (from !== null && to !== null) this.superseded.push({ from, to, by, at });
  }

  /** A stream's text in segments, recomputed only when a superseded range came since: a few DOM nodes, however many pieces. */
  segmentsOf(stream: StreamView): Segment[] {
    if (stream.segmentsFor !== this.superseded.length) {
      const segments: Segment[] = [];
      for (const piece of stream.pieces) {
        const superseded = this.isSuperseded(piece.index);
        const last = segments.at(-1);
        if (last && last.superseded === superseded) last.text += piece.text;
        else segments.push({ superseded, text: piece.text, first: piece.index });
      }
      stream.segments = segments;
      stream.segmentsFor = this.superseded.length;
    }
    return stream.segments;
  }

  /** A stream's text without what was superseded: what the run's output is made of. */
  currentText(stream: StreamView): string {
    return stream.pieces
      .filter((piece) => !this.isSuperseded(piece.index))
      .map((piece) => piece.text)
      .join("");
  }
}

/** How deep a step path is: `1` → 0, `2.0` → 1, `3[1].0.2` → 2. */
function depthOf(path: string): number {
  return path.split(".").length - 1;
}
