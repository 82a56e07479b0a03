import { z } from "zod";
import { Id, IdempotencyKey, LastEventIndex, RunStartFields, SignalName, describeIssues } from "./fields.ts";
import { Errors, errorMessage, type FlowdError } from "../errors.ts";
import { nestsDeeperThan } from "./json-depth.ts";

/** Every action a WebSocket client may send, keyed on `action` (AgentOS protocol). */
export const ClientAction = z.discriminatedUnion("action", [
  z.object({ action: z.literal("authenticate"), token: z.string() }),
  z.object({ action: z.literal("ping") }),
  z.object({
    action: z.literal("start-workflow"),
    workflow_id: Id,
    ...RunStartFields,
    idempotency_key: IdempotencyKey.optional(),
    /** W3C traceparent: the run's spans continue the caller's trace (ignored if it does not parse). */
    traceparent: z.string().max(256).optional(),
  }),
  z.object({
    action: z.literal("reconnect"),
    run_id: Id,
    last_event_index: LastEventIndex,
    workflow_id: Id.optional(),
    session_id: Id.optional(),
  }),
  z.object({ action: z.literal("cancel-workflow"), run_id: Id }),
  z.object({
    action: z.literal("continue-workflow"),
    workflow_id: Id,
    run_id: Id,
    session_id: Id.nullable().optional(),
    // Checked against the run's open requirement by the engine, which names what is wrong.
    step_requirements: z.unknown().optional(),
  }),
  z.object({ action: z.literal("signal-workflow"), run_id: Id, name: SignalName, payload: z.unknown().optional() }),
]);

/** A validated client action. */
export type ClientAction = z.infer<typeof ClientAction>;

/** The action names, for error messages. */
export const CLIENT_ACTION_NAMES = ClientAction.options.map((option) => option.shape.action.value);

/** Result of parsing one frame: the action, or what is wrong with it. */
export type ParsedAction = { ok: true; action: ClientAction } | { ok: false; error: FlowdError };

/** Parses and validates one text frame, refusing JSON nested deeper than `maxDepth`; never throws. */
export function parseClientAction(text: string, maxDepth: number): ParsedAction {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { ok: false, error: Errors.invalidJsonMessage(errorMessage(error)) };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return { ok: false, error: Errors.messageNotAnObject() };
  if (nestsDeeperThan(value, maxDepth)) return { ok: false, error: Errors.inputTooDeep("Message", maxDepth) };
  const action = (value as { action?: unknown }).action;
  if (typeof action !== "string") return { ok: false, error: Errors.messageWithoutAction(CLIENT_ACTION_NAMES) };
  if (!(CLIENT_ACTION_NAMES as readonly string[]).includes(action)) {
    return { ok: false, error: Errors.unknownAction(action, CLIENT_ACTION_NAMES) };
  }
  const parsed = ClientAction.safeParse(value);
  if (!parsed.success) return { ok: false, error: Errors.invalidMessage(describeIssues(`"${action}" message`, parsed.error.issues)) };
  return { ok: true, action: parsed.data };
}
