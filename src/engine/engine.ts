import type { Span } from "@opentelemetry/api";
import { endSpan, markFailed, startRunSpan, traceparentOf, within } from "../ops/tracing.ts";
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify as stableStringify } from "safe-stable-stringify";
import type { Logger } from "pino";
import type { ModelProvider } from "../agents/model-provider.ts";
import { errorMessage, Errors } from "../errors.ts";
import type { RunEventBody } from "../protocol/run-events.ts";
import type { RequirementAnswer } from "../protocol/hitl.ts";
import { isFinished, SUSPENDED_STATUSES } from "../protocol/run-status.ts";
import { startKey, START_EVENTS, WAIT_SUFFIX } from "../store/resume-state.ts";
import type { Checkpoint, IdempotentStart, ResumeReads, ResumeState, RunLog, RunRecords, RunRow, Store } from "../store/store.ts";
import { timeOrderedId } from "../store/time-ordered-id.ts";
import type { WorkflowDefinition } from "../workflows/definition.ts";
import type { WorkflowRegistry } from "../workflows/registry.ts";
import { isResolutionPath, type StoredResolution } from "./human-input.ts";
import { RunInterrupted, RunSuspended, StepFailed } from "./interruption.ts";
import { WaitingRuns } from "./waiting-runs.ts";
import type { WaitRecord } from "./waits.ts";
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

/** How long a start waits for the run another node took its idempotency key for to be stored. */
const RESERVED_RUN_WAIT_MS = 5000;

/** What a client gives to start a run. */
export interface StartRunRequest {
  workflowId: string;
  message: string;
  sessionId?: string | undefined;
  userId?: string | undefined;
  additionalData?: unknown;
  /** A repeat of a start with this key (same workflow, within the TTL) returns the run the first one started. */
  idempotencyKey?: string | undefined;
  /** The caller's W3C traceparent: the run's span continues that trace (a malformed one is ignored). */
  traceparent?: string | undefined;
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
  /** Unfinished runs another live node executes (PostgreSQL): left to it. */
  elsewhere: string[];
}

interface ActiveRun {
  controller: AbortController;
  done: Promise<void>;
}

/** Start events a run going on after a wait does not send twice. */
const START_EVENT_NAMES: ReadonlySet<string> = new Set(START_EVENTS);

/** The iteration of a start event that has one (LoopIterationStarted). */
function iterationOf(body: RunEventBody): number | undefined {
  return "iteration" in body ? body.iteration : undefined;
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
  /** Runs that wait, and what ends their waits. */
  private readonly waiting: WaitingRuns;
  /** Runs whose wait ended while their execution was still winding down: they go on once it has. */
  private readonly goOnAfter = new Set<string>();

  private readonly runStore: RunRecords;
  private readonly eventLog: RunLog;
  private readonly resumeState: ResumeReads;

  constructor(
    private readonly workflows: WorkflowRegistry,
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly options: EngineOptions,
  ) {
    this.runStore = store.runs;
    this.eventLog = store.log;
    this.resumeState = store.resume;
    this.waiting = new WaitingRuns(workflows, store.runs, store.log, store.resume, store.ownership, logger, {
      goOn: (runId) => void this.goOn(runId),
      isActive: (runId) => this.active.has(runId),
      cancelWaiting: (runId, reason) => this.cancelWaiting(runId, reason),
      resumeAfterCrash: (run) => this.recoverRun(run),
    });
  }

  /**
   * Creates the run and starts it. Its row and `WorkflowStarted` (index 0) are committed
   * together in the next group commit; a caller that follows the run from index -1 right
   * away gets every event live.
   */
  async start(request: StartRunRequest): Promise<RunRow> {
    const workflow = this.workflows.get(request.workflowId);
    const idempotency = request.idempotencyKey === undefined ? undefined : { key: request.idempotencyKey, requestHash: requestHash(request) };
    if (idempotency) {
      const stored = await this.runStore.idempotentStart(workflow.id, idempotency.key, Date.now() - this.options.idempotencyTtlMs);
      // Looked up after the read: a repeat that arrived meanwhile is in the batch not yet committed.
      const earlier = this.eventLog.pendingStart(workflow.id, idempotency.key) ?? stored;
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
    const runId = timeOrderedId();
    // Other nodes start runs too (PostgreSQL): the key is taken before the run's id goes out.
    // (On SQLite nothing may be awaited between the look-ups above and createRun below.)
    if (idempotency && this.store.ownership.shared) {
      const earlier = await this.reserveKey(workflow.id, idempotency, runId);
      if (earlier) return earlier;
      // A repeat of this start after the shutdown waits for the run, then takes the key over.
      if (this.draining) throw Errors.shuttingDown();
    }
    // The first attempt's span: stored with the run, so that a resumed attempt links to it.
    const span = startRunSpan({ runId, workflowId: workflow.id, attempt: 1 }, request.traceparent ?? null, null);
    const run = this.eventLog.createRun({
      runId,
      workflowId: workflow.id,
      workflowName: workflow.name,
      sessionId: request.sessionId ?? timeOrderedId(),
      userId: request.userId ?? null,
      input: request.message,
      additionalData: request.additionalData ?? null,
      traceParent: traceparentOf(span),
      idempotency,
    });
    this.launch(workflow, run, null, span);
    this.logger.info({ runId: run.runId, workflowId: workflow.id }, "run started");
    return run;
  }

  /**
   * Takes the key for `runId`: null once taken, else the run another start took it for (on
   * any node). That run's row may not be committed yet: it is waited for, and if it never
   * comes (its node died first), the key is taken over.
   */
  private async reserveKey(workflowId: string, idempotency: IdempotentStart, runId: string): Promise<RunRow | null> {
    const reservation = { workflowId, ...idempotency, runId, now: Date.now(), notBefore: Date.now() - this.options.idempotencyTtlMs };
    const holder = await this.runStore.reserveIdempotencyKey(reservation);
    if (!holder) return null;
    if (holder.requestHash !== idempotency.requestHash) throw Errors.idempotencyKeyReused(idempotency.key, workflowId, holder.runId);
    for (const started = Date.now(); Date.now() - started < RESERVED_RUN_WAIT_MS; await sleep(10)) {
      const run = await this.runStore.get(holder.runId);
      if (run) return run;
    }
    this.logger.warn({ runId: holder.runId, workflowId }, "an idempotency key's run was never stored (its node stopped first): a new run takes the key");
    if (!(await this.runStore.reserveIdempotencyKey({ ...reservation, takeFrom: holder.runId }))) return null;
    // Another start took it over first: its run is the one.
    return this.reserveKey(workflowId, idempotency, runId);
  }

  /**
   * Asks a run to stop; it ends with `WorkflowCancelled` at its next step or content
   * boundary, or at once if nothing in this process runs it (it halted here).
   */
  async cancel(runId: string): Promise<RunRow> {
    const run = await this.runStore.get(runId);
    if (!run) throw Errors.runNotFound(runId);
    if (isFinished(run.status)) {
      throw Errors.runFinished(runId, run.status, "there is nothing to cancel");
    }
    // Stored first, so a crash before the run reaches a boundary still ends it as cancelled
    // (and a node that executes it sees it, PostgreSQL).
    await this.runStore.markCancelRequested(runId);
    if (this.store.ownership.shared && !this.active.has(runId)) {
      if (!(await this.store.ownership.claim(runId))) {
        // Another node executes it: told now, it stops at its next boundary.
        this.store.ownership.wake(runId);
        this.logger.info({ runId }, "run cancel requested (another node executes it)");
        return run;
      }
      if (this.active.has(runId)) {
        this.active.get(runId)?.controller.abort(new RunInterrupted("cancelled"));
        return run;
      }
      const now = await this.runStore.get(runId);
      if (!now || isFinished(now.status)) {
        this.store.ownership.release(runId);
        return run;
      }
      if (!SUSPENDED_STATUSES.has(now.status)) {
        // Its node stopped and the lease lapsed: recovery honours the stored cancel.
        await this.recoverRun(now);
        this.releaseWhenCommitted(runId);
        return run;
      }
      this.waiting.drop(runId);
      this.eventLog.append(runId, { event: "WorkflowCancelled", reason: "Cancelled by request" });
      this.releaseWhenCommitted(runId);
      this.logger.info({ runId }, "waiting run cancelled");
      return run;
    }
    // A waiting or paused run has nothing executing: it ends now.
    if (!this.active.has(runId) && (this.waiting.has(runId) || SUSPENDED_STATUSES.has(run.status))) {
      this.waiting.drop(runId);
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

  /**
   * Another node took the run over (this node's lease lapsed: it was paused or cut off):
   * its execution here stops without writing anything more.
   */
  onLost(runId: string, error?: unknown): void {
    const active = this.active.get(runId);
    this.logger.warn({ runId, err: error }, "this node lost the run to another node (its lease lapsed); its execution here stops");
    this.waiting.drop(runId);
    active?.controller.abort(new RunInterrupted("lost"));
  }

  /** Gives the run's lease up once what was appended for it is committed (nothing here executes it). */
  private releaseWhenCommitted(runId: string): void {
    if (!this.store.ownership.shared) return;
    void this.eventLog.flushed().then(() => {
      if (!this.active.has(runId)) this.store.ownership.release(runId);
    });
  }

  /** An unfinished run whose node stopped (or handed it over): take it and resume it, as a restart does. */
  private async adopt(runId: string): Promise<void> {
    if (this.active.has(runId) || this.draining) return;
    try {
      if (!(await this.store.ownership.claim(runId))) return;
      const run = await this.runStore.get(runId);
      if (this.active.has(runId)) return;
      if (!run || isFinished(run.status)) {
        this.store.ownership.release(runId);
        return;
      }
      if (SUSPENDED_STATUSES.has(run.status)) {
        // Its node stopped while a branch ran beside its wait: a crash to resume from, as at a restart.
        if (run.cancelRequestedAt === null && this.workflows.has(run.workflowId) && (await this.resumeState.interruptedWhileWaiting()).has(runId)) {
          const outcome = await this.recoverRun(run);
          this.logger.info({ runId, outcome }, "took over a run whose node stopped while a branch of it ran beside a wait");
          if (outcome !== "resumed" && outcome !== "restarted") this.releaseWhenCommitted(runId);
          return;
        }
        // Else it only waits (its node stopped while ending a wait): the waits are kept here, and whoever ends one takes it.
        await this.waiting.reload(runId);
        if (run.cancelRequestedAt !== null) this.cancelWaiting(runId, "Cancelled by request");
        else this.store.ownership.release(runId);
        return;
      }
      const outcome = await this.recoverRun(run);
      this.logger.info({ runId, outcome }, "took over a run whose node stopped");
      if (outcome !== "resumed" && outcome !== "restarted") this.releaseWhenCommitted(runId);
    } catch (error) {
      this.logger.error({ runId, err: error }, "could not take over a run whose node stopped");
    }
  }

  /** Another node asked this one to look at the run again: a cancel, a kept signal, a run that now waits or was handed over. */
  private async woken(runId: string): Promise<void> {
    try {
      const run = await this.runStore.get(runId);
      if (!run) return;
      if (this.active.has(runId)) {
        if (run.cancelRequestedAt !== null) this.active.get(runId)?.controller.abort(new RunInterrupted("cancelled"));
        else this.waiting.mailboxChanged(runId);
        return;
      }
      if (isFinished(run.status)) {
        this.waiting.drop(runId);
        return;
      }
      if (!SUSPENDED_STATUSES.has(run.status)) {
        if (!this.store.ownership.holds(runId)) await this.adopt(runId);
        return;
      }
      if (run.cancelRequestedAt !== null) {
        // A cancel sent to a node that could not take the run then: whoever takes it now ends it.
        if (await this.store.ownership.claim(runId)) this.cancelWaiting(runId, "Cancelled by request");
        return;
      }
      await this.waiting.reload(runId);
      await this.waiting.deliverKept(runId);
    } catch (error) {
      this.logger.error({ runId, err: error }, "could not look at a run another node announced");
    }
  }

  /** How many runs this process is executing now. */
  get activeRunCount(): number {
    return this.active.size;
  }

  /**
   * Picks up every run the previous process left unfinished: honours stored cancel
   * requests, ends runs that keep crashing the server, and resumes the rest from their
   * checkpoints. The server serves no request until it has finished.
   */
  async recover(): Promise<RecoverySummary> {
    const summary: RecoverySummary = { resumed: [], restarted: [], cancelled: [], failed: [], skipped: [], waiting: [], elsewhere: [] };
    for (const run of await this.resumeState.unfinishedRuns()) {
      try {
        const outcome = await this.recoverRun(run);
        summary[outcome].push(run.runId);
        if (outcome !== "resumed" && outcome !== "restarted" && outcome !== "elsewhere") this.releaseWhenCommitted(run.runId);
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
    const loaded = await this.waiting.load();
    summary.waiting.push(...loaded.waiting);
    summary.cancelled.push(...loaded.cancelled);
    summary.skipped.push(...loaded.skipped);
    for (const { runId, outcome } of loaded.resumed) summary[outcome].push(runId);
    // Committed before the server answers anyone: WorkflowResumed, cancels, crash-loop errors.
    await this.eventLog.flushed();
    if (this.store.ownership.shared) {
      this.store.ownership.watch({
        onLost: (runId) => this.onLost(runId),
        onOrphan: (runId) => void this.adopt(runId),
        onCancelRequested: (runId) => this.active.get(runId)?.controller.abort(new RunInterrupted("cancelled")),
        onWake: (runId) => void this.woken(runId),
      });
    }
    return summary;
  }

  /** Tells a run's followers, now and later, that this process will not run it: why, and what to do. */
  private haltUnresumed(runId: string, why: string, whatToDo: string): void {
    this.eventLog.halt(runId, Errors.runNotResumed(runId, why, whatToDo));
  }

  private async recoverRun(run: RunRow): Promise<Exclude<keyof RecoverySummary, "waiting">> {
    const log = this.logger.child({ runId: run.runId, workflowId: run.workflowId });
    // Another node runs it (PostgreSQL): its lease has not lapsed.
    if (!(await this.store.ownership.claim(run.runId))) return "elsewhere";
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
    const state = await this.resumeState.read(run.runId);
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
    this.waiting.close();
    await this.waitForRuns(drainMs);
    for (const run of this.active.values()) run.controller.abort(new RunInterrupted("shutdown"));
    await this.waitForRuns(abortMs);
    this.closed = true;
    await this.eventLog.flushed();
    if (this.active.size > 0) {
      // A step that ignores its signal is not a crash: these resume at the next start
      // without counting toward the crash loop guard.
      for (const runId of this.active.keys()) {
        try {
          await this.runStore.markPaused(runId);
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
  private launch(workflow: WorkflowDefinition, run: RunRow, resume: ResumeState | null | (() => Promise<ResumeState>), span?: Span): void {
    const controller = new AbortController();
    const entry: ActiveRun = { controller, done: Promise.resolve() };
    this.active.set(run.runId, entry);
    entry.done = this.execute(workflow, run, controller.signal, resume, span).finally(() => {
      if (this.active.get(run.runId) === entry) this.active.delete(run.runId);
      if (this.goOnAfter.delete(run.runId)) void this.goOn(run.runId);
      else if (this.store.ownership.shared && !this.draining && this.store.ownership.holds(run.runId)) {
        // It ended or waits: another node may act on it now (a waiting run's timers are on every node).
        this.store.ownership.release(run.runId);
        this.store.ownership.wake(run.runId);
      }
    });
  }

  private async execute(
    workflow: WorkflowDefinition,
    run: RunRow,
    signal: AbortSignal,
    resumeFrom: ResumeState | null | (() => Promise<ResumeState>),
    given?: Span,
  ): Promise<void> {
    // This attempt's span (a run that goes on after a wait or a crash links to its first one).
    const span = given ?? startRunSpan({ runId: run.runId, workflowId: run.workflowId, attempt: run.attempt }, null, run.traceParent);
    try {
      await this.executeTraced(workflow, run, signal, resumeFrom, span);
      endSpan(span);
    } catch (error) {
      endSpan(span, error);
      throw error;
    }
  }

  private async executeTraced(
    workflow: WorkflowDefinition,
    run: RunRow,
    signal: AbortSignal,
    resumeFrom: ResumeState | null | (() => Promise<ResumeState>),
    span: Span,
  ): Promise<void> {
    const startedAt = run.startedAt ?? Date.now();
    const outputs: Record<string, unknown> = {};
    const restored = new Map<string, unknown>();
    let started = new Set<string>();
    /** The log's append mark of the run's latest checkpoint not yet known to be committed. */
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
      trace: within(span),
      emit: (body: RunEventBody, checkpoint?: Checkpoint, consumesSignal?: number) => {
        if (this.closed) throw new RunInterrupted("shutdown");
        // Sent before the wait this run goes on after: not twice.
        if (started.size > 0 && START_EVENT_NAMES.has(body.event) && "step_path" in body) {
          if (started.delete(startKey(body.event, body.step_path, iterationOf(body)))) return;
        }
        this.eventLog.append(run.runId, body, checkpoint, consumesSignal);
        // The latest one: commits are in order, so once it is committed every earlier one is.
        if (checkpoint) lastCheckpointAt = this.eventLog.appendMark;
        if (consumesSignal !== undefined) this.waiting.claim(consumesSignal);
      },
      hasStarted: (key: string) => started.has(key),
      openWait: (key: string, record: WaitRecord, events: readonly RunEventBody[]) => {
        events.forEach((body, i) =>
          ctx.emit(body, i === events.length - 1 ? { path: `${key}${WAIT_SUFFIX}`, stepName: null, output: record } : undefined),
        );
        this.waiting.open(run.runId, key, record);
        return new RunSuspended(key);
      },
      resumeWait: (key: string, record: WaitRecord) => {
        this.waiting.reopen(run.runId, key, record);
        return new RunSuspended(key);
      },
      takeSignal: (name: string) => this.waiting.takeSignal(run.runId, name),
      signalsKept: () => this.waiting.signalsKept(run.runId),
      resolvedRequirements: () => [
        ...[...restored].filter(([path]) => isResolutionPath(path)).map(([, resolution]) => (resolution as StoredResolution).requirement),
        // Another branch's pause still open: listed too, before the one opening now.
        ...this.waiting.openRequirements(run.runId),
      ],
      attemptRange: async (stepPath: string) => {
        await this.eventLog.committed(run.runId).catch(() => {
          throw new RunInterrupted("storage");
        });
        const [from, row] = await Promise.all([this.resumeState.latestStepStart(run.runId, stepPath), this.runStore.get(run.runId)]);
        return { from, to: row?.lastEventIndex ?? null };
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
      const resume = typeof resumeFrom === "function" ? await resumeFrom() : resumeFrom;
      this.waiting.checkpointsRead(run.runId);
      for (const checkpoint of resume?.checkpoints ?? []) {
        restored.set(checkpoint.path, checkpoint.output);
        if (checkpoint.stepName !== null) outputs[checkpoint.stepName] = checkpoint.output;
      }
      if (resume) started = resume.started;
      const output = await runSequence(ctx, workflow.steps, null, run.input);
      if (signal.aborted) throw signal.reason as RunInterrupted;
      ctx.emit({ event: "WorkflowCompleted", content: toJsonSafe(output), duration_ms: Date.now() - startedAt });
      span.setAttribute("flowd.outcome", "completed");
      this.logger.info({ runId: run.runId }, "run completed");
    } catch (error) {
      if (error instanceof RunSuspended) await this.eventLog.flushed();
      // A cancel that came while the run was going to sleep is honoured here, not lost.
      span.setAttribute("flowd.outcome", error instanceof RunSuspended && !signal.aborted ? "waiting" : error instanceof RunInterrupted ? `interrupted (${error.reason})` : "error");
      if (!(error instanceof RunSuspended) && !(error instanceof RunInterrupted)) markFailed(span, error);
      if (error instanceof RunSuspended && !signal.aborted) {
        // Marked waiting before the run is let go: another node (or this one) woken then must not take a run whose row still
        // says running for one whose node died, and resume it as crashed.
        if (!this.goOnAfter.has(run.runId)) await this.waiting.suspended(run.runId);
        return;
      }
      await this.finishAfterError(ctx, error instanceof RunSuspended ? signal.reason : error);
    }
    // A run is done when its last event is committed.
    await this.eventLog.flushed();
  }

  /** Executes a run again after a wait ended: it walks back to where it waited, on its stored outcomes. */
  private async goOn(runId: string): Promise<void> {
    try {
      await this.goOnNow(runId);
    } catch (error) {
      this.logger.error({ runId, err: error }, "a run's wait ended, but it could not go on; it goes on when it is taken again");
      this.releaseWhenCommitted(runId);
    }
  }

  private async goOnNow(runId: string): Promise<void> {
    // Its execution is still winding down (a Parallel branch): once it has ended.
    if (this.active.has(runId)) {
      this.goOnAfter.add(runId);
      return;
    }
    // Whoever ended its wait holds it; a run found waiting at start-up with nothing stored to wait for is taken here.
    if (!(await this.store.ownership.claim(runId))) return;
    const run = await this.runStore.get(runId);
    // Started again meanwhile (another wait of it ended while its row was read).
    if (this.active.has(runId)) {
      this.goOnAfter.add(runId);
      return;
    }
    if (!run || isFinished(run.status)) {
      this.releaseWhenCommitted(runId);
      return;
    }
    if (run.cancelRequestedAt !== null) {
      this.waiting.drop(runId);
      this.eventLog.append(runId, { event: "WorkflowCancelled", reason: "Cancelled by request" });
      this.releaseWhenCommitted(runId);
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
      this.releaseWhenCommitted(runId);
      return;
    }
    this.launch(workflow, run, () => this.resumeState.readForWake(runId));
  }

  /** Ends a run that waits as cancelled; one winding down is stopped and records it itself. */
  private cancelWaiting(runId: string, reason: string): void {
    const active = this.active.get(runId);
    if (active) {
      active.controller.abort(new RunInterrupted("cancelled", reason));
      return;
    }
    this.waiting.drop(runId);
    this.eventLog.append(runId, { event: "WorkflowCancelled", reason });
    this.releaseWhenCommitted(runId);
  }

  /** Continues a paused run with a person's answer (see WaitingRuns.continueRun). */
  continueRun(runId: string, answers: readonly RequirementAnswer[]): Promise<RunRow> {
    return this.waiting.continueRun(runId, answers);
  }

  /** Sends a signal to a run (see WaitingRuns.signal). */
  signal(runId: string, name: string, payload: unknown): Promise<{ run: RunRow; delivered: boolean }> {
    return this.waiting.signal(runId, name, payload);
  }

  /** How many runs wait (for a timer, a signal or a person) with nothing executing. */
  get waitingRunCount(): number {
    return this.waiting.count;
  }

  /** Records how a run ended after an error; resolves once a run stopped by shutdown is marked paused. */
  private finishAfterError(ctx: RunContext, error: unknown): Promise<void> | undefined {
    // Ended (or stopped here): what another branch waited for ends with it.
    if (!(error instanceof RunInterrupted) || error.reason === "cancelled") this.waiting.drop(ctx.runId);
    try {
      if (error instanceof RunInterrupted) {
        if (error.reason === "cancelled") {
          ctx.emit({ event: "WorkflowCancelled", reason: error.detail ?? "Cancelled by request" });
          this.logger.info({ runId: ctx.runId }, "run cancelled");
        } else if (error.reason === "lost") {
          this.logger.warn({ runId: ctx.runId }, "run stopped here: another node executes it now");
        } else if (error.reason === "storage") {
          this.logger.error({ runId: ctx.runId }, "run stopped: its events could not be stored; it resumes at the next start");
        } else if (!this.closed) {
          return this.runStore.markPaused(ctx.runId).catch((markError: unknown) =>
            this.logger.error({ runId: ctx.runId, err: markError }, "could not mark a stopped run paused; it resumes as after a crash"),
          );
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
