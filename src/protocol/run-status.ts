/** The one list of run statuses: feeds the drizzle column enum and the protocol types. */
export const RUN_STATUSES = ["pending", "running", "waiting", "paused", "completed", "error", "cancelled"] as const;

/** Where a run is in its life. */
export type RunStatus = (typeof RUN_STATUSES)[number];

/** Statuses of a run that waits with nothing executing: for a timer or a signal (`waiting`), or for a person (`paused`). */
export const SUSPENDED_STATUSES: ReadonlySet<RunStatus> = new Set(["waiting", "paused"]);

/** Statuses after which a run never emits again. */
export const FINISHED_STATUSES: ReadonlySet<RunStatus> = new Set(["completed", "error", "cancelled"]);

/** True once the run has its terminal event. */
export function isFinished(status: RunStatus): boolean {
  return FINISHED_STATUSES.has(status);
}
