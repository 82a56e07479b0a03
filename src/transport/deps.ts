import type { Logger } from "pino";
import type { FlowdConfig } from "../config.ts";
import type { Engine } from "../engine/engine.ts";
import type { FlowdError } from "../errors.ts";
import type { Metrics } from "../ops/metrics.ts";
import type { Pruner } from "../store/pruner.ts";
import type { RunLog, RunRecords, RunRetention } from "../store/store.ts";
import type { WorkflowRegistry } from "../workflows/registry.ts";
import type { AccessPolicy } from "./access.ts";
import type { AuthGuard } from "../auth/guard.ts";
import type { Permissions } from "../auth/principal.ts";
import type { SseStreams } from "./http/sse-stream.ts";
import type { OutboundLimits, Outbounds } from "./outbound.ts";
import type { FeedOptions } from "./run-feed.ts";

/** What the transports need. */
export interface TransportDeps {
  engine: Engine;
  runStore: RunRecords;
  eventLog: RunLog;
  retention: RunRetention;
  pruner: Pruner;
  /** What GET /metrics answers; null with FLOWD_METRICS=false. */
  metrics: Metrics | null;
  workflows: WorkflowRegistry;
  config: FlowdConfig;
  logger: Logger;
  /** How subscribers are fed (page size, stall timeout) and what a connection may hold unsent. */
  feed: FeedOptions & OutboundLimits;
  /** Why the server cannot store events now (for `/health`), or null while it can. */
  storageProblem: () => FlowdError | null;
}

/** What the HTTP and WebSocket sides share: who may call, and the open connections' outbounds. */
export interface TransportShared {
  access: AccessPolicy;
  auth: AuthGuard;
  /** What each caller may do (scopes, FLOWD_USER_ISOLATION). */
  permissions: Permissions;
  outbounds: Outbounds;
  sseStreams: SseStreams;
}
