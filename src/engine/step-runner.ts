/** Runs a workflow's tree: sequences, and the composites (Steps, Parallel, Condition, Loop, Router) around leaf steps. */
import { performance } from "node:perf_hooks";
import { Errors } from "../errors.ts";
import type { StepLocation } from "../protocol/run-events.ts";
import type { ConditionNode, LoopNode, ParallelNode, RouterNode, StepsNode, WorkflowNode } from "../workflows/definition.ts";
import { askPerson, elapsedMs, failStep, humanPath, resumeOpenWait, settle, skipNode, stepInput } from "./durable-calls.ts";
import { routePause, workflowPaused, type StoredResolution } from "./human-input.ts";
import { RunInterrupted, RunSuspended } from "./interruption.ts";
import { toJsonSafe } from "./json-safe.ts";
import { runStep } from "./leaf-step.ts";
import type { RunContext } from "./run-context.ts";

/** Between steps: stop if the run was cancelled or the server is draining. */
function stepBoundary(ctx: RunContext): void {
  if (ctx.signal.aborted) throw ctx.signal.reason as RunInterrupted;
  if (ctx.isDraining()) throw new RunInterrupted("shutdown");
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
  // Every branch is allowed to finish (or wait) before the interruption, the first failure,
  // or a wait ends the run's execution, in that order: a failure ends the run even if
  // another branch waits, rather than waiting to fail again.
  const rejected = settled.flatMap((s) => (s.status === "rejected" ? [s.reason as unknown] : []));
  const first =
    rejected.find((reason) => reason instanceof RunInterrupted) ??
    rejected.find((reason) => !(reason instanceof RunSuspended)) ??
    rejected[0];
  if (rejected.length > 0) throw first;
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
  let earlier = ctx.restored.get(decided);
  let decidedNow: boolean | undefined;
  if (earlier === undefined && node.humanInput) {
    const answer = await askPerson(ctx, loc, "Condition", node.humanInput);
    if (!answer.go && answer.rejected === "skip") return skipNode(ctx, loc, node.name, "rejected by a person, or no answer in time", previousOutput);
    if (!answer.go) decidedNow = false;
  }
  const result =
    earlier !== undefined
      ? earlier === true
      : (decidedNow ?? Boolean(await decide(ctx, loc, started, () => node.evaluator(stepInput(ctx, loc, previousOutput)))));
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
  let chosen: string[] | undefined;
  if (earlier === undefined && node.humanChoice) {
    const key = humanPath(loc.step_path);
    const answer = ctx.restored.get(key) as StoredResolution | undefined;
    if (!answer) {
      resumeOpenWait(ctx, key);
      await settle(ctx);
      const { record, events } = routePause(loc, node.choices.map((choice) => choice.name), node.humanChoice, Date.now());
      throw ctx.openWait(key, record, [...events, workflowPaused(record, ctx.resolvedRequirements())]);
    }
    if (answer.kind !== "route" || answer.selected === null) {
      return skipNode(ctx, loc, node.name, "no route was picked in time (onTimeout: \"skip\")", previousOutput);
    }
    chosen = answer.selected;
  }
  const { selector } = node;
  const selected = earlier ?? chosen ?? await decide(ctx, loc, started, async () => {
    if (!selector) throw new Error("it has no selector");
    const picked = await selector(stepInput(ctx, loc, previousOutput));
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
