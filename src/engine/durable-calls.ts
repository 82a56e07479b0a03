/**
 * What a step's code can do durably, and what a person can decide before a node runs:
 * the durable calls of `input` (`step`, `sleep`, `sleepUntil`, `waitForSignal`), their
 * keys, replay after a wait, and the pause for a person's answer.
 */
import { performance } from "node:perf_hooks";
import { errorMessage } from "../errors.ts";
import type { RunEventBody, StepLocation } from "../protocol/run-events.ts";
import { WAIT_SUFFIX } from "../store/resume-state.ts";
import type { SignalOutcome, StepInput, StepNode, WaitForSignalOptions } from "../workflows/definition.ts";
import { stepPause, workflowPaused, type StoredResolution } from "./human-input.ts";
import { RunInterrupted, RunSuspended, StepFailed } from "./interruption.ts";
import { toJsonSafe } from "./json-safe.ts";
import { schemaProblem, storableSchema } from "./payload-schema.ts";
import type { RunContext } from "./run-context.ts";
import type { WaitRecord } from "./waits.ts";

/** Between chunks of a streaming step: stop only if the run must stop now. */
export function contentBoundary(ctx: RunContext): void {
  if (ctx.signal.aborted) throw ctx.signal.reason as RunInterrupted;
}

/**
 * Before user code runs (a step, an evaluator, a selector, an end condition): waits until
 * every outcome the run has recorded is committed, so that nothing acts on an outcome a
 * crash could still lose (I8). Events that only record (a step's start, a composite's
 * completion, the run's end) need no wait: they join the same commit as what they follow.
 */
export async function settle(ctx: RunContext): Promise<void> {
  const pending = ctx.settled();
  if (!pending) return;
  await pending;
  contentBoundary(ctx);
}

export function elapsedMs(since: number): number {
  return Math.round((performance.now() - since) * 1000) / 1000;
}

/** The checkpoint path of the `order`-th durable call (`input.step`, a sleep, a signal wait) of the step at `path`. */
export const subStepPath = (path: string, order: number): string => `${path}~${order}`;

/** The checkpoint path of a person's answer before a node runs. */
export const humanPath = (path: string): string => `${path}#hitl`;

/** The checkpoint path of the delay before a step's next attempt (`attempt` failed). */
export const retryPath = (path: string, attempt: number): string => `${path}!retry${attempt}`;

/** The checkpoint path of a person's decision after a step's attempts ran out. */
export const errorDecisionPath = (path: string, attempt: number): string => `${path}#error${attempt}`;

/** Suspends on a wait an earlier execution opened, if `key` has one; else returns. */
export function resumeOpenWait(ctx: RunContext, key: string): void {
  const open = ctx.restored.get(`${key}${WAIT_SUFFIX}`) as WaitRecord | undefined;
  if (open) throw ctx.resumeWait(key, open);
}

/**
 * One execution of a step's code: its durable calls, counted in order, and whether it is
 * replaying (going on after a wait, it runs again from its top: what it sent before the
 * wait is not sent again, up to the last durable call it had reached).
 */
export class StepExecution {
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
export function lastReachedCall(ctx: RunContext, path: string): number {
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

export function stepInput(
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
      for (let seen = ctx.signalsKept(), kept = await ctx.takeSignal(name); ; seen = ctx.signalsKept(), kept = await ctx.takeSignal(name)) {
        // A signal kept while the mailbox was read: read it again, so none slips past the wait about to open.
        if (!kept && ctx.signalsKept() !== seen) continue;
        if (!kept) break;
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
export function failStep(ctx: RunContext, loc: StepLocation, started: number, error: unknown): never {
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
export async function askPerson(
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
export function skipNode(ctx: RunContext, loc: StepLocation, nodeName: string, reason: string, previousOutput: unknown): unknown {
  ctx.emit({ event: "StepSkipped", ...loc, reason }, { path: loc.step_path, stepName: nodeName, output: previousOutput });
  return previousOutput;
}

