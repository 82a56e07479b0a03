/**
 * The workflow definition API, in AgentOS vocabulary:
 * Workflow, Step, Steps, Parallel, Condition, Loop, Router.
 */
import type { AgentDefinition } from "../agents/agent.ts";
import { Errors } from "../errors.ts";

/** What every step receives. */
export interface StepInput {
  /** The run's input message. */
  readonly message: string;
  /** The previous step's output (the message, for the first step). */
  readonly previousOutput: unknown;
  /** Outputs of the steps completed so far, by step name. */
  readonly outputs: Readonly<Record<string, unknown>>;
  /** `additional_data` given when the run was started. */
  readonly additionalData: unknown;
  readonly runId: string;
  readonly sessionId: string;
  /** This step's stable path in the workflow tree, e.g. "2.0" (useful in idempotency keys). */
  readonly stepPath: string;
  /** 1 on the first execution; higher when the run was resumed after a restart and this step runs again. */
  readonly attempt: number;
  /** Aborted when the run is cancelled or the server shuts down; pass it to fetch() and timers. */
  readonly signal: AbortSignal;
  /**
   * Runs `fn` once for this run: its result (made JSON-safe) is stored, and when the step
   * runs again after a restart, this call returns the stored result instead of running
   * `fn` again. Calls are told apart by their order in the step, so make them in the same
   * order each time. Side effects belong here. Resolves once the result is stored.
   */
  step<T>(name: string, fn: () => T | Promise<T>): Promise<T>;
}

/** A custom event a generator step yields: stored and sent as a `CustomEvent`. */
export interface CustomEventChunk {
  readonly kind: "custom";
  readonly name: string;
  readonly data: unknown;
}

/** What a generator step may yield: text (sent as `RunContent`) or a custom event. */
export type StepChunk = string | CustomEventChunk;

/** A step's function: returns its output, or is an async generator that streams chunks and returns its output. */
export type StepExecutor = (
  input: StepInput,
) => unknown | Promise<unknown> | AsyncGenerator<StepChunk, unknown, undefined>;

/** A leaf step: runs a function, or an LLM agent. */
export type StepNode =
  | { readonly kind: "step"; readonly name: string; readonly executor: StepExecutor; readonly agent?: undefined }
  | { readonly kind: "step"; readonly name: string; readonly agent: AgentDefinition; readonly executor?: undefined };

/** A named sequence of steps. */
export interface StepsNode {
  readonly kind: "steps";
  readonly name: string;
  readonly steps: readonly WorkflowNode[];
}

/** Steps run concurrently on the same input; the output is each branch's output by name. */
export interface ParallelNode {
  readonly kind: "parallel";
  readonly name: string;
  readonly steps: readonly WorkflowNode[];
}

/** Runs `steps` when the evaluator says true, else `elseSteps` (or passes the input through). */
export interface ConditionNode {
  readonly kind: "condition";
  readonly name: string;
  readonly evaluator: (input: StepInput) => boolean | Promise<boolean>;
  readonly steps: readonly WorkflowNode[];
  readonly elseSteps: readonly WorkflowNode[];
}

/** Repeats `steps` until `endCondition` says so or `maxIterations` is reached. */
export interface LoopNode {
  readonly kind: "loop";
  readonly name: string;
  readonly steps: readonly WorkflowNode[];
  readonly maxIterations: number;
  readonly endCondition?: (iterationOutputs: readonly unknown[], input: StepInput) => boolean | Promise<boolean>;
}

/** Picks which of its `choices` to run, by name, from the input. */
export interface RouterNode {
  readonly kind: "router";
  readonly name: string;
  readonly choices: readonly WorkflowNode[];
  readonly selector: (input: StepInput) => string | readonly string[] | Promise<string | readonly string[]>;
}

/** Any node of a workflow tree. */
export type WorkflowNode = StepNode | StepsNode | ParallelNode | ConditionNode | LoopNode | RouterNode;

/** A complete workflow definition. */
export interface WorkflowDefinition {
  readonly kind: "workflow";
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly steps: readonly WorkflowNode[];
}

function requireName(kind: string, name: unknown): string {
  if (typeof name !== "string" || name.trim() === "") {
    throw Errors.invalidWorkflow(`${kind} needs a non-empty "name".`);
  }
  return name;
}

function requireNodes(owner: string, steps: unknown): readonly WorkflowNode[] {
  if (!Array.isArray(steps)) throw Errors.invalidWorkflow(`${owner}: "steps" must be an array of steps.`);
  return steps as readonly WorkflowNode[];
}

/** A leaf step: `Step({ name, executor })` or `Step({ name, agent })`. */
export function Step(options: { name: string; executor: StepExecutor } | { name: string; agent: AgentDefinition }): StepNode {
  const name = requireName("Step", options.name);
  const executor = "executor" in options ? options.executor : undefined;
  const agent = "agent" in options ? options.agent : undefined;
  if ((executor === undefined) === (agent === undefined)) {
    throw Errors.invalidWorkflow(`Step "${name}" needs exactly one of "executor" (a function) or "agent" (made with Agent()).`);
  }
  if (agent !== undefined) {
    if (agent?.kind !== "agent") throw Errors.invalidWorkflow(`Step "${name}": "agent" must be made with Agent({...}).`);
    return { kind: "step", name, agent };
  }
  if (typeof executor !== "function") {
    throw Errors.invalidWorkflow(`Step "${name}": "executor" must be a function.`);
  }
  return { kind: "step", name, executor };
}

/** A named group of steps run in order. */
export function Steps(options: { name: string; steps: readonly WorkflowNode[] }): StepsNode {
  const name = requireName("Steps", options.name);
  return { kind: "steps", name, steps: requireNodes(`Steps "${name}"`, options.steps) };
}

/** Steps run concurrently. */
export function Parallel(options: { name: string; steps: readonly WorkflowNode[] }): ParallelNode {
  const name = requireName("Parallel", options.name);
  return { kind: "parallel", name, steps: requireNodes(`Parallel "${name}"`, options.steps) };
}

/** A branch taken when `evaluator` returns true (`elseSteps` otherwise). */
export function Condition(options: {
  name: string;
  evaluator: ConditionNode["evaluator"] | boolean;
  steps: readonly WorkflowNode[];
  elseSteps?: readonly WorkflowNode[];
}): ConditionNode {
  const name = requireName("Condition", options.name);
  const { evaluator } = options;
  return {
    kind: "condition",
    name,
    evaluator: typeof evaluator === "boolean" ? () => evaluator : evaluator,
    steps: requireNodes(`Condition "${name}"`, options.steps),
    elseSteps: requireNodes(`Condition "${name}" elseSteps`, options.elseSteps ?? []),
  };
}

/** Repeats its steps; `maxIterations` defaults to 3 as in AgentOS. */
export function Loop(options: {
  name: string;
  steps: readonly WorkflowNode[];
  maxIterations?: number;
  endCondition?: LoopNode["endCondition"];
}): LoopNode {
  const name = requireName("Loop", options.name);
  const maxIterations = options.maxIterations ?? 3;
  if (!Number.isInteger(maxIterations) || maxIterations < 1) {
    throw Errors.invalidWorkflow(`Loop "${name}": maxIterations must be a whole number of at least 1.`);
  }
  return {
    kind: "loop",
    name,
    steps: requireNodes(`Loop "${name}"`, options.steps),
    maxIterations,
    ...(options.endCondition ? { endCondition: options.endCondition } : {}),
  };
}

/** Runs the choices the selector names. */
export function Router(options: {
  name: string;
  choices: readonly WorkflowNode[];
  selector: RouterNode["selector"];
}): RouterNode {
  const name = requireName("Router", options.name);
  const choices = requireNodes(`Router "${name}" choices`, options.choices);
  if (typeof options.selector !== "function") {
    throw Errors.invalidWorkflow(`Router "${name}" needs a "selector" function.`);
  }
  return { kind: "router", name, choices, selector: options.selector };
}

/** A workflow: `Workflow({ id, name, description, steps })`. */
export function Workflow(options: {
  id: string;
  name?: string;
  description?: string;
  steps: readonly WorkflowNode[];
}): WorkflowDefinition {
  const id = requireName("Workflow id", options.id);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(id)) {
    throw Errors.invalidWorkflow(`Workflow id "${id}" may only contain letters, digits, ".", "_" and "-" (it appears in URLs).`,
    );
  }
  const steps = requireNodes(`Workflow "${id}"`, options.steps);
  if (steps.length === 0) throw Errors.invalidWorkflow(`Workflow "${id}" has no steps.`);
  return { kind: "workflow", id, name: options.name ?? id, description: options.description ?? "", steps };
}

/** Marks a chunk yielded by a generator step as a custom event. */
export function customEvent(name: string, data: unknown = null): CustomEventChunk {
  return { kind: "custom", name, data };
}
