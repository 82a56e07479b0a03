import type { RunStatus } from "./run-status.ts";

/** The fields of a run row that the API shows. */
export interface RunFields {
  runId: string;
  workflowId: string;
  workflowName: string;
  sessionId: string;
  userId: string | null;
  status: RunStatus;
  input: string;
  additionalData: unknown;
  output: unknown;
  error: string | null;
  lastEventIndex: number;
  attempt: number;
  cancelRequestedAt: number | null;
  waitKind: string | null;
  waitName: string | null;
  waitUntil: number | null;
  createdAt: number;
  updatedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
}

/** A run as the HTTP API and `flowd runs … --json` show it (times in epoch milliseconds). */
export interface RunJson {
  run_id: string;
  workflow_id: string;
  workflow_name: string;
  session_id: string;
  user_id: string | null;
  status: RunStatus;
  input: string;
  additional_data: unknown;
  content: unknown;
  error: string | null;
  event_count: number;
  last_event_index: number;
  attempt: number;
  cancel_requested_at: number | null;
  /** What a `waiting` or `paused` run waits for (`kind`: timer, signal, confirmation, user_input, route_choice, tool_confirmation, error_decision), and until when (epoch ms, or null); null otherwise. */
  waiting_for: { kind: string; name: string | null; until: number | null } | null;
  created_at: number;
  updated_at: number;
  started_at: number | null;
  finished_at: number | null;
}

/** Maps a run row to its API shape. */
export function toRunJson(run: RunFields): RunJson {
  return {
    run_id: run.runId,
    workflow_id: run.workflowId,
    workflow_name: run.workflowName,
    session_id: run.sessionId,
    user_id: run.userId,
    status: run.status,
    input: run.input,
    additional_data: run.additionalData ?? null,
    content: run.output ?? null,
    error: run.error,
    event_count: run.lastEventIndex + 1,
    last_event_index: run.lastEventIndex,
    attempt: run.attempt,
    cancel_requested_at: run.cancelRequestedAt,
    waiting_for: run.waitKind === null ? null : { kind: run.waitKind, name: run.waitName, until: run.waitUntil },
    created_at: run.createdAt,
    updated_at: run.updatedAt,
    started_at: run.startedAt,
    finished_at: run.finishedAt,
  };
}
