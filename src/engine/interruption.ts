/**
 * Why a run stopped before its end without failing: a user's cancel, the server
 * shutting down, or its events could not be stored (it resumes at the next start).
 */
export class RunInterrupted extends Error {
  override readonly name = "RunInterrupted";
  constructor(readonly reason: "cancelled" | "shutdown" | "storage") {
    super(reason === "cancelled" ? "Run cancelled" : reason === "shutdown" ? "Server shutting down" : "Events could not be stored");
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
