import { Errors, type FlowdError } from "../errors.ts";
import type { RunJson } from "../protocol/run-json.ts";
import type { RunStatus } from "../protocol/run-status.ts";
import { RunWatch, type EventPage, type ReconnectOptions, type WebSocketConstructor, type WebSocketLike } from "./run-watch.ts";

/** How to reach a flowd server. */
export interface ClientOptions {
  /** The server's base URL, e.g. `http://127.0.0.1:7777`. */
  url: string;
  /** The server's security key (FLOWD_SECURITY_KEY) or a token, sent as a bearer token. */
  token?: string;
  /** The WebSocket class: by default the global one (browsers, Node 22), else the `ws` package. */
  WebSocket?: WebSocketConstructor;
  /** How `watch` reconnects after a lost connection. */
  reconnect?: ReconnectOptions;
}

/** What a start may carry beside the workflow's message. */
export interface StartOptions {
  sessionId?: string;
  userId?: string;
  additionalData?: Record<string, unknown>;
  /** A repeat of a start with the same key returns the first run instead of starting another (DESIGN §9). */
  idempotencyKey?: string;
}

/** Which runs `runs.list` returns, newest first. */
export interface ListRunsOptions {
  workflowId?: string;
  status?: RunStatus;
  sessionId?: string;
  limit?: number;
  offset?: number;
}

/** A workflow as `GET /workflows` lists it. */
export interface WorkflowSummary {
  id: string;
  name: string;
  description: string;
}

/** What the server answers to a signal. */
export interface SignalAnswer {
  run_id: string;
  name: string;
  /** True if a wait of the run took it at once; false if it is kept for the run's next wait for it. */
  delivered: boolean;
  message: string;
}

/** A client of one flowd server. Every method throws a FlowdError carrying the server's `code` when it refuses. */
export interface FlowdClient {
  /** Starts a run of `workflowId` and returns it once started (its `WorkflowStarted` is stored). */
  start(workflowId: string, message?: string, options?: StartOptions): Promise<RunJson>;
  /** The run's events after index `after` (default -1: from the start), exactly once each, across reconnects. */
  watch(runId: string, options?: { after?: number }): RunWatch;
  /** Asks the run to stop; it ends with `WorkflowCancelled`. */
  cancel(runId: string): Promise<RunJson>;
  /** Answers a paused run's open requirement (DESIGN §8); the run goes on. */
  continue(runId: string, stepRequirements: unknown[]): Promise<RunJson>;
  /** Sends a signal to a run (DESIGN §9). */
  signal(runId: string, name: string, payload?: unknown): Promise<SignalAnswer>;
  runs: {
    list(options?: ListRunsOptions): Promise<RunJson[]>;
    get(runId: string): Promise<RunJson>;
    /** A short-lived token that reads only this run's events, for a browser's EventSource (`eventsUrl`, relative to the server). */
    readToken(runId: string, options?: { expiresIn?: string }): Promise<{ token: string; expiresAt: number; eventsUrl: string }>;
  };
  workflows: {
    list(): Promise<WorkflowSummary[]>;
  };
}

/** Events per page of a watch's catch-up (the most the server gives). */
const EVENT_PAGE = 10_000;

/** Loads the `ws` package where there is no global WebSocket (Node 20); browsers never get here. */
async function defaultWebSocket(): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (global) return global;
  const module = "ws";
  const ws = (await import(/* @vite-ignore */ module)) as { default: WebSocketConstructor };
  return ws.default;
}

/** A client of the flowd server at `options.url`: HTTP for requests, the WebSocket for watching runs. */
export function createClient(options: ClientOptions): FlowdClient {
  const base = options.url.replace(/\/+$/, "");
  if (!/^https?:\/\//i.test(base)) throw Errors.invalidArgument(`createClient needs an http:// or https:// url, not "${options.url}"`);
  const wsUrl = `${base.replace(/^http/i, "ws")}/workflows/ws`;
  let WebSocket: Promise<WebSocketConstructor> | null = options.WebSocket ? Promise.resolve(options.WebSocket) : null;

  async function call<T>(method: "GET" | "POST", path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${base}${path}`, {
        method,
        headers: {
          accept: "application/json",
          ...(body === undefined ? {} : { "content-type": "application/json" }),
          ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }),
          ...headers,
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (error) {
      throw Errors.clientCannotReach(base, error);
    }
    if (!response.ok) throw await responseError(response);
    return (await response.json()) as T;
  }

  const runPath = (runId: string): string => `/runs/${encodeURIComponent(runId)}`;
  const ofWorkflow = async (runId: string): Promise<string> => {
    const run = await call<RunJson>("GET", runPath(runId));
    return `/workflows/${encodeURIComponent(run.workflow_id)}/runs/${encodeURIComponent(runId)}`;
  };

  return {
    start: (workflowId, message = "", start = {}) =>
      call<RunJson>(
        "POST",
        `/workflows/${encodeURIComponent(workflowId)}/runs`,
        { message, session_id: start.sessionId, user_id: start.userId, additional_data: start.additionalData, background: true },
        start.idempotencyKey === undefined ? {} : { "idempotency-key": start.idempotencyKey },
      ),
    watch: (runId, watch = {}) =>
      new RunWatch(runId, watch.after ?? -1, {
        wsUrl,
        token: options.token,
        reconnect: options.reconnect ?? {},
        openSocket: async (url) => new (await (WebSocket ??= defaultWebSocket()))(url),
        readPage: (runId, after) => call<EventPage>("GET", `${runPath(runId)}/events?after=${after}&limit=${EVENT_PAGE}`),
      }),
    cancel: async (runId) => call<RunJson>("POST", `${await ofWorkflow(runId)}/cancel`),
    continue: async (runId, stepRequirements) =>
      call<RunJson>("POST", `${await ofWorkflow(runId)}/continue`, { step_requirements: stepRequirements, background: true }),
    signal: (runId, name, payload) => call<SignalAnswer>("POST", `${runPath(runId)}/signals/${encodeURIComponent(name)}`, payload ?? null),
    runs: {
      list: (list = {}) => {
        const query = new URLSearchParams();
        if (list.workflowId !== undefined) query.set("workflow_id", list.workflowId);
        if (list.status !== undefined) query.set("status", list.status);
        if (list.sessionId !== undefined) query.set("session_id", list.sessionId);
        if (list.limit !== undefined) query.set("limit", String(list.limit));
        if (list.offset !== undefined) query.set("offset", String(list.offset));
        const text = query.toString();
        return call<RunJson[]>("GET", `/runs${text ? `?${text}` : ""}`);
      },
      get: (runId) => call<RunJson>("GET", runPath(runId)),
      readToken: async (runId, options = {}) => {
        const answer = await call<{ token: string; expires_at: number; events_url: string }>(
          "POST",
          `${runPath(runId)}/read-token`,
          options.expiresIn === undefined ? {} : { expires_in: options.expiresIn },
        );
        return { token: answer.token, expiresAt: answer.expires_at, eventsUrl: answer.events_url };
      },
    },
    workflows: {
      list: () => call<WorkflowSummary[]>("GET", "/workflows"),
    },
  };
}

/** The server's `{detail, code}` answer as a FlowdError. */
export async function responseError(response: Response): Promise<FlowdError> {
  let detail = `The server answered HTTP ${response.status} ${response.statusText}.`;
  let code: unknown = null;
  try {
    const body = (await response.json()) as { detail?: unknown; code?: unknown };
    if (typeof body.detail === "string") detail = body.detail;
    code = body.code;
  } catch {
    // Not JSON: the status line says enough.
  }
  return Errors.fromServer(code, detail);
}
