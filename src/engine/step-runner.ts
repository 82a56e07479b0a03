import { performance } from "node:perf_hooks";
import { errorMessage, Errors } from "../errors.ts";
import type { RunEventBody, StepLocation } from "../protocol/run-events.ts";
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
import { isNonRetryable, type SignalOutcome, type WaitForSignalOptions } from "../workflows/definition.ts";
import { startKey, WAIT_SUFFIX } from "../store/resume-state.ts";
import { runAgentStep } from "./agent-runner.ts";
import { errorPause, routePause, stepPause, workflowPaused, type StoredResolution } from "./human-input.ts";
import { toJsonSafe } from "./json-safe.ts";
import { RunInterrupted, RunSuspended, StepFailed } from "./interruption.ts";
import { schemaProblem, storableSchema } from "./payload-schema.ts";
import type { RunContext } from "./run-context.ts";
import type { WaitRecord } from "./waits.ts";

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

/** The checkpoint path of the `order`-th durable call (`input.step`, a sleep, a signal wait) of the step at `path`. */
const subStepPath = (path: string, order: number): string => `${path}~${order}`;

/** The checkpoint path of a person's answer before a node runs. */
const humanPath = (path: string): string => `${path}#hitl`;

/** The checkpoint path of the delay before a step's next attempt (`attempt` failed). */
const retryPath = (path: string, attempt: number): string => `${path}!retry${attempt}`;

/** The checkpoint path of a person's decision after a step's attempts ran out. */
const errorDecisionPath = (path: string, attempt: number): string => `${path}#error${attempt}`;

/** Suspends on a wait an earlier execution opened, if `key` has one; else returns. */
function resumeOpenWait(ctx: RunContext, key: string): void {
  const open = ctx.restored.get(`${key}${WAIT_SUFFIX}`) as WaitRecord | undefined;
  if (open) throw ctx.resumeWait(key, open);
}

/**
 * One execution of a step's code: its durable calls, counted in order, and whether it is
 * replaying (going on after a wait, it runs again from its top: what it sent before the
 * wait is not sent again, up to the last durable call it had reached).
 */
class StepExecution {
  calls = 0;
  /** A wait the step opened, in case its code caught the RunSuspended and went on. */
  suspension: RunSuspended | null = null;

  constructor(private readonly replayThrough: number) {}

  /** True while the code is before where the earlier execution stopped: its events were sent then. */
  get replaying(): boolean {
    return this.calls <= this.replayThrough;
  }

  suspend(error: RunSuspended): never {
    this.suspension = error;
    throw error;
  }
}

/** The highest durable call of the step an earlier execution reached (completed or waiting), or -1. */
function lastReachedCall(ctx: RunContext, path: string): number {
  const prefix = `${path}~`;
  let last = -1;
  for (const key of ctx.restored.keys()) {
    if (!key.startsWith(prefix)) continue;
    const order = Number.parseInt(key.slice(prefix.length), 10);
    if (Number.isInteger(order) && order > last) last = order;
  }
  return last;
}

function checkMs(what: string, ms: unknown): number {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
    throw new TypeError(`${what} takes a number of milliseconds of at least 0; got ${String(ms)}`);
  }
  return ms;
}

function stepInput(
  ctx: RunContext,
  loc: StepLocation,
  previousOutput: unknown,
  execution: StepExecution = new StepExecution(-1),
  userInput: Record<string, unknown> | null = null,
): StepInput {
  const nextKey = (): string => subStepPath(loc.step_path, execution.calls++);
  const sleepUntil = async (date: Date | number): Promise<void> => {
    const wakeAt = typeof date === "number" ? date : date instanceof Date ? date.getTime() : Number.NaN;
    if (!Number.isFinite(wakeAt)) throw new TypeError(`input.sleepUntil takes a Date or epoch milliseconds; got ${String(date)}`);
    const key = nextKey();
    if (ctx.restored.has(key)) return;
    resumeOpenWait(ctx, key);
    await settle(ctx);
    const body: RunEventBody = { event: "WaitStarted", ...loc, wait_kind: "timer", wait_key: key, wake_at: wakeAt };
    execution.suspend(ctx.openWait(key, { kind: "timer", loc, wakeAt }, [body]));
  };
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
    userInput,
    step: async <T>(name: string, fn: () => T | Promise<T>): Promise<T> => {
      const key = nextKey();
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
    sleep: (ms: number) => sleepUntil(Date.now() + checkMs("input.sleep", ms)),
    sleepUntil,
    waitForSignal: async <T>(name: string, options: WaitForSignalOptions<T> = {}): Promise<SignalOutcome<T>> => {
      if (typeof name !== "string" || name.length === 0 || name.length > 256) {
        throw new TypeError("input.waitForSignal takes a signal name of 1 to 256 characters");
      }
      const key = nextKey();
      const done = ctx.restored.get(key) as { payload?: unknown; timedOut?: boolean } | undefined;
      if (done) return done.timedOut ? { timedOut: true } : { timedOut: false, payload: done.payload as T };
      resumeOpenWait(ctx, key);
      const timeoutMs = options.timeoutMs === undefined ? null : checkMs("waitForSignal's timeoutMs", options.timeoutMs);
      const schema = options.schema ? storableSchema(`input.waitForSignal("${name}")`, options.schema) : null;
      await settle(ctx);
      for (let kept = ctx.takeSignal(name); kept; kept = ctx.takeSignal(name)) {
        // Sent before the run waited, so not checked then: one that does not match is dropped, and says so.
        const problem = schema ? schemaProblem(schema, kept.payload, `signal "${name}"`, "payload") : null;
        if (problem) {
          ctx.emit({ event: "CustomEvent", ...loc, name: "signal_discarded", data: { signal: name, reason: problem } }, undefined, kept.signalId);
          continue;
        }
        // Taken from the mailbox in the same transaction as the wait's end.
        ctx.emit({ event: "WaitStarted", ...loc, wait_kind: "signal", wait_key: key, signal_name: name, timeout_at: null });
        ctx.emit(
          { event: "WaitCompleted", ...loc, wait_kind: "signal", wait_key: key, timed_out: false, payload: toJsonSafe(kept.payload) },
          { path: key, stepName: null, output: { payload: kept.payload } },
          kept.signalId,
        );
        await settle(ctx);
        return { timedOut: false, payload: kept.payload as T };
      }
      const timeoutAt = timeoutMs === null ? null : Date.now() + timeoutMs;
      const body: RunEventBody = { event: "WaitStarted", ...loc, wait_kind: "signal", wait_key: key, signal_name: name, timeout_at: timeoutAt };
      return execution.suspend(ctx.openWait(key, { kind: "signal", loc, name, timeoutAt, schema }, [body]));
    },
  };
}

/**
 * Turns an error thrown by user code into the right thing: the interruption if the run
 * was stopped (an executor that honours the signal throws AbortError), else a StepError
 * event and a StepFailed that ends the run.
 */
function failStep(ctx: RunContext, loc: StepLocation, started: number, error: unknown): never {
  if (error instanceof RunSuspended) throw error;
  if (ctx.signal.aborted) throw ctx.signal.reason as RunInterrupted;
  if (error instanceof StepFailed || error instanceof RunInterrupted) throw error;
  const message = errorMessage(error);
  ctx.emit({ event: "StepError", ...loc, error: message, duration_ms: elapsedMs(started) });
  throw new StepFailed(loc.step_name, `Step "${loc.step_name}" failed: ${message}`, { cause: error });
}

/** What a node does after asking a person: go on (with their input, if any), or what the answer decided instead. */
type HumanAnswer = { go: true; input: Record<string, unknown> | null } | { go: false; rejected: "skip" | "else" };

/**
 * Before a node runs: asks a person if it requires it. The first time, appends the
 * pause events and suspends the run; when it goes on, reads the stored answer.
 */
async function askPerson(
  ctx: RunContext,
  loc: StepLocation,
  stepType: "Step" | "Condition",
  human: NonNullable<StepNode["humanInput"]>,
): Promise<HumanAnswer> {
  const key = humanPath(loc.step_path);
  const answer = ctx.restored.get(key) as StoredResolution | undefined;
  if (!answer) {
    resumeOpenWait(ctx, key);
    await settle(ctx);
    const { record, events } = stepPause(loc, stepType, human, Date.now());
    throw ctx.openWait(key, record, [...events, workflowPaused(record, ctx.resolvedRequirements())]);
  }
  const confirmed =
    answer.kind === "confirmation" ? answer.confirmed : answer.kind === "user_input" ? answer.input !== null || !answer.requirement.requires_confirmation : true;
  if (answer.timedOut && answer.requirement.on_timeout === "skip") return { go: false, rejected: "skip" };
  if (!confirmed) {
    if (human.onReject === "cancel") throw new RunInterrupted("cancelled", `Step "${loc.step_name}" was rejected (onReject: "cancel")`);
    return { go: false, rejected: human.onReject === "else" ? "else" : "skip" };
  }
  return { go: true, input: answer.kind === "user_input" ? answer.input : null };
}

/** Records that a node was skipped (rejected or timed out), so a resumed run skips it too; its output is its input. */
function skipNode(ctx: RunContext, loc: StepLocation, nodeName: string, reason: string, previousOutput: unknown): unknown {
  ctx.emit({ event: "StepSkipped", ...loc, reason }, { path: loc.step_path, stepName: nodeName, output: previousOutput });
  return previousOutput;
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
  let userInput: Record<string, unknown> | null = null;
  if (node.humanInput) {
    const answer = await askPerson(ctx, loc, "Step", node.humanInput);
    if (!answer.go) return skipNode(ctx, loc, node.name, "rejected by a person, or no answer in time", previousOutput);
    userInput = answer.input;
  }
  const { retry } = node;
  let attempt = firstAttempt(ctx, loc);
  if (attempt.skip) return skipNode(ctx, loc, node.name, "a person chose to skip it after its error", null);
  for (let number = attempt.number; ; number++) {
    const timing = { started: performance.now() };
    try {
      return await runAttempt(ctx, node, loc, previousOutput, userInput, timing, number);
    } catch (error) {
      if (error instanceof RunSuspended || error instanceof RunInterrupted || error instanceof StepFailed) throw error;
      if (ctx.signal.aborted) throw ctx.signal.reason as RunInterrupted;
      const message = errorMessage(error);
      if (!isNonRetryable(error) && number <= retry.maxRetries) {
        await retryAfter(ctx, loc, number, message, retry);
        continue;
      }
      if (retry.onError === "skip") {
        ctx.emit(
          { event: "StepError", ...loc, error: message, duration_ms: elapsedMs(timing.started) },
          { path: loc.step_path, stepName: node.name, output: null },
        );
        return null;
      }
      if (retry.onError === "pause") {
        const key = errorDecisionPath(loc.step_path, number);
        await settle(ctx);
        const { record, events } = errorPause(loc, message);
        throw ctx.openWait(key, record, [...events, workflowPaused(record, ctx.resolvedRequirements())]);
      }
      failStep(ctx, loc, timing.started, error);
    }
  }
}

/**
 * Which attempt of a step runs now: 1, or after the attempts an earlier execution made
 * (their retry delays, or a person's "retry", are stored). Suspends again if the step is
 * in a retry delay or waits for a person's decision.
 */
function firstAttempt(ctx: RunContext, loc: StepLocation): { number: number; skip: boolean } {
  let number = 1;
  for (;;) {
    const path = loc.step_path;
    if (ctx.restored.has(retryPath(path, number))) {
      number += 1;
      continue;
    }
    const decision = ctx.restored.get(errorDecisionPath(path, number)) as StoredResolution | undefined;
    if (decision?.kind === "error") {
      if (decision.decision === "skip") return { number, skip: true };
      number += 1;
      continue;
    }
    resumeOpenWait(ctx, retryPath(path, number));
    resumeOpenWait(ctx, errorDecisionPath(path, number));
    return { number, skip: false };
  }
}

/** After a failed attempt: `StepRetrying` with the attempt's events, then its delay as a durable timer. */
async function retryAfter(
  ctx: RunContext,
  loc: StepLocation,
  attempt: number,
  error: string,
  retry: StepNode["retry"],
): Promise<void> {
  const delay = Math.min(retry.maxRetryDelayMs, retry.retryDelayMs * retry.retryBackoff ** (attempt - 1));
  const range = await ctx.attemptRange(loc.step_path);
  contentBoundary(ctx);
  const key = retryPath(loc.step_path, attempt);
  ctx.emit(
    {
      event: "StepRetrying",
      ...loc,
      attempt,
      max_retries: retry.maxRetries,
      error,
      delay_ms: delay,
      superseded_from_index: range.from,
      superseded_to_index: range.to,
    },
    // Without a delay, the retry is recorded as done at once.
    delay <= 0 ? { path: key, stepName: null, output: { timedOut: false } } : undefined,
  );
  if (delay <= 0) return;
  const wakeAt = Date.now() + delay;
  throw ctx.openWait(key, { kind: "timer", loc, wakeAt }, [{ event: "WaitStarted", ...loc, wait_kind: "timer", wait_key: key, wake_at: wakeAt }]);
}

/** One attempt of a step: its code, from `StepStarted` to `StepCompleted`. */
async function runAttempt(
  ctx: RunContext,
  node: StepNode,
  loc: StepLocation,
  previousOutput: unknown,
  userInput: Record<string, unknown> | null,
  timing: { started: number },
  attempt: number,
): Promise<unknown> {
  // Going on after a wait, the step runs again from its top: what it sent before is not sent again.
  const resuming = ctx.hasStarted(startKey("StepStarted", loc.step_path));
  ctx.emit({ event: "StepStarted", ...loc });
  await settle(ctx);
  timing.started = performance.now();
  const execution = new StepExecution(resuming ? lastReachedCall(ctx, loc.step_path) : -1);
  const input = stepInput(ctx, loc, previousOutput, execution, userInput);
  const result = node.agent ? runAgentStep(ctx, node.agent, loc, input, attempt) : node.executor(input);
  let output: unknown;
  try {
    output = isAsyncGenerator(result) ? await drainGenerator(ctx, loc, result, execution) : await result;
  } catch (error) {
    throw execution.suspension ?? error;
  }
  // The step's code caught the suspension and went on: the run waits all the same.
  if (execution.suspension) throw execution.suspension;
  output = toJsonSafe(output);
  ctx.emit(
    { event: "StepCompleted", ...loc, content: output, duration_ms: elapsedMs(timing.started) },
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
  execution: StepExecution,
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
        if (!execution.replaying) ctx.emit({ event: "RunContent", ...loc, content: chunk });
      } else if (typeof chunk === "object" && chunk !== null && (chunk as { kind?: unknown }).kind === "custom") {
        const custom = chunk as { name: unknown; data: unknown };
        if (!execution.replaying) ctx.emit({ event: "CustomEvent", ...loc, name: String(custom.name), data: toJsonSafe(custom.data) });
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
