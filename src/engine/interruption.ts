/** Why a run stopped before its end without failing: a user's cancel, or the server shutting down. */
export class RunInterrupted extends Error {
  override readonly name = "RunInterrupted";
  constructor(readonly reason: "cancelled" | "shutdown") {
    super(reason === "cancelled" ? "Run cancelled" : "Server shutting down");
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
