import type { ErrorCode } from "../errors.ts";
import type { RunStatus } from "./run-status.ts";

/** What a client is told when it asks to cancel a run (WebSocket `cancel_requested`, HTTP cancel answer). */
export const CANCEL_REQUESTED_MESSAGE =
  "Cancel requested; the run ends with WorkflowCancelled at its next step or content boundary (at once if no process is running it).";

/** Control frames the server sends over the WebSocket (run events are sent as their stored frame). */
export type ServerFrame =
  | { event: "connected"; message: string; requires_auth: boolean }
  | { event: "authenticated"; message: string }
  | { event: "auth_error"; error: string; code: ErrorCode }
  | { event: "auth_required"; error: string; code: ErrorCode }
  | { event: "pong" }
  | { event: "error"; error: string; code: ErrorCode; run_id?: string }
  | {
      event: "catch_up";
      run_id: string;
      status: RunStatus;
      missed_events: number;
      current_event_count: number;
      message: string;
    }
  | { event: "subscribed"; run_id: string; status: RunStatus; current_event_count: number; message: string }
  | { event: "replay"; run_id: string; status: RunStatus; total_events: number; message: string }
  | { event: "cancel_requested"; run_id: string; message: string }
  | { event: "signal_accepted"; run_id: string; name: string; delivered: boolean };
