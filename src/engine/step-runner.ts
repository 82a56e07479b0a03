import { performance } from "node:perf_hooks";
import { errorMessage, Errors } from "../errors.ts";
import type { StepLocation } from "../protocol/run-events.ts";
import type {
  ConditionNode,
  LoopNode,
  ParallelNode,
  RouterNode,
  StepInput,
  StepNode,
  StepsNode,
  WorkflowNode,
} from "../workflows/definition.ts";
import { runAgentStep } from "./agent-runner.ts";
import { toJsonSafe } from "./json-safe.ts";
import { RunInterrupted, StepFailed } from "./interruption.ts";
import type { RunContext } from "./run-context.ts";

/** Between steps: stop if the run was cancelled or the server is draining. */
function stepBoundary(ctx: RunContext): void {
  if (ctx.signal.aborted) throw ctx.signal.reason as RunInterrupted;
  if (ctx.isDraining()) throw new RunInterrupted("shutdown");
}

/** Between chunks of a streaming step: stop only if the run must stop now. */
function contentBoundary(ctx: RunContext): void {
  if (ctx.signal.aborted) throw ctx.signal.reason as RunInterrupted;
}

/**
 * Before user code runs (a step, an evaluator, a selector, an end condition): waits until
 * every outcome the run has recorded is committed, so that nothing acts on an outcome a
 * crash could still lose (I8). Events that only record (a step's start, a composite's
 * completion, the run's end) need no wait: they join the same commit as what they follow.
 */
async function settle(ctx: RunContext): Promise<void> {
  const pending = ctx.settled();
  if (!pending) return;
  await pending;
  contentBoundary(ctx);
}

/** The checkpoint path of a node's decision (a Condition's result, a Router's choice). */
const decisionPath = (path: string): string => `${path}#decision`;

/** The checkpoint path of one loop iteration. */
const iterationPath = (path: string, iteration: number): string => `${path}[${iteration}]`;

/** What a loop iteration's checkpoint holds. */
interface IterationCheckpoint {
  output: unknown;
  ended: boolean;
}

function isAsyncGenerator(value: unknown): value is AsyncGenerator<unknown, unknown, undefined> {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as AsyncGenerator).next === "function" &&
    typeof (value as AsyncGenerator)[Symbol.asyncIterator] === "function"
  );
}

function elapsedMs(since: number): number {
  return Math.round((performance.now() - since) * 1000) / 1000;
}

/** The checkpoint path of the `order`-th `input.step` call of the step at `path`. */
const subStepPath = (path: string, order: number): string => `${path}~${order}`;

function stepInput(ctx: RunContext, loc: StepLocation, previousOutput: unknown): StepInput {
  let calls = 0;
  return {
    message: ctx.message,
    previousOutput,
    outputs: ctx.outputs,
    additionalData: ctx.additionalData,
    runId: ctx.runId,
    sessionId: ctx.sessionId,
    stepPath: loc.step_path,
    attempt: ctx.attempt,
    signal: ctx.signal,
    step: async <T>(name: string, fn: () => T | Promise<T>): Promise<T> => {
      const key = subStepPath(loc.step_path, calls++);
      if (ctx.restored.has(key)) return ctx.restored.get(key) as T;
      await settle(ctx);
      const started = performance.now();
      const output = toJsonSafe(await fn());
      ctx.emit(
        { event: "SubStepCompleted", ...loc, sub_step_name: name, sub_step_key: key, content: output, duration_ms: elapsedMs(started) },
        { path: key, stepName: null, output },
      );
      // A durable call returns once its record is stored (I8).
      await settle(ctx);
      return output as T;
    },
  };
}

/**
 * Turns an error thrown by user code into the right thing: the interruption if the run
 * was stopped (an executor that honours the signal throws AbortError), else a StepError
 * event and a StepFailed that ends the run.
 */
function failStep(ctx: RunContext, loc: StepLocation, started: number, error: unknown): never {
  if (ctx.signal.aborted) throw ctx.signal.reason as RunInterrupted;
  if (error instanceof StepFailed || error instanceof RunInterrupted) throw error;
  const message = errorMessage(error);
  ctx.emit({ event: "StepError", ...loc, error: message, duration_ms: elapsedMs(started) });
  throw new StepFailed(loc.step_name, `Step "${loc.step_name}" failed: ${message}`, { cause: error });
}

/** Runs a list of nodes in order, each fed the previous one's output; returns the last output. */
export async function runSequence(
  ctx: RunContext,
  nodes: readonly WorkflowNode[],
  parentPath: string | null,
  previousOutput: unknown,
): Promise<unknown> {
  let output = previousOutput;
  for (const [index, node] of nodes.entries()) {
    const path = parentPath === null ? String(index) : `${parentPath}.${index}`;
    output = await runNode(ctx, node, { step_name: node.name, step_index: index, step_path: path }, output);
  }
  return output;
}

/** Runs one node of the tree and returns its output. */
export async function runNode(
  ctx: RunContext,
  node: WorkflowNode,
  loc: StepLocation,
  previousOutput: unknown,
): Promise<unknown> {
  if (ctx.restored.has(loc.step_path)) {
    // Completed in an earlier attempt: reuse its output, run nothing, emit nothing.
    const restored = ctx.restored.get(loc.step_path);
    ctx.outputs[node.name] = restored;
    return restored;
  }
  stepBoundary(ctx);
  let output: unknown;
  switch (node.kind) {
    case "step":
      output = await runStep(ctx, node, loc, previousOutput);
      break;
    case "steps":
      output = await runSteps(ctx, node, loc, previousOutput);
      break;
    case "parallel":
      output = await runParallel(ctx, node, loc, previousOutput);
      break;
    case "condition":
      output = await runCondition(ctx, node, loc, previousOutput);
      break;
    case "loop":
      output = await runLoop(ctx, node, loc, previousOutput);
      break;
    case "router":
      output = await runRouter(ctx, node, loc, previousOutput);
      break;
    default: {
      const unreachable: never = node;
      throw Errors.invalidWorkflow(`Unknown workflow node: ${JSON.stringify(unreachable)}`);
    }
  }
  ctx.outputs[node.name] = output;
  return output;
}

async function runStep(ctx: RunContext, node: StepNode, loc: StepLocation, previousOutput: unknown): Promise<unknown> {
  ctx.emit({ event: "StepStarted", ...loc });
  await settle(ctx);
  const started = performance.now();
  let output: unknown;
  try {
    const input = stepInput(ctx, loc, previousOutput);
    const result = node.agent ? runAgentStep(ctx, node.agent, loc, input) : node.executor(input);
    if (isAsyncGenerator(result)) {
      output = await drainGenerator(ctx, loc, result);
    } else {
      output = await result;
    }
  } catch (error) {
    failStep(ctx, loc, started, error);
  }
  output = toJsonSafe(output);
  ctx.emit(
    { event: "StepCompleted", ...loc, content: output, duration_ms: elapsedMs(started) },
    { path: loc.step_path, stepName: loc.step_name, output },
  );
  return output;
}

/** Chunks of text per block of `StreamedText`: 32 KB of references, a regular young-generation object. */
const TEXT_BLOCK = 4096;

/**
 * The text a generator step streams, kept for its output (the joined text, if it returns
 * nothing). Kept in blocks of fixed size: one growing array would be copied again and
 * again as a long stream grows, each copy garbage in V8's old space, tens of MB for a
 * million chunks.
 */
class StreamedText {
  private readonly blocks: string[][] = [[]];

  push(chunk: string): void {
    let block = this.blocks[this.blocks.length - 1]!;
    if (block.length === TEXT_BLOCK) {
      block = [];
      this.blocks.push(block);
    }
    block.push(chunk);
  }

  join(): string {
    return this.blocks.map((block) => block.join("")).join("");
  }
}

/** Streams a generator step's chunks as events; stops at the next chunk once the run is stopped. */
async function drainGenerator(
  ctx: RunContext,
  loc: StepLocation,
  generator: AsyncGenerator<unknown, unknown, undefined>,
): Promise<unknown> {
  const text = new StreamedText();
  try {
    for (;;) {
      const next = await generator.next();
      contentBoundary(ctx);
      if (next.done) return next.value === undefined ? text.join() : next.value;
      const chunk = next.value;
      if (typeof chunk === "string") {
        // Wait first, then emit: a run that has had its share of this turn adds nothing to
        // the batch the turn commits, so that batch ends with the turn.
        const backlog = ctx.breathe();
        if (backlog) {
          await backlog;
          contentBoundary(ctx);
        }
        text.push(chunk);
        ctx.emit({ event: "RunContent", ...loc, content: chunk });
      } else if (typeof chunk === "object" && chunk !== null && (chunk as { kind?: unknown }).kind === "custom") {
        const custom = chunk as { name: unknown; data: unknown };
        ctx.emit({ event: "CustomEvent", ...loc, name: String(custom.name), data: toJsonSafe(custom.data) });
      } else {
        throw new Error(
          `it yielded ${JSON.stringify(chunk) ?? typeof chunk}; a step may yield only text or customEvent(name, data)`,
        );
      }
    }
  } finally {
    // Lets the generator run its own finally blocks when we stop early.
    await generator.return(undefined).catch(() => {});
  }
}

async function runSteps(ctx: RunContext, node: StepsNode, loc: StepLocation, previousOutput: unknown): Promise<unknown> {
  const started = performance.now();
  ctx.emit({ event: "StepsExecutionStarted", ...loc, steps_count: node.steps.length });
  const output = await runSequence(ctx, node.steps, loc.step_path, previousOutput);
  ctx.emit(
    { event: "StepsExecutionCompleted", ...loc, steps_executed: node.steps.length, duration_ms: elapsedMs(started) },
    { path: loc.step_path, stepName: node.name, output },
  );
  return output;
}

async function runParallel(
  ctx: RunContext,
  node: ParallelNode,
  loc: StepLocation,
  previousOutput: unknown,
): Promise<unknown> {
  const started = performance.now();
  const count = node.steps.length;
  ctx.emit({ event: "ParallelExecutionStarted", ...loc, parallel_step_count: count });
  const settled = await Promise.allSettled(
    node.steps.map((child, index) =>
      runNode(ctx, child, { step_name: child.name, step_index: index, step_path: `${loc.step_path}.${index}` }, previousOutput),
    ),
  );
  // Every branch is allowed to finish before the first failure (or the interruption) ends the run.
  const interrupted = settled.find((s) => s.status === "rejected" && s.reason instanceof RunInterrupted);
  if (interrupted?.status === "rejected") throw interrupted.reason;
  const failed = settled.find((s) => s.status === "rejected");
  if (failed?.status === "rejected") throw failed.reason;
  const output: Record<string, unknown> = {};
  node.steps.forEach((child, index) => {
    const result = settled[index];
    if (result?.status === "fulfilled") output[child.name] = result.value;
  });
  ctx.emit(
    { event: "ParallelExecutionCompleted", ...loc, parallel_step_count: count, duration_ms: elapsedMs(started) },
    { path: loc.step_path, stepName: node.name, output },
  );
  return output;
}

async function decide<T>(ctx: RunContext, loc: StepLocation, started: number, decision: () => T | Promise<T>): Promise<T> {
  await settle(ctx);
  try {
    return await decision();
  } catch (error) {
    failStep(ctx, loc, started, error);
  }
}

async function runCondition(
  ctx: RunContext,
  node: ConditionNode,
  loc: StepLocation,
  previousOutput: unknown,
): Promise<unknown> {
  const started = performance.now();
  const decided = decisionPath(loc.step_path);
  // A resumed run takes the branch the first attempt chose, even if the evaluator would now say otherwise.
  const earlier = ctx.restored.get(decided);
  const result =
    earlier === undefined
      ? Boolean(await decide(ctx, loc, started, () => node.evaluator(stepInput(ctx, loc, previousOutput))))
      : earlier === true;
  ctx.emit(
    { event: "ConditionExecutionStarted", ...loc, condition_result: result },
    earlier === undefined ? { path: decided, stepName: null, output: result } : undefined,
  );
  const branch = result ? node.steps : node.elseSteps;
  const branchPath = result ? loc.step_path : `${loc.step_path}.else`;
  const output = await runSequence(ctx, branch, branchPath, previousOutput);
  ctx.emit(
    {
      event: "ConditionExecutionCompleted",
      ...loc,
      condition_result: result,
      executed_steps: branch.length,
      duration_ms: elapsedMs(started),
    },
    { path: loc.step_path, stepName: node.name, output },
  );
  return output;
}

async function runLoop(ctx: RunContext, node: LoopNode, loc: StepLocation, previousOutput: unknown): Promise<unknown> {
  const started = performance.now();
  const max = node.maxIterations;
  ctx.emit({ event: "LoopExecutionStarted", ...loc, max_iterations: max });
  let output = previousOutput;
  let iteration = 0;
  while (iteration < max) {
    iteration += 1;
    const path = iterationPath(loc.step_path, iteration);
    const restored = ctx.restored.get(path) as IterationCheckpoint | undefined;
    if (restored) {
      output = restored.output;
      if (restored.ended) break;
      continue;
    }
    stepBoundary(ctx);
    ctx.emit({ event: "LoopIterationStarted", ...loc, iteration, max_iterations: max });
    const iterationOutputs: unknown[] = [];
    for (const [index, child] of node.steps.entries()) {
      const childLoc = { step_name: child.name, step_index: index, step_path: `${path}.${index}` };
      output = await runNode(ctx, child, childLoc, output);
      iterationOutputs.push(output);
    }
    const endCondition = node.endCondition;
    const ended =
      endCondition !== undefined &&
      Boolean(await decide(ctx, loc, started, () => endCondition(iterationOutputs, stepInput(ctx, { ...loc, step_path: path }, output))));
    ctx.emit(
      { event: "LoopIterationCompleted", ...loc, iteration, max_iterations: max, content: toJsonSafe(output) },
      { path, stepName: null, output: { output: toJsonSafe(output), ended } satisfies IterationCheckpoint },
    );
    if (ended) break;
  }
  ctx.emit(
    { event: "LoopExecutionCompleted", ...loc, total_iterations: iteration, max_iterations: max, duration_ms: elapsedMs(started) },
    { path: loc.step_path, stepName: node.name, output },
  );
  return output;
}

async function runRouter(ctx: RunContext, node: RouterNode, loc: StepLocation, previousOutput: unknown): Promise<unknown> {
  const started = performance.now();
  const decided = decisionPath(loc.step_path);
  const earlier = ctx.restored.get(decided) as string[] | undefined;
  const selected = earlier ?? await decide(ctx, loc, started, async () => {
    const picked = await node.selector(stepInput(ctx, loc, previousOutput));
    const names = typeof picked === "string" ? [picked] : [...picked];
    for (const name of names) {
      if (!node.choices.some((choice) => choice.name === name)) {
        const known = node.choices.map((choice) => choice.name).join(", ");
        throw new Error(`selector chose "${name}", which is not one of its choices (${known})`);
      }
    }
    return names;
  });
  ctx.emit(
    { event: "RouterExecutionStarted", ...loc, selected_steps: selected },
    earlier === undefined ? { path: decided, stepName: null, output: selected } : undefined,
  );
  let output = previousOutput;
  for (const name of selected) {
    const index = node.choices.findIndex((choice) => choice.name === name);
    const choice = node.choices[index];
    if (!choice) continue;
    output = await runNode(ctx, choice, { step_name: name, step_index: index, step_path: `${loc.step_path}.${index}` }, output);
  }
  ctx.emit(
    {
      event: "RouterExecutionCompleted",
      ...loc,
      selected_steps: selected,
      executed_steps: selected.length,
      duration_ms: elapsedMs(started),
    },
    { path: loc.step_path, stepName: node.name, output },
  );
  return output;
}
