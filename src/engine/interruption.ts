/**
 * Why a run stopped before its end without failing: a user's cancel (or a person's
 * rejection), the server shutting down, its events could not be stored (it resumes
 * at the next start), or another node took it over (PostgreSQL: this node's lease lapsed).
 */
export class RunInterrupted extends Error {
  override readonly name = "RunInterrupted";
  constructor(
    readonly reason: "cancelled" | "shutdown" | "storage" | "lost",
    /** For a cancel: why, as WorkflowCancelled says it. */
    readonly detail?: string,
  ) {
    super(
      reason === "cancelled"
        ? (detail ?? "Run cancelled")
        : reason === "shutdown"
          ? "Server shutting down"
          : reason === "lost"
            ? "Another node took the run over"
            : "Events could not be stored",
    );
  }
}

/**
 * The run waits (a timer, a signal, a person): its execution ends here, with the wait
 * stored and registered; whatever ends the wait runs it again from its checkpoints.
 * Not an error: nothing is recorded for it, and user code should let it through.
 */
export class RunSuspended extends Error {
  override readonly name = "RunSuspended";
  constructor(readonly waitKey: string) {
    super(`The run waits (${waitKey}); it goes on when the wait ends. Let this error through: do not catch it in a step.`);
  }
}

/** A step (or a composite's decision) failed; its StepError is already in the log. */
export class StepFailed extends Error {
  override readonly name = "StepFailed";
  constructor(
    readonly stepName: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
