/**
 * The workflow definition API, in AgentOS vocabulary:
 * Workflow, Step, Steps, Parallel, Condition, Loop, Router.
 */
import { z } from "zod";
import type { AgentDefinition } from "../agents/agent.ts";
import { DURATION_FORMAT, parseDuration } from "../config.ts";
import { Errors } from "../errors.ts";

/** Thrown by a step to fail at once, without the retries its `maxRetries` allows. */
export class NonRetryableError extends Error {
  override readonly name = "NonRetryableError";
}

/** By name too: workflow code may load its own copy of this module (another build of flowd, the sources). */
export function isNonRetryable(error: unknown): boolean {
  return error instanceof NonRetryableError || (error instanceof Error && error.name === "NonRetryableError");
}

/** What `input.waitForSignal` resolves to: the signal's payload, or that its timeout passed first. */
export type SignalOutcome<T = unknown> = { timedOut: false; payload: T } | { timedOut: true; payload?: undefined };

/** Options of `input.waitForSignal`. */
export interface WaitForSignalOptions<T> {
  /** Ends the wait with `{ timedOut: true }` after this long (a durable timer). */
  timeoutMs?: number;
  /** A zod schema the payload must match; a signal that does not is refused with 422. */
  schema?: z.ZodType<T>;
}

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
  /**
   * Waits `ms` on a timer stored in the database: the run lets go of its execution and
   * goes on at the stored time, after a restart too (at once if that time has passed).
   * The step then runs again from its top: earlier durable calls return their stored
   * outcomes, and events it sent before the wait are not sent again.
   */
  sleep(ms: number): Promise<void>;
  /** Like `sleep`, until a point in time. */
  sleepUntil(date: Date | number): Promise<void>;
  /**
   * Waits for a signal named `name` (REST `POST /runs/{run_id}/signals/{name}`, WebSocket
   * `signal-workflow`, `flowd runs signal`). A signal sent before the wait is kept and
   * taken here, oldest first.
   */
  waitForSignal<T = unknown>(name: string, options?: WaitForSignalOptions<T>): Promise<SignalOutcome<T>>;
  /** What a person entered when the step asked for input (`requiresUserInput`), else null. */
  readonly userInput: Readonly<Record<string, unknown>> | null;
}

/**
 * Asks a person before the step runs: to confirm it, or to fill in fields
 * (AgentOS's human-in-the-loop options). The run pauses until someone continues it.
 */
export interface HumanInputOptions {
  requiresConfirmation?: boolean;
  confirmationMessage?: string;
  /** What a rejection does: skip the step (default), cancel the run, or (a Condition) take the else branch. */
  onReject?: "skip" | "cancel" | "else";
  requiresUserInput?: boolean;
  userInputMessage?: string;
  /** The fields to ask for, as a zod object; the step reads the answer as `input.userInput`. */
  userInputSchema?: z.ZodObject;
  /** How long the run stays paused before `onTimeout` decides (a durable timer). */
  hitlTimeoutMs?: number;
  /** What happens when no one answers in time: cancel the run (default), skip the step, or approve it. */
  onTimeout?: "cancel" | "skip" | "approve";
}

/** The human-input options of a node, checked. */
export interface HumanInput {
  readonly requiresConfirmation: boolean;
  readonly confirmationMessage: string | null;
  readonly onReject: "skip" | "cancel" | "else";
  readonly requiresUserInput: boolean;
  readonly userInputMessage: string | null;
  readonly userInputSchema: z.ZodObject | null;
  readonly timeoutMs: number | null;
  readonly onTimeout: "cancel" | "skip" | "approve";
}

/** A step's retry options (DESIGN §9). */
export interface RetryOptions {
  /** Attempts after the first (default 0). */
  maxRetries?: number;
  /** Delay before the first retry (default 1000 ms), a durable timer. */
  retryDelayMs?: number;
  /** Each further delay is this many times the one before (default 2). */
  retryBackoff?: number;
  /** The longest delay (default 60000 ms). */
  maxRetryDelayMs?: number;
  /** When retries run out: end the run (default), go on with a null output, or pause for a person to choose. */
  onError?: "fail" | "skip" | "pause";
}

/** A step's retry options, checked. */
export interface RetryPolicy {
  readonly maxRetries: number;
  readonly retryDelayMs: number;
  readonly retryBackoff: number;
  readonly maxRetryDelayMs: number;
  readonly onError: "fail" | "skip" | "pause";
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

/** What every leaf step has besides what it runs. */
interface StepCommon {
  readonly kind: "step";
  readonly name: string;
  readonly humanInput: HumanInput | null;
  readonly retry: RetryPolicy;
}

/** A leaf step: runs a function, or an LLM agent. */
export type StepNode =
  | (StepCommon & { readonly executor: StepExecutor; readonly agent?: undefined })
  | (StepCommon & { readonly agent: AgentDefinition; readonly executor?: undefined });

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
  /** A person confirms before the condition is evaluated; `onReject: "else"` takes the else branch. */
  readonly humanInput: HumanInput | null;
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
  readonly selector: ((input: StepInput) => string | readonly string[] | Promise<string | readonly string[]>) | null;
  /** A person picks the route (`requiresUserInput`), instead of the selector. */
  readonly humanChoice: { readonly message: string | null; readonly allowMultipleSelections: boolean; readonly timeoutMs: number | null; readonly onTimeout: "cancel" | "skip" } | null;
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
  /** How long a finished run's events are kept (`retention`); null: the server's FLOWD_RETENTION. */
  readonly retentionMs: number | null;
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

function positiveMs(owner: string, option: string, value: unknown): number | null {
  if (value === undefined) return null;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw Errors.invalidWorkflow(`${owner}: ${option} must be a positive number of milliseconds.`);
  }
  return value;
}

function oneOf<T extends string>(owner: string, option: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T)) {
    throw Errors.invalidWorkflow(`${owner}: ${option} must be one of ${allowed.map((a) => `"${a}"`).join(", ")}; got ${JSON.stringify(value)}.`);
  }
  return value as T;
}

function humanInputOf(owner: string, options: HumanInputOptions, rejectChoices: readonly ("skip" | "cancel" | "else")[]): HumanInput | null {
  const requiresConfirmation = options.requiresConfirmation === true;
  const requiresUserInput = options.requiresUserInput === true;
  if (!requiresConfirmation && !requiresUserInput) return null;
  const schema = options.userInputSchema;
  if (schema !== undefined && !(schema instanceof z.ZodObject)) {
    throw Errors.invalidWorkflow(`${owner}: userInputSchema must be a zod object (z.object({...})).`);
  }
  if (requiresUserInput && schema === undefined) {
    throw Errors.invalidWorkflow(`${owner}: requiresUserInput needs a userInputSchema (a zod object of the fields to ask for).`);
  }
  return {
    requiresConfirmation,
    confirmationMessage: options.confirmationMessage ?? null,
    onReject: oneOf(owner, "onReject", options.onReject, rejectChoices, "skip"),
    requiresUserInput,
    userInputMessage: options.userInputMessage ?? null,
    userInputSchema: requiresUserInput ? (schema ?? null) : null,
    timeoutMs: positiveMs(owner, "hitlTimeoutMs", options.hitlTimeoutMs),
    onTimeout: oneOf(owner, "onTimeout", options.onTimeout, ["cancel", "skip", "approve"] as const, "cancel"),
  };
}

function retryPolicyOf(owner: string, options: RetryOptions): RetryPolicy {
  const maxRetries = options.maxRetries ?? 0;
  if (!Number.isInteger(maxRetries) || maxRetries < 0 || maxRetries > 1000) {
    throw Errors.invalidWorkflow(`${owner}: maxRetries must be a whole number from 0 to 1000.`);
  }
  const nonNegative = (option: string, value: number | undefined, fallback: number): number => {
    if (value === undefined) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
      throw Errors.invalidWorkflow(`${owner}: ${option} must be a number of at least 0.`);
    }
    return value;
  };
  const retryBackoff = nonNegative("retryBackoff", options.retryBackoff, 2);
  if (retryBackoff < 1) throw Errors.invalidWorkflow(`${owner}: retryBackoff must be at least 1 (1 keeps the delay the same).`);
  return {
    maxRetries,
    retryDelayMs: nonNegative("retryDelayMs", options.retryDelayMs, 1000),
    retryBackoff,
    maxRetryDelayMs: nonNegative("maxRetryDelayMs", options.maxRetryDelayMs, 60_000),
    onError: oneOf(owner, "onError", options.onError, ["fail", "skip", "pause"] as const, "fail"),
  };
}

/** Options every leaf step takes besides what it runs. */
export type StepOptions = HumanInputOptions & RetryOptions & { name: string };

/** A leaf step: `Step({ name, executor })` or `Step({ name, agent })`, with human-input and retry options. */
export function Step(options: (StepOptions & { executor: StepExecutor }) | (StepOptions & { agent: AgentDefinition })): StepNode {
  const name = requireName("Step", options.name);
  const owner = `Step "${name}"`;
  const common = { kind: "step" as const, name, humanInput: humanInputOf(owner, options, ["skip", "cancel"]), retry: retryPolicyOf(owner, options) };
  const executor = "executor" in options ? options.executor : undefined;
  const agent = "agent" in options ? options.agent : undefined;
  if ((executor === undefined) === (agent === undefined)) {
    throw Errors.invalidWorkflow(`Step "${name}" needs exactly one of "executor" (a function) or "agent" (made with Agent()).`);
  }
  if (agent !== undefined) {
    if (agent?.kind !== "agent") throw Errors.invalidWorkflow(`Step "${name}": "agent" must be made with Agent({...}).`);
    return { ...common, agent };
  }
  if (typeof executor !== "function") {
    throw Errors.invalidWorkflow(`Step "${name}": "executor" must be a function.`);
  }
  return { ...common, executor };
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
} & Pick<HumanInputOptions, "requiresConfirmation" | "confirmationMessage" | "onReject" | "hitlTimeoutMs" | "onTimeout">): ConditionNode {
  const name = requireName("Condition", options.name);
  const { evaluator } = options;
  return {
    kind: "condition",
    name,
    evaluator: typeof evaluator === "boolean" ? () => evaluator : evaluator,
    steps: requireNodes(`Condition "${name}"`, options.steps),
    elseSteps: requireNodes(`Condition "${name}" elseSteps`, options.elseSteps ?? []),
    humanInput: humanInputOf(`Condition "${name}"`, options, ["skip", "cancel", "else"]),
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

/** Runs the choices the selector names, or (`requiresUserInput`) the ones a person picks. */
export function Router(options: {
  name: string;
  choices: readonly WorkflowNode[];
  selector?: NonNullable<RouterNode["selector"]>;
  requiresUserInput?: boolean;
  userInputMessage?: string;
  allowMultipleSelections?: boolean;
  hitlTimeoutMs?: number;
  /** What happens when no one picks in time: cancel the run (default), or skip the router. */
  onTimeout?: "cancel" | "skip";
}): RouterNode {
  const name = requireName("Router", options.name);
  const owner = `Router "${name}"`;
  const choices = requireNodes(`Router "${name}" choices`, options.choices);
  const humanChoice = options.requiresUserInput === true
    ? {
        message: options.userInputMessage ?? null,
        allowMultipleSelections: options.allowMultipleSelections === true,
        timeoutMs: positiveMs(owner, "hitlTimeoutMs", options.hitlTimeoutMs),
        onTimeout: oneOf(owner, "onTimeout", options.onTimeout, ["cancel", "skip"] as const, "cancel"),
      }
    : null;
  if (options.selector !== undefined && typeof options.selector !== "function") {
    throw Errors.invalidWorkflow(`${owner}: "selector" must be a function.`);
  }
  if (!humanChoice && options.selector === undefined) {
    throw Errors.invalidWorkflow(`${owner} needs a "selector" function, or requiresUserInput: true to let a person pick the route.`);
  }
  return { kind: "router", name, choices, selector: options.selector ?? null, humanChoice };
}

/** A workflow: `Workflow({ id, name, description, steps, retention })`. */
export function Workflow(options: {
  id: string;
  name?: string;
  description?: string;
  steps: readonly WorkflowNode[];
  /** How long a finished run's events are kept, e.g. "30d" (the server's FLOWD_RETENTION otherwise). */
  retention?: string;
}): WorkflowDefinition {
  const id = requireName("Workflow id", options.id);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(id)) {
    throw Errors.invalidWorkflow(`Workflow id "${id}" may only contain letters, digits, ".", "_" and "-" (it appears in URLs).`,
    );
  }
  const steps = requireNodes(`Workflow "${id}"`, options.steps);
  if (steps.length === 0) throw Errors.invalidWorkflow(`Workflow "${id}" has no steps.`);
  let retentionMs: number | null = null;
  if (options.retention !== undefined) {
    retentionMs = typeof options.retention === "string" ? parseDuration(options.retention) : null;
    if (retentionMs === null) throw Errors.invalidWorkflow(`Workflow "${id}": "retention" must be ${DURATION_FORMAT}; got ${JSON.stringify(options.retention)}.`);
  }
  return { kind: "workflow", id, name: options.name ?? id, description: options.description ?? "", steps, retentionMs };
}

/** Marks a chunk yielded by a generator step as a custom event. */
export function customEvent(name: string, data: unknown = null): CustomEventChunk {
  return { kind: "custom", name, data };
}
