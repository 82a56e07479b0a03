/** `flowd/client`: start, watch and drive runs of a flowd server, from Node 20 or a browser. */
export {
  createClient,
  type ClientOptions,
  type FlowdClient,
  type ListRunsOptions,
  type SignalAnswer,
  type StartOptions,
  type WorkflowSummary,
} from "./client.ts";
export { RunWatch, type EventEnvelope, type Gap, type ReconnectOptions, type RunEvent, type SupersededRange, type WebSocketConstructor, type WebSocketLike } from "./run-watch.ts";
export type { RunEventBody, RunEventName, StepLocation } from "../protocol/run-events.ts";
export type { RunJson } from "../protocol/run-json.ts";
export type { RunStatus } from "../protocol/run-status.ts";
export { FlowdError, type ErrorCode } from "../errors.ts";
