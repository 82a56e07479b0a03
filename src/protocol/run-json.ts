import { z } from "zod";
import { RUN_STATUSES, type RunStatus } from "./run-status.ts";

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
  prunedAt: number | null;
}

/** A run as the HTTP API and `flowd runs … --json` show it (times in epoch milliseconds). */
export const RunJson = z
  .object({
    run_id: z.string(),
    workflow_id: z.string(),
    workflow_name: z.string(),
    session_id: z.string(),
    user_id: z.string().nullable(),
    status: z.enum(RUN_STATUSES),
    input: z.string(),
    additional_data: z.unknown().describe("What the start carried in additional_data, or null."),
    content: z.unknown().describe("The run's output once it completed, or null."),
    error: z.string().nullable(),
    event_count: z.number().int(),
    last_event_index: z.number().int(),
    attempt: z.number().int().describe("1, and one more for each resume after a restart or crash."),
    cancel_requested_at: z.number().nullable(),
    waiting_for: z
      .object({ kind: z.string(), name: z.string().nullable(), until: z.number().nullable() })
      .nullable()
      .describe("What a waiting or paused run waits for (kind: timer, signal, confirmation, user_input, route_choice, tool_confirmation, error_decision) and until when (epoch ms, or null); null otherwise."),
    created_at: z.number(),
    updated_at: z.number(),
    started_at: z.number().nullable(),
    finished_at: z.number().nullable(),
    pruned_at: z.number().nullable().describe("When retention or a prune began removing the finished run's events (epoch ms): reading them answers 410 RUN_EXPIRED."),
  });
export type RunJson = z.infer<typeof RunJson>;

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
    pruned_at: run.prunedAt,
  };
}
