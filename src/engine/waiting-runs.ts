import type { Logger } from "pino";
import { Errors } from "../errors.ts";
import type { RequirementAnswer, StepRequirement } from "../protocol/hitl.ts";
import type { RunEventBody } from "../protocol/run-events.ts";
import { isFinished } from "../protocol/run-status.ts";
import type { EventLog } from "../store/event-log.ts";
import type { ResumeStateReader } from "../store/resume-state.ts";
import type { RunStore, StoredSignal } from "../store/run-store.ts";
import type { RunRow } from "../store/schema.ts";
import type { WorkflowRegistry } from "../workflows/registry.ts";
import { continuedEvent, resolveAnswer, timeoutResolution, type StoredResolution } from "./human-input.ts";
import { toJsonSafe } from "./json-safe.ts";
import { schemaProblem } from "./payload-schema.ts";
import { WaitBoard, waitColumns, type WaitRecord } from "./waits.ts";

/** Signals a run keeps for waits it has not reached; more are refused (a client cannot fill the disk through one run). */
export const MAX_KEPT_SIGNALS = 1000;

/** What WaitingRuns needs of the engine that executes runs. */
export interface RunExecutor {
  /** A wait of the run ended: execute it again from its checkpoints (once a winding-down execution has ended). */
  goOn(runId: string): void;
  /** Ends a run that waits as cancelled, with `reason` (stopping an execution that is winding down). */
  cancelWaiting(runId: string, reason: string): void;
  /** Resumes a run as after a crash (see Engine.recover); says what was done. */
  resumeAfterCrash(run: RunRow): "resumed" | "restarted" | "cancelled" | "failed" | "skipped";
}

/** The end of a wait, as the run records it: the event, and the outcome its durable call returns. */
interface WaitEnd {
  body: RunEventBody;
  outcome: unknown;
  consumesSignal?: number;
}

/** What start-up did with the runs that wait. */
export interface WaitingRunsLoaded {
  waiting: string[];
  cancelled: string[];
  skipped: string[];
  /** Resumed (as after a crash, or to find out what they wait for), by what was done. */
  resumed: { runId: string; outcome: ReturnType<RunExecutor["resumeAfterCrash"]> | "resumed" }[];
}

/**
 * The runs that wait, and everything that ends a wait: the one timer (WaitBoard), a
 * person's continue, a signal (or the mailbox), a timeout. A wait's end is recorded (its
 * event, with the outcome the durable call returns) and the run executed again by the
 * engine. Holds nothing of a waiting run but its open waits.
 */
export class WaitingRuns {
  private readonly board: WaitBoard;
  /**
   * Waits ended since the run's current execution read its checkpoints: walking back to
   * one of them, it must not register it again (what ended it runs the run again).
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
    private readonly executor: RunExecutor,
  ) {
    this.board = new WaitBoard(
      (runId, key, record) => this.onDue(runId, key, record),
      (runId, error) => this.logger.error({ runId, err: error }, "a wait's deadline passed, but it could not end"),
    );
  }

  // ---- For a run's execution ----

  /** Registers a wait the execution opened (its start is appended with the record). */
  open(runId: string, key: string, record: WaitRecord): void {
    this.board.open(runId, key, record);
  }

  /** Registers again a wait an earlier execution opened, unless it ended since this execution read its checkpoints. */
  reopen(runId: string, key: string, record: WaitRecord): void {
    if (!this.endedWaits.get(runId)?.has(key)) this.board.open(runId, key, record);
  }

  /** The execution has read the run's checkpoints: every wait ended so far is in them. */
  checkpointsRead(runId: string): void {
    this.endedWaits.delete(runId);
  }

  /** The oldest signal kept for the run under `name`, not yet claimed by a write to be committed. */
  takeSignal(runId: string, name: string): StoredSignal | undefined {
    return this.runStore.oldestSignal(runId, name, this.claimedSignals);
  }

  /** A kept signal is being consumed by a write: nobody else takes it until that write is committed. */
  claim(signalId: number): void {
    this.claimedSignals.add(signalId);
    void this.eventLog.flushed().then(() => this.claimedSignals.delete(signalId));
  }

  /** The requirements of the run's open pauses (another Parallel branch's), oldest first. */
  openRequirements(runId: string): StepRequirement[] {
    return [...this.board.of(runId).values()].flatMap((record) => (record.kind === "human" ? [record.requirement] : []));
  }

  /** Whether the run has an open wait. */
  has(runId: string): boolean {
    return this.board.has(runId);
  }

  /** Forgets the run's waits: it ended. */
  drop(runId: string): void {
    this.board.dropRun(runId);
  }

  /** How many runs wait. */
  get count(): number {
    return this.board.runCount;
  }

  /**
   * The run's execution ended on a wait. Its WaitStarted or WorkflowPaused set its status;
   * a run that only suspended again on waits an earlier execution opened (a Parallel
   * branch went on meanwhile) is marked here.
   */
  suspended(runId: string): void {
    const [first] = this.board.of(runId).values();
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

  // ---- What ends a wait ----

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
    const open = this.board.humanWait(runId, answers.map((answer) => answer.step_id));
    if (!open) throw Errors.runNotPaused(runId, run.status);
    const [key, record] = open;
    const resolution: StoredResolution = resolveAnswer(runId, record, answers);
    this.end(runId, key, { body: continuedEvent(record, resolution), outcome: resolution });
    this.logger.info({ runId, step: record.loc.step_path }, "paused run continued");
    return run;
  }

  /** Sends a signal to a run: ends its oldest wait for `name`, or keeps it for the next one. Resolves once it is stored. */
  async signal(runId: string, name: string, payload: unknown): Promise<{ run: RunRow; delivered: boolean }> {
    const run = this.runStore.get(runId);
    if (!run) throw Errors.runNotFound(runId);
    if (isFinished(run.status)) throw Errors.runFinished(runId, run.status, "it takes no more signals");
    this.requireServed(run);
    const open = this.board.signalWait(runId, name);
    if (!open) {
      this.runStore.keepSignal(runId, name, payload, MAX_KEPT_SIGNALS);
      this.logger.info({ runId, signal: name }, "signal kept for the run's next wait");
      return { run, delivered: false };
    }
    const [key, record] = open;
    const problem = record.schema ? schemaProblem(record.schema, payload, "payload", "payload") : null;
    if (problem) throw Errors.invalidSignal(runId, name, problem.replace(/\.$/, ""));
    this.end(runId, key, {
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

  /** A wait's deadline passed: a timer wakes, a signal wait times out, a person's time is up. */
  private onDue(runId: string, key: string, record: WaitRecord): void {
    const { loc } = record;
    if (record.kind === "timer") {
      this.end(runId, key, {
        body: { event: "WaitCompleted", ...loc, wait_kind: "timer", wait_key: key, timed_out: false },
        outcome: { timedOut: false },
      });
      return;
    }
    if (record.kind === "signal") {
      this.end(runId, key, {
        body: { event: "WaitCompleted", ...loc, wait_kind: "signal", wait_key: key, timed_out: true },
        outcome: { timedOut: true },
      });
      return;
    }
    const resolution = timeoutResolution(record);
    if (resolution) {
      this.end(runId, key, { body: continuedEvent(record, resolution), outcome: resolution });
      return;
    }
    this.executor.cancelWaiting(runId, `No one answered step "${loc.step_name}" in time (hitlTimeoutMs; onTimeout: "cancel")`);
  }

  /** Ends one of a run's waits with `end` (recorded with the wait's outcome), and lets the run go on. */
  private end(runId: string, key: string, end: WaitEnd): void {
    if (!this.board.take(runId, key)) return;
    let ended = this.endedWaits.get(runId);
    if (!ended) {
      ended = new Set();
      this.endedWaits.set(runId, ended);
    }
    ended.add(key);
    this.eventLog.append(runId, end.body, { path: key, stepName: null, output: end.outcome }, end.consumesSignal);
    this.executor.goOn(runId);
  }

  // ---- Start-up and shutdown ----

  /**
   * At start-up: registers every open wait of every waiting or paused run (the timers at
   * their stored times), without executing anything; resumes as after a crash those that
   * had a Parallel branch running beside their wait.
   */
  load(): WaitingRunsLoaded {
    const loaded: WaitingRunsLoaded = { waiting: [], cancelled: [], skipped: [], resumed: [] };
    const interrupted = this.resumeState.interruptedWhileWaiting();
    for (const run of this.resumeState.suspendedRuns()) {
      const served = this.workflows.has(run.workflowId);
      const row = served && run.cancelRequestedAt === null && interrupted.has(run.runId) ? this.runStore.get(run.runId) : undefined;
      if (row) {
        // A branch was running beside the wait: that is a crash to resume from.
        loaded.resumed.push({ runId: run.runId, outcome: this.executor.resumeAfterCrash(row) });
        continue;
      }
      // A run whose workflow is not served here waits on, untouched, for a server that runs it.
      if (served) for (const { key, record } of run.waits) this.board.open(run.runId, key, record as WaitRecord);
      if (!served && run.cancelRequestedAt === null) {
        this.logger.warn({ runId: run.runId, workflowId: run.workflowId }, "waiting run not served: its workflow is not loaded here");
        loaded.skipped.push(run.runId);
      } else if (run.cancelRequestedAt !== null) {
        this.board.dropRun(run.runId);
        this.eventLog.append(run.runId, { event: "WorkflowCancelled", reason: "Cancelled by request (honoured after a restart)" });
        loaded.cancelled.push(run.runId);
      } else if (!this.board.has(run.runId)) {
        // Nothing stored says what it waits for: let it find out by going on.
        this.executor.goOn(run.runId);
        loaded.resumed.push({ runId: run.runId, outcome: "resumed" });
      } else {
        loaded.waiting.push(run.runId);
      }
    }
    return loaded;
  }

  /** Stops the timer: waiting runs stay as stored, and the next start wakes them at their times. */
  close(): void {
    this.board.close();
  }
}
