import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import { FlowdError, errorMessage } from "../errors.ts";
import type { RunEventBody } from "../protocol/run-events.ts";
import { isFinished } from "../protocol/run-status.ts";
import type { EventLog } from "../store/event-log.ts";
import type { RunStore } from "../store/run-store.ts";
import type { RunRow } from "../store/schema.ts";
import type { WorkflowDefinition } from "../workflows/definition.ts";
import type { WorkflowRegistry } from "../workflows/registry.ts";
import { RunInterrupted, StepFailed } from "./interruption.ts";
import { runSequence, toJsonSafe, type RunContext } from "./step-runner.ts";

/** What a client gives to start a run. */
export interface StartRunRequest {
  workflowId: string;
  message: string;
  sessionId?: string | undefined;
  userId?: string | undefined;
  additionalData?: unknown;
}

interface ActiveRun {
  controller: AbortController;
  done: Promise<void>;
}

/**
 * Runs workflows. Runs belong to the engine, not to any connection: nothing a
 * client does after starting a run (disconnecting included) stops or slows it (I4).
 */
export class Engine {
  private readonly active = new Map<string, ActiveRun>();
  private stopping = false;

  constructor(
    private readonly workflows: WorkflowRegistry,
    private readonly runStore: RunStore,
    private readonly eventLog: EventLog,
    private readonly logger: Logger,
  ) {}

  /**
   * Creates the run and starts it. `WorkflowStarted` (index 0) is committed before this
   * returns, so a caller that then follows the run from index -1 sees it.
   */
  start(request: StartRunRequest): RunRow {
    if (this.stopping) throw new FlowdError("SHUTTING_DOWN", "The server is shutting down; start the run again once it is back.");
    const workflow = this.workflows.get(request.workflowId);
    const run = this.runStore.create({
      runId: randomUUID(),
      workflowId: workflow.id,
      workflowName: workflow.name,
      sessionId: request.sessionId ?? randomUUID(),
      userId: request.userId ?? null,
      input: request.message,
      additionalData: request.additionalData ?? null,
    });
    const controller = new AbortController();
    const done = this.execute(workflow, run, controller.signal).finally(() => this.active.delete(run.runId));
    this.active.set(run.runId, { controller, done });
    this.logger.info({ runId: run.runId, workflowId: workflow.id }, "run started");
    return run;
  }

  /** Asks a run to stop; it ends with `WorkflowCancelled` at its next step or content boundary. */
  cancel(runId: string): RunRow {
    const run = this.runStore.get(runId);
    if (!run) throw new FlowdError("RUN_NOT_FOUND", `Run ${runId} not found`);
    if (isFinished(run.status)) {
      throw new FlowdError("RUN_FINISHED", `Run ${runId} is already ${run.status}; there is nothing to cancel.`);
    }
    this.runStore.markCancelRequested(runId);
    this.active.get(runId)?.controller.abort(new RunInterrupted("cancelled"));
    this.logger.info({ runId }, "run cancel requested");
    return run;
  }

  /** How many runs this process is executing now. */
  get activeRunCount(): number {
    return this.active.size;
  }

  /**
   * Stops every run at its next boundary without ending it in the log (it is resumable),
   * and waits for them up to `graceMs`.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.stopping = true;
    const running = [...this.active.values()];
    for (const run of running) run.controller.abort(new RunInterrupted("shutdown"));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([Promise.allSettled(running.map((r) => r.done)), timeout]);
    clearTimeout(timer);
  }

  private async execute(workflow: WorkflowDefinition, run: RunRow, signal: AbortSignal): Promise<void> {
    const started = performance.now();
    const ctx: RunContext = {
      runId: run.runId,
      sessionId: run.sessionId,
      message: run.input,
      additionalData: run.additionalData,
      signal,
      outputs: {},
      emit: (body: RunEventBody) => {
        this.eventLog.append(run.runId, body);
      },
    };
    try {
      ctx.emit({ event: "WorkflowStarted", input: run.input });
      const output = await runSequence(ctx, workflow.steps, null, run.input);
      if (signal.aborted) throw signal.reason as RunInterrupted;
      ctx.emit({
        event: "WorkflowCompleted",
        content: toJsonSafe(output),
        duration_ms: Math.round(performance.now() - started),
      });
      this.logger.info({ runId: run.runId }, "run completed");
    } catch (error) {
      this.finishAfterError(ctx, error);
    }
  }

  private finishAfterError(ctx: RunContext, error: unknown): void {
    try {
      if (error instanceof RunInterrupted) {
        if (error.reason === "cancelled") {
          ctx.emit({ event: "WorkflowCancelled", reason: "Cancelled by request" });
          this.logger.info({ runId: ctx.runId }, "run cancelled");
        } else {
          this.logger.info({ runId: ctx.runId }, "run interrupted by shutdown; it stays resumable");
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
