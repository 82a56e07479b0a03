import { createHash } from "node:crypto";
import { stringify as stableStringify } from "safe-stable-stringify";
import type { Logger } from "pino";
import type { ModelProvider } from "../agents/model-provider.ts";
import { errorMessage, Errors } from "../errors.ts";
import type { RunEventBody } from "../protocol/run-events.ts";
import type { RequirementAnswer } from "../protocol/hitl.ts";
import { isFinished, SUSPENDED_STATUSES } from "../protocol/run-status.ts";
import { startKey, START_EVENTS, WAIT_SUFFIX } from "../store/resume-state.ts";
import type { Checkpoint, EventLog } from "../store/event-log.ts";
import type { ResumeState, ResumeStateReader } from "../store/resume-state.ts";
import type { RunStore } from "../store/run-store.ts";
import { timeOrderedId } from "../store/time-ordered-id.ts";
import type { RunRow } from "../store/schema.ts";
import type { WorkflowDefinition } from "../workflows/definition.ts";
import type { WorkflowRegistry } from "../workflows/registry.ts";
import { continuedEvent, isResolutionPath, resolveAnswer, timeoutResolution, type StoredResolution } from "./human-input.ts";
import { RunInterrupted, RunSuspended, StepFailed } from "./interruption.ts";
import { schemaProblem } from "./payload-schema.ts";
import { WaitBoard, waitColumns, type WaitRecord } from "./waits.ts";
import { toJsonSafe } from "./json-safe.ts";
import type { RunContext } from "./run-context.ts";
import { runSequence } from "./step-runner.ts";

/**
 * What an idempotent start asked for: a repeat with the same key must ask the same.
 * Object keys are sorted first, so the same data in another key order is the same request.
 */
function requestHash(request: StartRunRequest): string {
  return createHash("sha256")
    .update(stableStringify([request.message, request.additionalData ?? null]) ?? "")
    .digest("base64url");
}

/** What a client gives to start a run. */
export interface StartRunRequest {
  workflowId: string;
  message: string;
  sessionId?: string | undefined;
  userId?: string | undefined;
  additionalData?: unknown;
  /** A repeat of a start with this key (same workflow, within the TTL) returns the run the first one started. */
  idempotencyKey?: string | undefined;
}

/** Engine settings. */
export interface EngineOptions {
  /** How many times a run may be resumed after a crash before it ends with WorkflowError. */
  maxCrashResumes: number;
  /** The models agent steps talk to. */
  models: ModelProvider;
  /** Runs executed at once; starts beyond are refused (runs resumed at start-up are not). */
  maxActiveRuns: number;
  /** How long an idempotency key returns the run it started. */
  idempotencyTtlMs: number;
}

/** What recovery did at start-up. */
export interface RecoverySummary {
  resumed: string[];
  restarted: string[];
  cancelled: string[];
  failed: string[];
  skipped: string[];
  /** Runs that wait (for a timer, a signal, a person): registered again, nothing executed. */
  waiting: string[];
}

interface ActiveRun {
  controller: AbortController;
  done: Promise<void>;
}

/** Signals a run keeps for waits it has not reached; more are refused (a client cannot fill the disk through one run). */
export const MAX_KEPT_SIGNALS = 1000;

/** Start events a run going on after a wait does not send twice. */
const START_EVENT_NAMES: ReadonlySet<string> = new Set(START_EVENTS);

/** The iteration of a start event that has one (LoopIterationStarted). */
function iterationOf(body: RunEventBody): number | undefined {
  return "iteration" in body ? body.iteration : undefined;
}

/** The end of a wait, as the run records it: the event, and the outcome its durable call returns. */
interface WaitEnd {
  body: RunEventBody;
  outcome: unknown;
  consumesSignal?: number;
}

/**
 * Runs workflows. Runs belong to the engine, not to any connection: nothing a
 * client does after starting a run (disconnecting included) stops or slows it (I4).
 */
export class Engine {
  private readonly active = new Map<string, ActiveRun>();
  private draining = false;
  /** Set once shutdown gave up waiting: late events from runs that ignored their signal are dropped. */
  private closed = false;
  /** Every open wait of every run, and the one timer that ends them. */
  private readonly waits = new WaitBoard(
    (runId, key, record) => this.onWaitDue(runId, key, record),
    (runId, error) => this.logger.error({ runId, err: error }, "a wait's deadline passed, but it could not end"),
  );
  /** Runs whose wait ended while their execution was still winding down: they go on once it has. */
  private readonly goOnAfter = new Set<string>();
  /**
   * Waits ended since the run's current execution read its checkpoints: walking back to
   * one of them, it must not register it again (what ended it relaunches the run).
   */
  private readonly endedWaits = new Map<string, Set<string>>();
  /** Kept signals taken by a wait whose write is not committed yet. */
  private readonly claimedSignals = new Set<number>();

  constructor(
    private readonly workflows: WorkflowRegistry,
    private readonly runStore: RunStore,
    private readonly eventLog: EventLog,
    private readonly resumeState: ResumeStateReader,
    private readonly logger: Logger,
    private readonly options: EngineOptions,
  ) {}

  /**
   * Creates the run and starts it. Its row and `WorkflowStarted` (index 0) are committed
   * together in the next group commit; a caller that follows the run from index -1 right
   * away gets every event live.
   */
  start(request: StartRunRequest): RunRow {
    const workflow = this.workflows.get(request.workflowId);
    const idempotency = request.idempotencyKey === undefined ? undefined : { key: request.idempotencyKey, requestHash: requestHash(request) };
    if (idempotency) {
      const earlier =
        this.eventLog.pendingStart(workflow.id, idempotency.key) ??
        this.runStore.idempotentStart(workflow.id, idempotency.key, Date.now() - this.options.idempotencyTtlMs);
      if (earlier) {
        if (earlier.requestHash !== idempotency.requestHash) throw Errors.idempotencyKeyReused(idempotency.key, workflow.id, earlier.run.runId);
        return earlier.run;
      }
    }
    if (this.draining) {
      throw Errors.shuttingDown();
    }
    if (this.active.size >= this.options.maxActiveRuns) {
      throw Errors.tooManyRuns(this.active.size);
    }
    const run = this.eventLog.createRun({
      runId: timeOrderedId(),
      workflowId: workflow.id,
      workflowName: workflow.name,
      sessionId: request.sessionId ?? timeOrderedId(),
      userId: request.userId ?? null,
      input: request.message,
      additionalData: request.additionalData ?? null,
      idempotency,
    });
    this.launch(workflow, run, null);
    this.logger.info({ runId: run.runId, workflowId: workflow.id }, "run started");
    return run;
  }

  /**
   * Asks a run to stop; it ends with `WorkflowCancelled` at its next step or content
   * boundary, or at once if nothing in this process runs it (it halted here).
   */
  cancel(runId: string): RunRow {
    const run = this.runStore.get(runId);
    if (!run) throw Errors.runNotFound(runId);
    if (isFinished(run.status)) {
      throw Errors.runFinished(runId, run.status, "there is nothing to cancel");
    }
    // Stored first, so a crash before the run reaches a boundary still ends it as cancelled.
    this.runStore.markCancelRequested(runId);
    // A waiting or paused run has nothing executing: it ends now.
    if (!this.active.has(runId) && (this.waits.has(runId) || SUSPENDED_STATUSES.has(run.status))) {
      this.waits.dropRun(runId);
      this.eventLog.append(runId, { event: "WorkflowCancelled", reason: "Cancelled by request" });
      this.logger.info({ runId }, "waiting run cancelled");
      return run;
    }
    // Nothing here runs a halted run: it ends now. Once only, so a second cancel before
    // the commit does not append a second terminal event.
    if (!this.active.has(runId) && this.eventLog.endHalted(runId, { event: "WorkflowCancelled", reason: "Cancelled by request (the run was halted on this server)" })) {
      this.logger.info({ runId }, "halted run cancelled");
      return run;
    }
    this.active.get(runId)?.controller.abort(new RunInterrupted("cancelled"));
    this.logger.info({ runId }, "run cancel requested");
    return run;
  }

  /** The log could not store a run's event: stop the run where it is; it resumes at the next start. */
  onStorageFailure(runId: string, error: unknown): void {
    this.logger.error({ runId, err: error }, "an event of this run could not be stored; stopping the run");
    this.active.get(runId)?.controller.abort(new RunInterrupted("storage"));
  }

  /** How many runs this process is executing now. */
  get activeRunCount(): number {
    return this.active.size;
  }

  /**
   * Picks up every run the previous process left unfinished: honours stored cancel
   * requests, ends runs that keep crashing the server, and resumes the rest from their
   * checkpoints. Synchronous up to the point where the runs execute, so it finishes
   * before the server accepts connections.
   */
  recover(): RecoverySummary {
    const summary: RecoverySummary = { resumed: [], restarted: [], cancelled: [], failed: [], skipped: [], waiting: [] };
    for (const run of this.resumeState.unfinishedRuns()) {
      try {
        summary[this.recoverRun(run)].push(run.runId);
      } catch (error) {
        this.logger.error({ runId: run.runId, err: error }, "could not recover run");
        if (!this.active.has(run.runId)) {
          this.haltUnresumed(
            run.runId,
            `this server could not resume it (${errorMessage(error)})`,
            "The server log has details. Cancel the run, or fix the cause and restart flowd to resume it.",
          );
        }
        summary.skipped.push(run.runId);
      }
    }
    this.loadWaits(summary);
    // Committed before the server answers anyone: WorkflowResumed, cancels, crash-loop errors.
    this.eventLog.flushNow();
    return summary;
  }

  /** Tells a run's followers, now and later, that this process will not run it: why, and what to do. */
  private haltUnresumed(runId: string, why: string, whatToDo: string): void {
    this.eventLog.halt(runId, Errors.runNotResumed(runId, why, whatToDo));
  }

  private recoverRun(run: RunRow): keyof RecoverySummary {
    const log = this.logger.child({ runId: run.runId, workflowId: run.workflowId });
    if (run.cancelRequestedAt !== null) {
      this.eventLog.append(run.runId, { event: "WorkflowCancelled", reason: "Cancelled by request (honoured after a restart)" });
      log.info("run cancelled on recovery: its cancel request was stored before the restart");
      return "cancelled";
    }
    let workflow: WorkflowDefinition;
    try {
      workflow = this.workflows.get(run.workflowId);
    } catch {
      log.warn("run not resumed: its workflow is not served by this process; serve it again to resume the run");
      this.haltUnresumed(
        run.runId,
        `this server does not run it: its workflow "${run.workflowId}" is not served here`,
        "Restart flowd with that workflow loaded to resume the run, then reconnect with your last_event_index; or cancel the run.",
      );
      return "skipped";
    }
    if (run.lastEventIndex < 0) {
      // The process died between creating the run and its first event: start it afresh.
      this.launch(workflow, run, null);
      log.info("run restarted: it had not begun before the restart");
      return "restarted";
    }
    const afterCrash = run.pausedAt === null;
    if (afterCrash && run.crashResumes >= this.options.maxCrashResumes) {
      const error =
        `Run gave up after the server stopped unexpectedly ${run.crashResumes + 1} times while running it ` +
        `(resumed ${run.crashResumes} times; the limit is FLOWD_MAX_RESUMES=${this.options.maxCrashResumes}). ` +
        "A step may be crashing the server; check the server log.";
      this.eventLog.append(run.runId, { event: "WorkflowError", error });
      log.error({ crashResumes: run.crashResumes }, "run failed on recovery: crash loop guard");
      return "failed";
    }
    const state = this.resumeState.read(run.runId);
    const first = state.interruptedSteps[0];
    const attempt = run.attempt + 1;
    this.eventLog.append(run.runId, {
      event: "WorkflowResumed",
      attempt,
      after_crash: afterCrash,
      resume_step_name: first?.name ?? null,
      resume_step_path: first?.path ?? null,
      restored_steps: state.checkpoints.filter((c) => c.stepName !== null).length,
      superseded_from_index: first ? first.index : null,
      superseded_to_index: first ? run.lastEventIndex : null,
    });
    this.launch(workflow, { ...run, attempt }, state);
    log.info({ attempt, afterCrash, resumeStep: first?.path ?? null, restored: state.checkpoints.length }, "run resumed");
    return "resumed";
  }

  /**
   * Stops every run without ending it in the log (it resumes at the next start): first
   * at its next step boundary, waiting up to `drainMs`; then at its next content
   * boundary, waiting up to `abortMs`. Stopped runs are marked paused, not crashed.
   */
  async shutdown(drainMs: number, abortMs: number): Promise<void> {
    this.draining = true;
    // Waiting runs stay as stored; the next start wakes them at their times.
    this.waits.close();
    await this.waitForRuns(drainMs);
    for (const run of this.active.values()) run.controller.abort(new RunInterrupted("shutdown"));
    await this.waitForRuns(abortMs);
    this.closed = true;
    this.eventLog.flushNow();
    if (this.active.size > 0) {
      // A step that ignores its signal is not a crash: these resume at the next start
      // without counting toward the crash loop guard.
      for (const runId of this.active.keys()) {
        try {
          this.runStore.markPaused(runId);
        } catch (error) {
          this.logger.error({ runId, err: error }, "could not mark a busy run paused; it resumes as after a crash");
        }
      }
      this.logger.warn({ runs: [...this.active.keys()] }, "runs still busy at shutdown (a step ignores input.signal); they resume at the next start");
    }
  }

  private async waitForRuns(ms: number): Promise<void> {
    if (this.active.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    });
    await Promise.race([Promise.allSettled([...this.active.values()].map((r) => r.done)), timeout]);
    clearTimeout(timer);
  }

  /**
   * Executes a run: a new one (`resume` null), a resumed one, or (`resume` a function,
   * read once what ended its wait is committed) one that goes on after a wait.
   */
  private launch(workflow: WorkflowDefinition, run: RunRow, resume: ResumeState | null | (() => ResumeState)): void {
    const controller = new AbortController();
    const entry: ActiveRun = { controller, done: Promise.resolve() };
    this.active.set(run.runId, entry);
    entry.done = this.execute(workflow, run, controller.signal, resume).finally(() => {
      if (this.active.get(run.runId) === entry) this.active.delete(run.runId);
      if (this.goOnAfter.delete(run.runId)) this.goOn(run.runId);
    });
  }

  private async execute(
    workflow: WorkflowDefinition,
    run: RunRow,
    signal: AbortSignal,
    resumeFrom: ResumeState | null | (() => ResumeState),
  ): Promise<void> {
    const startedAt = run.startedAt ?? Date.now();
    const outputs: Record<string, unknown> = {};
    const restored = new Map<string, unknown>();
    let started = new Set<string>();
    /** The log's commit count when the run's latest checkpoint not yet known to be committed was emitted. */
    let lastCheckpointAt: number | null = null;
    const ctx: RunContext = {
      runId: run.runId,
      sessionId: run.sessionId,
      message: run.input,
      additionalData: run.additionalData,
      attempt: run.attempt,
      signal,
      isDraining: () => this.draining,
      outputs,
      restored,
      models: this.options.models,
      emit: (body: RunEventBody, checkpoint?: Checkpoint, consumesSignal?: number) => {
        if (this.closed) throw new RunInterrupted("shutdown");
        // Sent before the wait this run goes on after: not twice.
        if (started.size > 0 && START_EVENT_NAMES.has(body.event) && "step_path" in body) {
          if (started.delete(startKey(body.event, body.step_path, iterationOf(body)))) return;
        }
        this.eventLog.append(run.runId, body, checkpoint, consumesSignal);
        // The latest one: commits are in order, so once it is committed every earlier one is.
        if (checkpoint) lastCheckpointAt = this.eventLog.commitCount;
        if (consumesSignal !== undefined) {
          this.claimedSignals.add(consumesSignal);
          void this.eventLog.flushed().then(() => this.claimedSignals.delete(consumesSignal));
        }
      },
      hasStarted: (key: string) => started.has(key),
      openWait: (key: string, record: WaitRecord, events: readonly RunEventBody[]) => {
        events.forEach((body, i) =>
          ctx.emit(body, i === events.length - 1 ? { path: `${key}${WAIT_SUFFIX}`, stepName: null, output: record } : undefined),
        );
        this.waits.open(run.runId, key, record);
        return new RunSuspended(key);
      },
      resumeWait: (key: string, record: WaitRecord) => {
        if (!this.endedWaits.get(run.runId)?.has(key)) this.waits.open(run.runId, key, record);
        return new RunSuspended(key);
      },
      takeSignal: (name: string) => this.runStore.oldestSignal(run.runId, name, this.claimedSignals),
      resolvedRequirements: () => [
        ...[...restored].filter(([path]) => isResolutionPath(path)).map(([, resolution]) => (resolution as StoredResolution).requirement),
        // Another branch's pause still open: listed too, before the one opening now.
        ...[...this.waits.of(run.runId).values()].flatMap((record) => (record.kind === "human" ? [record.requirement] : [])),
      ],
      attemptRange: async (stepPath: string) => {
        await this.eventLog.committed(run.runId).catch(() => {
          throw new RunInterrupted("storage");
        });
        return { from: this.resumeState.latestStepStart(run.runId, stepPath), to: this.runStore.get(run.runId)?.lastEventIndex ?? null };
      },
      settled: () => {
        if (lastCheckpointAt === null) return null;
        const at = lastCheckpointAt;
        return this.eventLog.committedSince(run.runId, at).then(
          () => {
            // Parallel branches may have emitted more meanwhile: those are still to wait for.
            if (lastCheckpointAt === at) lastCheckpointAt = null;
          },
          () => {
            // The log has told the run's followers why, and onStorageFailure stops the run.
            throw new RunInterrupted("storage");
          },
        );
      },
      // A producer that never awaits I/O waits for the next turn, which lets sockets be served.
      breathe: () => this.eventLog.yieldTurn(run.runId),
    };
    try {
      if (!resumeFrom) ctx.emit({ event: "WorkflowStarted", input: run.input });
      // Steps begin once the run is committed (I8: nothing acts for a run a crash could
      // lose), at the end of this turn: whoever started the run (and every other request
      // that arrived with it) is answered first, and WorkflowStarted goes out with that commit.
      await this.eventLog.committed(run.runId).catch(() => {
        throw new RunInterrupted("storage");
      });
      const resume = typeof resumeFrom === "function" ? resumeFrom() : resumeFrom;
      // Every wait ended so far is in what was just read.
      this.endedWaits.delete(run.runId);
      for (const checkpoint of resume?.checkpoints ?? []) {
        restored.set(checkpoint.path, checkpoint.output);
        if (checkpoint.stepName !== null) outputs[checkpoint.stepName] = checkpoint.output;
      }
      if (resume) started = resume.started;
      const output = await runSequence(ctx, workflow.steps, null, run.input);
      if (signal.aborted) throw signal.reason as RunInterrupted;
      ctx.emit({ event: "WorkflowCompleted", content: toJsonSafe(output), duration_ms: Date.now() - startedAt });
      this.logger.info({ runId: run.runId }, "run completed");
    } catch (error) {
      if (error instanceof RunSuspended) await this.eventLog.flushed();
      // A cancel that came while the run was going to sleep is honoured here, not lost.
      if (error instanceof RunSuspended && !signal.aborted) {
        this.onSuspended(run.runId);
        return;
      }
      this.finishAfterError(ctx, error instanceof RunSuspended ? signal.reason : error);
    }
    // A run is done when its last event is committed.
    await this.eventLog.flushed();
  }

  /**
   * The run's execution ended on a wait. Its WaitStarted or WorkflowPaused set its status;
   * a run that only suspended again on waits an earlier execution opened (a Parallel
   * branch went on meanwhile) is marked here.
   */
  private onSuspended(runId: string): void {
    this.logger.debug({ runId }, "run waits");
    if (this.goOnAfter.has(runId)) return;
    const [first] = this.waits.of(runId).values();
    if (!first) return;
    try {
      // Its own WaitStarted or WorkflowPaused said so, unless a later event of another branch said otherwise.
      const status = this.runStore.get(runId)?.status;
      if (status === "waiting" || status === "paused") return;
      this.runStore.markSuspended(runId, waitColumns(first));
    } catch (error) {
      this.logger.error({ runId, err: error }, "could not mark a run as waiting");
    }
  }

  /** Ends one of a run's waits with `end` (recorded with the wait's outcome), and lets the run go on. False if it was not open. */
  private endWait(runId: string, key: string, end: WaitEnd): boolean {
    if (!this.waits.take(runId, key)) return false;
    let ended = this.endedWaits.get(runId);
    if (!ended) {
      ended = new Set();
      this.endedWaits.set(runId, ended);
    }
    ended.add(key);
    this.eventLog.append(runId, end.body, { path: key, stepName: null, output: end.outcome }, end.consumesSignal);
    if (this.active.has(runId)) this.goOnAfter.add(runId);
    else this.goOn(runId);
    return true;
  }

  /** Executes a run again after a wait ended: it walks back to where it waited, on its stored outcomes. */
  private goOn(runId: string): void {
    const run = this.runStore.get(runId);
    if (!run || isFinished(run.status)) return;
    if (run.cancelRequestedAt !== null) {
      this.waits.dropRun(runId);
      this.eventLog.append(runId, { event: "WorkflowCancelled", reason: "Cancelled by request" });
      return;
    }
    let workflow: WorkflowDefinition;
    try {
      workflow = this.workflows.get(run.workflowId);
    } catch {
      this.haltUnresumed(
        runId,
        `this server does not run it: its workflow "${run.workflowId}" is not served here`,
        "Restart flowd with that workflow loaded; the run goes on from where it waited.",
      );
      return;
    }
    this.launch(workflow, run, () => this.resumeState.readForWake(runId));
  }

  /** A wait's deadline passed: a timer wakes, a signal wait times out, a person's time is up. */
  private onWaitDue(runId: string, key: string, record: WaitRecord): void {
    const { loc } = record;
    if (record.kind === "timer") {
      this.endWait(runId, key, {
        body: { event: "WaitCompleted", ...loc, wait_kind: "timer", wait_key: key, timed_out: false },
        outcome: { timedOut: false },
      });
      return;
    }
    if (record.kind === "signal") {
      this.endWait(runId, key, {
        body: { event: "WaitCompleted", ...loc, wait_kind: "signal", wait_key: key, timed_out: true },
        outcome: { timedOut: true },
      });
      return;
    }
    const resolution = timeoutResolution(record);
    if (resolution) {
      this.endWait(runId, key, { body: continuedEvent(record, resolution), outcome: resolution });
      return;
    }
    // onTimeout "cancel".
    const reason = `No one answered step "${loc.step_name}" in time (hitlTimeoutMs; onTimeout: "cancel")`;
    if (this.active.has(runId)) {
      this.active.get(runId)?.controller.abort(new RunInterrupted("cancelled", reason));
      return;
    }
    this.waits.dropRun(runId);
    this.eventLog.append(runId, { event: "WorkflowCancelled", reason });
  }

  /**
   * Continues a paused run with a person's answer (AgentOS's `step_requirements`): records
   * `StepContinued` (or `StepExecutorContinued`) and lets it go on. Returns the run as it
   * was before (its `lastEventIndex` is where what follows begins).
   */
  continueRun(runId: string, answers: readonly RequirementAnswer[]): RunRow {
    const run = this.runStore.get(runId);
    if (!run) throw Errors.runNotFound(runId);
    if (isFinished(run.status)) throw Errors.runNotPaused(runId, run.status);
    this.requireServed(run);
    const open = this.waits.humanWait(runId, answers.map((answer) => answer.step_id));
    if (!open) throw Errors.runNotPaused(runId, run.status);
    const [key, record] = open;
    const resolution: StoredResolution = resolveAnswer(runId, record, answers);
    this.endWait(runId, key, { body: continuedEvent(record, resolution), outcome: resolution });
    this.logger.info({ runId, step: record.loc.step_path }, "paused run continued");
    return run;
  }

  /**
   * Sends a signal to a run: ends its oldest wait for `name`, or keeps it for the next one.
   * Resolves once it is stored.
   */
  async signal(runId: string, name: string, payload: unknown): Promise<{ run: RunRow; delivered: boolean }> {
    const run = this.runStore.get(runId);
    if (!run) throw Errors.runNotFound(runId);
    if (isFinished(run.status)) throw Errors.runFinished(runId, run.status, "it takes no more signals");
    this.requireServed(run);
    const open = this.waits.signalWait(runId, name);
    if (!open) {
      this.runStore.keepSignal(runId, name, payload, MAX_KEPT_SIGNALS);
      this.logger.info({ runId, signal: name }, "signal kept for the run's next wait");
      return { run, delivered: false };
    }
    const [key, record] = open;
    const problem = record.schema ? schemaProblem(record.schema, payload, "payload", "payload") : null;
    if (problem) throw Errors.invalidSignal(runId, name, problem.replace(/\.$/, ""));
    this.endWait(runId, key, {
      body: { event: "WaitCompleted", ...record.loc, wait_kind: "signal", wait_key: key, timed_out: false, payload: toJsonSafe(payload) },
      outcome: { payload },
    });
    await this.eventLog.committed(runId);
    return { run, delivered: true };
  }

  /** Refuses to act for a run whose workflow this server does not run: nothing could go on with it. */
  private requireServed(run: RunRow): void {
    if (this.workflows.has(run.workflowId)) return;
    throw Errors.runNotResumed(
      run.runId,
      `this server does not run it: its workflow "${run.workflowId}" is not served here`,
      "Restart flowd with that workflow loaded, then send this again; nothing was recorded.",
    );
  }

  /** How many runs wait (for a timer, a signal or a person) with nothing executing. */
  get waitingRunCount(): number {
    return this.waits.runCount;
  }

  /**
   * At start-up: registers every open wait of every waiting or paused run (the timers at
   * their stored times), without executing anything.
   */
  private loadWaits(summary: RecoverySummary): void {
    const interrupted = this.resumeState.interruptedWhileWaiting();
    for (const run of this.resumeState.suspendedRuns()) {
      const served = this.workflows.has(run.workflowId);
      const row = served && run.cancelRequestedAt === null && interrupted.has(run.runId) ? this.runStore.get(run.runId) : undefined;
      if (row) {
        // A branch was running beside the wait: that is a crash to resume from.
        summary[this.recoverRun(row)].push(run.runId);
        continue;
      }
      // A run whose workflow is not served here waits on, untouched, for a server that runs it.
      if (served) for (const { key, record } of run.waits) this.waits.open(run.runId, key, record as WaitRecord);
      if (!served && run.cancelRequestedAt === null) {
        this.logger.warn({ runId: run.runId, workflowId: run.workflowId }, "waiting run not served: its workflow is not loaded here");
        summary.skipped.push(run.runId);
      } else if (run.cancelRequestedAt !== null) {
        this.waits.dropRun(run.runId);
        this.eventLog.append(run.runId, { event: "WorkflowCancelled", reason: "Cancelled by request (honoured after a restart)" });
        summary.cancelled.push(run.runId);
      } else if (!this.waits.has(run.runId)) {
        // Nothing stored says what it waits for: let it find out by going on.
        this.goOn(run.runId);
        summary.resumed.push(run.runId);
      } else {
        summary.waiting.push(run.runId);
      }
    }
  }

  private finishAfterError(ctx: RunContext, error: unknown): void {
    // Ended (or stopped here): what another branch waited for ends with it.
    if (!(error instanceof RunInterrupted) || error.reason === "cancelled") this.waits.dropRun(ctx.runId);
    try {
      if (error instanceof RunInterrupted) {
        if (error.reason === "cancelled") {
          ctx.emit({ event: "WorkflowCancelled", reason: error.detail ?? "Cancelled by request" });
          this.logger.info({ runId: ctx.runId }, "run cancelled");
        } else if (error.reason === "storage") {
          this.logger.error({ runId: ctx.runId }, "run stopped: its events could not be stored; it resumes at the next start");
        } else if (!this.closed) {
          this.runStore.markPaused(ctx.runId);
          this.logger.info({ runId: ctx.runId }, "run paused by shutdown; it resumes at the next start");
        }
        return;
      }
      const stepName = error instanceof StepFailed ? error.stepName : undefined;
      ctx.emit({ event: "WorkflowError", error: errorMessage(error), ...(stepName ? { step_name: stepName } : {}) });
      this.logger.warn({ runId: ctx.runId, err: error }, "run failed");
    } catch (appendError) {
      // The log itself refused (database closed or broken): nothing more can be recorded for this run.
      this.logger.error({ runId: ctx.runId, err: appendError, cause: errorMessage(error) }, "could not record the end of a run");
    }
  }
}
