import type { Logger } from "pino";
import { Errors } from "../errors.ts";
import type { RequirementAnswer, StepRequirement } from "../protocol/hitl.ts";
import type { RunEventBody } from "../protocol/run-events.ts";
import { isFinished } from "../protocol/run-status.ts";
import type { ResumeReads, RunLog, RunOwnership, RunRecords, RunRow, StoredSignal } from "../store/store.ts";
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
  /** Whether this process executes the run now. */
  isActive(runId: string): boolean;
  /** Resumes a run as after a crash (see Engine.recover); says what was done. */
  resumeAfterCrash(run: RunRow): Promise<"resumed" | "restarted" | "cancelled" | "failed" | "skipped" | "elsewhere">;
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
  resumed: { runId: string; outcome: Awaited<ReturnType<RunExecutor["resumeAfterCrash"]>> | "resumed" }[];
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
  /** Signals kept per run so far (only while the run is known here): see `signalsKept`. */
  private readonly keptCounts = new Map<string, number>();

  constructor(
    private readonly workflows: WorkflowRegistry,
    private readonly runStore: RunRecords,
    private readonly eventLog: RunLog,
    private readonly resumeState: ResumeReads,
    private readonly ownership: RunOwnership,
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
  takeSignal(runId: string, name: string): Promise<StoredSignal | undefined> {
    return this.runStore.oldestSignal(runId, name, this.claimedSignals);
  }

  /**
   * How many signals were kept for the run so far. A run about to wait for a signal reads
   * the mailbox; if this changed meanwhile, it reads again before its wait opens, and a
   * signal kept after that finds the wait open (see `signal`): none slips between the two.
   */
  signalsKept(runId: string): number {
    return this.keptCounts.get(runId) ?? 0;
  }

  /** Another node kept a signal for the run: a wait about to open reads the mailbox again. */
  mailboxChanged(runId: string): void {
    this.keptCounts.set(runId, this.signalsKept(runId) + 1);
  }

  // ---- Many nodes (PostgreSQL): a wait is ended by the node that holds the run ----

  /**
   * Takes the run for this node before ending one of its waits, and reads its open waits
   * again (another node may have ended one since): false if another node holds it.
   */
  private async take(runId: string): Promise<boolean> {
    if (!this.ownership.shared) return true;
    if (!(await this.ownership.claim(runId))) return false;
    try {
      if (!this.executor.isActive(runId)) await this.reload(runId);
    } catch (error) {
      this.letGo(runId);
      throw error;
    }
    return true;
  }

  /** Gives the run back if nothing here executes it (a wait was not ended after all). */
  private letGo(runId: string): void {
    if (this.ownership.shared && !this.executor.isActive(runId)) this.ownership.release(runId);
  }

  /** Registers the run's open waits as stored (another node suspended it, or ended one of its waits). */
  async reload(runId: string): Promise<void> {
    const [run] = await this.resumeState.suspendedRuns([runId]);
    if (this.executor.isActive(runId)) return;
    this.board.dropRun(runId);
    if (!run || !this.workflows.has(run.workflowId)) return;
    const ended = this.endedWaits.get(runId);
    for (const { key, record } of run.waits) if (!ended?.has(key)) this.board.open(runId, key, record as WaitRecord);
  }

  /** Ends an open signal wait of the run with a signal kept for it (kept by a node that did not hold the run). */
  async deliverKept(runId: string): Promise<void> {
    for (const [key, record] of this.board.of(runId)) {
      if (record.kind !== "signal") continue;
      const kept = await this.runStore.oldestSignal(runId, record.name, this.claimedSignals);
      if (!kept) continue;
      if (record.schema && schemaProblem(record.schema, kept.payload, "payload", "payload")) continue;
      if (!(await this.take(runId))) return;
      const open = this.board.of(runId).get(key);
      if (!open || this.claimedSignals.has(kept.signalId)) {
        this.letGo(runId);
        return;
      }
      this.claim(kept.signalId);
      this.end(runId, key, {
        body: { event: "WaitCompleted", ...record.loc, wait_kind: "signal", wait_key: key, timed_out: false, payload: toJsonSafe(kept.payload) },
        outcome: { payload: kept.payload },
        consumesSignal: kept.signalId,
      });
      return;
    }
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
    this.keptCounts.delete(runId);
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
  async suspended(runId: string): Promise<void> {
    const [first] = this.board.of(runId).values();
    if (!first) return;
    try {
      // Its own WaitStarted or WorkflowPaused said so, unless a later event of another branch said otherwise.
      const status = (await this.runStore.get(runId))?.status;
      if (status === "waiting" || status === "paused") return;
      await this.runStore.markSuspended(runId, waitColumns(first));
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
  async continueRun(runId: string, answers: readonly RequirementAnswer[]): Promise<RunRow> {
    const run = await this.runStore.get(runId);
    if (!run) throw Errors.runNotFound(runId);
    if (isFinished(run.status)) throw Errors.runNotPaused(runId, run.status);
    this.requireServed(run);
    // Another node is executing it (a wait of it ended there a moment ago): it is not paused now.
    if (!(await this.take(runId))) throw Errors.runNotPaused(runId, "running");
    const open = this.board.humanWait(runId, answers.map((answer) => answer.step_id));
    if (!open) {
      this.letGo(runId);
      throw Errors.runNotPaused(runId, run.status);
    }
    const [key, record] = open;
    let resolution: StoredResolution;
    try {
      resolution = resolveAnswer(runId, record, answers);
    } catch (error) {
      // A bad answer changes nothing: the run is given back as it was.
      this.letGo(runId);
      throw error;
    }
    this.end(runId, key, { body: continuedEvent(record, resolution), outcome: resolution });
    this.logger.info({ runId, step: record.loc.step_path }, "paused run continued");
    return run;
  }

  /** Sends a signal to a run: ends its oldest wait for `name`, or keeps it for the next one. Resolves once it is stored. */
  async signal(runId: string, name: string, payload: unknown): Promise<{ run: RunRow; delivered: boolean }> {
    const run = await this.runStore.get(runId);
    if (!run) throw Errors.runNotFound(runId);
    if (isFinished(run.status)) throw Errors.runFinished(runId, run.status, "it takes no more signals");
    this.requireServed(run);
    if (!(await this.take(runId))) {
      // Another node executes it: kept for it, and that node is told to look at its mailbox.
      await this.runStore.keepSignal(runId, name, payload, MAX_KEPT_SIGNALS);
      this.ownership.wake(runId);
      this.logger.info({ runId, signal: name }, "signal kept for the run (another node executes it)");
      return { run, delivered: false };
    }
    const open = this.board.signalWait(runId, name);
    if (!open) {
      const signalId = await this.runStore.keepSignal(runId, name, payload, MAX_KEPT_SIGNALS).catch((error: unknown) => {
        this.letGo(runId);
        throw error;
      });
      this.keptCounts.set(runId, this.signalsKept(runId) + 1);
      // A wait for it that opened while it was being kept read the mailbox before: it ends with it now.
      const opened = this.board.signalWait(runId, name);
      if (opened && !this.claimedSignals.has(signalId)) {
        const [key, record] = opened;
        if (!record.schema || !schemaProblem(record.schema, payload, "payload", "payload")) {
          this.end(runId, key, {
            body: { event: "WaitCompleted", ...record.loc, wait_kind: "signal", wait_key: key, timed_out: false, payload: toJsonSafe(payload) },
            outcome: { payload },
            consumesSignal: signalId,
          });
          this.claim(signalId);
          await this.eventLog.committed(runId);
          return { run, delivered: true };
        }
      }
      this.letGo(runId);
      this.logger.info({ runId, signal: name }, "signal kept for the run's next wait");
      return { run, delivered: false };
    }
    const [key, record] = open;
    const problem = record.schema ? schemaProblem(record.schema, payload, "payload", "payload") : null;
    if (problem) {
      this.letGo(runId);
      throw Errors.invalidSignal(runId, name, problem.replace(/\.$/, ""));
    }
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
    if (!this.ownership.shared) return this.due(runId, key, record);
    // Every node has the timer; the one that takes the run ends the wait, if it is still open.
    this.take(runId).then(
      (held) => {
        if (!held) {
          this.board.take(runId, key);
          return;
        }
        const open = this.board.of(runId).get(key);
        if (open) this.due(runId, key, open);
        else this.letGo(runId);
      },
      (error: unknown) => this.logger.error({ runId, err: error }, "a wait's deadline passed, but the run could not be taken to end it"),
    );
  }

  private due(runId: string, key: string, record: WaitRecord): void {
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
  async load(): Promise<WaitingRunsLoaded> {
    const loaded: WaitingRunsLoaded = { waiting: [], cancelled: [], skipped: [], resumed: [] };
    const interrupted = await this.resumeState.interruptedWhileWaiting();
    for (const run of await this.resumeState.suspendedRuns()) {
      const served = this.workflows.has(run.workflowId);
      const row = served && run.cancelRequestedAt === null && interrupted.has(run.runId) ? await this.runStore.get(run.runId) : undefined;
      if (row) {
        // A branch was running beside the wait: that is a crash to resume from.
        loaded.resumed.push({ runId: run.runId, outcome: await this.executor.resumeAfterCrash(row) });
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
