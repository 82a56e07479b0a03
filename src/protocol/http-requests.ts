import { z } from "zod";
import { RUN_STATUSES } from "./run-status.ts";
import { DURATION_FORMAT, parseDuration } from "../config.ts";
import { Id, IdempotencyKey, LastEventIndex, RunStartFields, SignalName } from "./fields.ts";

/** A boolean from JSON (`true`) or a form field (`"true"`, `"1"`). */
const Flag = z.union([
  z.boolean(),
  z.enum(["true", "false", "1", "0"]).transform((value) => value === "true" || value === "1"),
]);

/** An integer from JSON or from a form/query string. */
function integerFromText<T extends z.ZodType>(schema: T) {
  return z.preprocess((value) => (typeof value === "string" && /^\s*-?\d+\s*$/.test(value) ? Number(value) : value), schema);
}

/** `POST /workflows/{id}/runs`: the WebSocket start fields plus how to answer. */
export const StartRunBody = z.object({
  ...RunStartFields,
  stream: Flag.default(true),
  background: Flag.default(false),
});
export type StartRunBody = z.infer<typeof StartRunBody>;

/** The headers of `POST /workflows/{id}/runs` that flowd reads. */
/** A W3C traceparent (OpenTelemetry): the run's span continues the caller's trace; one that does not parse is ignored, as the spec says. */
const Traceparent = z.string().max(256).describe("W3C Trace Context: the run's spans continue this trace (e.g. 00-<trace id>-<span id>-01).");

export const StartRunHeaders = z.object({
  "idempotency-key": IdempotencyKey.optional(),
  traceparent: Traceparent.optional(),
});
export type StartRunHeaders = z.infer<typeof StartRunHeaders>;

/** `POST /workflows/{id}/runs/{run_id}/resume` */
export const ResumeRunBody = z.object({ last_event_index: integerFromText(LastEventIndex) });
export type ResumeRunBody = z.infer<typeof ResumeRunBody>;

/** `GET /workflows/{id}/runs` */
export const ListRunsQuery = z.object({
  session_id: Id.optional(),
  status: z.enum(RUN_STATUSES).optional(),
  limit: integerFromText(z.number().int().min(1).max(1000)).default(50),
  offset: integerFromText(z.number().int().min(0)).default(0),
});
export type ListRunsQuery = z.infer<typeof ListRunsQuery>;

/** `GET /runs`: every workflow's runs, or one's. */
export const ListAllRunsQuery = ListRunsQuery.extend({ workflow_id: Id.optional() });
export type ListAllRunsQuery = z.infer<typeof ListAllRunsQuery>;

/** `GET /runs/{run_id}/events` */
export const EventsQuery = z.object({
  after: integerFromText(z.number().int().min(-1)).optional(),
  limit: integerFromText(z.number().int().min(1).max(10_000)).default(1000),
  token: z
    .string()
    .optional()
    .describe("A token for clients that cannot send an Authorization header (a browser's EventSource): a read token from POST /runs/{run_id}/read-token."),
});
export type EventsQuery = z.infer<typeof EventsQuery>;

/**
 * `POST /workflows/{id}/runs/{run_id}/continue` (form or JSON, as AgentOS): the
 * requirements are checked apart (see StepRequirementsField), to answer INVALID_REQUIREMENT.
 */
export const ContinueRunBody = z.object({
  step_requirements: z.unknown().optional(),
  session_id: Id.optional(),
  user_id: Id.optional(),
  stream: Flag.default(true),
  /** Answer at once (202, the run as it stands) instead of streaming or waiting for it. */
  background: Flag.default(false),
});
export type ContinueRunBody = z.infer<typeof ContinueRunBody>;

/** The path parameters of `POST /runs/{run_id}/signals/{name}`. */
export const SignalParams = z.object({ runId: Id, name: SignalName });

/** A duration (`7d`, `12h`, `30m`, `45s`, `500ms`), read as milliseconds. */
const Duration = z.string().transform((text, context) => {
  const ms = parseDuration(text);
  if (ms === null) {
    context.addIssue({ code: "custom", message: `must be ${DURATION_FORMAT}` });
    return z.NEVER;
  }
  return ms;
});

/** `POST /runs/prune`: finished runs older than `older_than` (or past their retention), at most `limit` of them. */
export const PruneBody = z.object({
  older_than: Duration.optional(),
  workflow_id: Id.optional(),
  dry_run: Flag.default(false),
  limit: integerFromText(z.number().int().min(1).max(1000)).default(100),
});
export type PruneBody = z.infer<typeof PruneBody>;

/** `GET /streams/runs/{run_id}`: the Durable Streams protocol's read parameters. */
export const StreamQuery = z.object({
  offset: z.string().optional().describe("Where to read from: -1 (the start), or a Stream-Next-Offset this stream gave (the next event_index, 16 digits)."),
  live: z.enum(["long-poll", "sse"]).optional().describe("Left out: what there is, up to the end. long-poll: at the end, wait for the next events. sse: a stream of data and control events."),
  cursor: z.string().optional().describe("The protocol's cursor, as a live answer gave it: the next live answer's is newer."),
  token: z.string().optional().describe("A read token (POST /runs/{run_id}/read-token), for clients that cannot send headers."),
});

/** The longest a read token lives: it is meant for one page in one browser. */
export const READ_TOKEN_MAX_MS = 3_600_000;

/** `POST /runs/{run_id}/read-token`: how long the token reads the run (default 10 minutes, at most an hour). */
export const ReadTokenBody = z.object({
  expires_in: Duration.refine((ms) => ms >= 1000 && ms <= READ_TOKEN_MAX_MS, { message: "must be between 1s and 1h" })
    .default(600_000)
    .describe('How long the token reads the run, e.g. "10m" (the default); from 1s to 1h.'),
});
export type ReadTokenBody = z.infer<typeof ReadTokenBody>;
