import { z } from "zod";
import { ERROR_CODES, type ErrorCode } from "../errors.ts";
import { RunJson } from "./run-json.ts";
import { RUN_STATUSES } from "./run-status.ts";

/** What every HTTP error answers: a sentence saying what is wrong and what to do, and a stable code. */
export const ErrorBody = z.object({
  detail: z.string(),
  code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]),
});

/** `GET /health` */
export const HealthBody = z.object({
  status: z.enum(["ok", "unavailable"]),
  code: ErrorBody.shape.code.optional().describe("While unavailable: why."),
  detail: z.string().optional(),
  active_runs: z.number().int(),
  waiting_runs: z.number().int(),
  streaming_connections: z.number().int(),
  unsent_bytes: z.number().int(),
});

/** `GET /workflows` */
export const WorkflowSummary = z.object({ id: z.string(), name: z.string(), description: z.string() });

/** A node of a workflow's step tree. */
export const WorkflowNodeJson: z.ZodType<WorkflowNodeJson> = z.object({
  name: z.string(),
  type: z.enum(["step", "steps", "parallel", "condition", "loop", "router"]),
  get steps() {
    return z.array(WorkflowNodeJson).optional();
  },
  get else_steps() {
    return z.array(WorkflowNodeJson).optional();
  },
  max_iterations: z.number().int().optional(),
});
export interface WorkflowNodeJson {
  name: string;
  type: "step" | "steps" | "parallel" | "condition" | "loop" | "router";
  steps?: WorkflowNodeJson[] | undefined;
  else_steps?: WorkflowNodeJson[] | undefined;
  max_iterations?: number | undefined;
}

/** `GET /workflows/{id}` */
export const WorkflowDetail = WorkflowSummary.extend({ steps: z.array(WorkflowNodeJson) });

/** A run event as stored and sent: its body's fields (`event` first) and the envelope. */
export const RunEventFrame = z.looseObject({
  event: z.string(),
  event_index: z.number().int(),
  run_id: z.string(),
  workflow_id: z.string(),
  workflow_name: z.string(),
  session_id: z.string(),
  created_at: z.number().describe("Epoch seconds."),
});

/** `GET /runs/{run_id}/events` with `Accept: application/json` */
export const EventsPage = z.object({
  run_id: z.string(),
  status: z.enum(RUN_STATUSES),
  finished: z.boolean(),
  events: z.array(RunEventFrame),
  gaps: z
    .array(
      z.object({
        event: z.literal("gap"),
        run_id: z.string(),
        from_index: z.number().int(),
        to_index: z.number().int(),
        reason: z.literal("compacted"),
        compacted_into: z.number().int().nullable().describe("The index of the RunContentCompacted event that holds their text."),
      }),
    )
    .describe("Indices in this page's range that compaction folded into a RunContentCompacted event: they no longer exist."),
  next_after: z.number().int().describe("Pass as ?after= for the next page."),
  has_more: z.boolean(),
});

/** `POST /runs/{run_id}/signals/{name}` */
export const SignalAccepted = z.object({ run_id: z.string(), name: z.string(), delivered: z.boolean(), message: z.string() });

/** `POST /workflows/{id}/runs/{run_id}/cancel` */
export const CancelAnswer = RunJson.extend({ message: z.string() });

/** `DELETE /runs/{run_id}` */
export const RunDeleted = z.object({ run_id: z.string(), deleted: z.literal(true), message: z.string() });

/** `POST /runs/prune` */
export const ReadTokenAnswer = z.object({
  run_id: z.string(),
  token: z.string().describe("Reads this run's events and nothing else, until it expires: as ?token= or Authorization: Bearer."),
  expires_at: z.number().describe("When the token stops working (epoch ms)."),
  events_url: z.string().describe("The run's events with the token, for a browser's EventSource (relative to the server)."),
});

export const PruneAnswer = z.object({
  dry_run: z.boolean(),
  runs: z.array(z.object({ run_id: z.string(), workflow_id: z.string(), finished_at: z.number(), events: z.number().int() })),
  events: z.number().int().describe("Events deleted (with dry_run: that would be)."),
  more: z.boolean().describe("More runs match: ask again (each answer prunes at most `limit`)."),
});
