import type { RunEventName } from "./run-events.ts";

/** Events that end a run; exactly one per run. (Apart from run-events.ts: the browser client needs this, not the server's framing.) */
export const TERMINAL_EVENTS: ReadonlySet<RunEventName> = new Set(["WorkflowCompleted", "WorkflowError", "WorkflowCancelled"]);

/** True for WorkflowCompleted, WorkflowError and WorkflowCancelled. */
export function isTerminalEvent(name: string): boolean {
  return TERMINAL_EVENTS.has(name as RunEventName);
}
