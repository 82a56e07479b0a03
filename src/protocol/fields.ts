import { z } from "zod";

/** An id given by a client (run, session, user, workflow). */
export const Id = z.string().min(1).max(256);

/** The fields that start a run, shared by the WebSocket `start-workflow` action and `POST /workflows/{id}/runs`. */
export const RunStartFields = {
  message: z.string().default(""),
  session_id: Id.optional(),
  user_id: Id.optional(),
  additional_data: z.record(z.string(), z.unknown()).optional(),
};

/** A start's idempotency key (WebSocket `idempotency_key`, HTTP `Idempotency-Key`): printable ASCII, as a header can carry it. */
export const IdempotencyKey = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[\x21-\x7e]+$/, "must be 1 to 255 printable ASCII characters without spaces");

/** A signal's name (`input.waitForSignal(name)`). */
export const SignalName = z.string().min(1).max(256);

/** The index a client last saw: an integer, -1 or null for "nothing yet". */
export const LastEventIndex = z.number().int().min(-1).nullable().default(null);

/** Turns zod's issue list into one sentence for an error message. */
export function describeIssues(subject: string, issues: readonly z.core.$ZodIssue[], root = "body"): string {
  const parts = issues.map((issue) => {
    const field = issue.path.length > 0 ? [root === "body" ? "" : root, ...issue.path].filter(Boolean).join(".") : root;
    return `${field}: ${issue.message}`;
  });
  return `Invalid ${subject}: ${parts.join("; ")}.`;
}
