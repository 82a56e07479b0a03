/** A leaf step: a person's answer first if it asks for one, then its attempts (with retries), each its code from StepStarted to StepCompleted. */
import { endSpan, startChildSpan, within } from "../ops/tracing.ts";
import { performance } from "node:perf_hooks";
import { errorMessage } from "../errors.ts";
import type { StepLocation } from "../protocol/run-events.ts";
import { startKey } from "../store/resume-state.ts";
import { isNonRetryable, type StepNode } from "../workflows/definition.ts";
import { runAgentStep } from "./agent-runner.ts";
import {
  askPerson,
  contentBoundary,
  elapsedMs,
  errorDecisionPath,
  failStep,
  lastReachedCall,
  resumeOpenWait,
  retryPath,
  settle,
  skipNode,
  StepExecution,
  stepInput,
} from "./durable-calls.ts";
import { errorPause, workflowPaused, type StoredResolution } from "./human-input.ts";
import { RunInterrupted, RunSuspended, StepFailed } from "./interruption.ts";
import { toJsonSafe } from "./json-safe.ts";
import type { RunContext } from "./run-context.ts";

function isAsyncGenerator(value: unknown): value is AsyncGenerator<unknown, unknown, undefined> {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as AsyncGenerator).next === "function" &&
    typeof (value as AsyncGenerator)[Symbol.asyncIterator] === "function"
  );
}

export async function runStep(ctx: RunContext, node: StepNode, loc: StepLocation, previousOutput: unknown): Promise<unknown> {
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
  const span = startChildSpan(ctx.trace, `flowd.step ${loc.step_name}`, {
    "flowd.run_id": ctx.runId,
    "flowd.step_name": loc.step_name,
    "flowd.step_path": loc.step_path,
    "flowd.attempt": attempt,
  });
  const execution = new StepExecution(resuming ? lastReachedCall(ctx, loc.step_path) : -1);
  const input = stepInput(ctx, loc, previousOutput, execution, userInput);
  let output: unknown;
  try {
    const result = node.agent ? runAgentStep(ctx, node.agent, loc, input, attempt, within(span)) : node.executor(input);
    output = isAsyncGenerator(result) ? await drainGenerator(ctx, loc, result, execution) : await result;
  } catch (error) {
    const thrown = execution.suspension ?? error;
    // A wait (or a stop) is not the step's failure.
    endSpan(span, thrown instanceof RunSuspended || thrown instanceof RunInterrupted ? undefined : thrown);
    throw thrown;
  }
  endSpan(span);
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

