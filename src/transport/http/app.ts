import type { Socket } from "node:net";
import cors from "@fastify/cors";
import formBody from "@fastify/formbody";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from "fastify";
import { ANYONE, type Principal } from "../../auth/principal.ts";
import { Errors, FlowdError } from "../../errors.ts";
import { nestsDeeperThan } from "../../protocol/json-depth.ts";
import type { TransportDeps, TransportShared } from "../deps.ts";
import { rawErrorResponse } from "./raw-error.ts";
import { checkDescribed, ROUTES } from "./api-description.ts";
import { registerDocsRoutes } from "./docs-routes.ts";
import { registerStreamRoutes, STREAM_PATH } from "./stream-routes.ts";
import { isLoopback } from "../access.ts";
import { registerInspectorRoutes } from "./inspector-routes.ts";
import { registerRunRoutes } from "./run-routes.ts";
import { registerWorkflowRoutes } from "./workflow-routes.ts";

/** Longest path parameter routed (ids are at most 256 characters); longer gets 414. */
const MAX_PARAM_LENGTH = 512;
/** How often Node checks requests against their timeouts (its default, 30 s, would let a timeout run that much late). */
const TIMEOUT_CHECK_INTERVAL_MS = 1000;

/** What the HTTP routes need: the transports' dependencies and what they share with the WebSocket. */
export interface HttpDeps extends TransportDeps, TransportShared {}

declare module "fastify" {
  interface FastifyRequest {
    /** Who is calling (set before any route runs). */
    principal: Principal;
  }
}

/** Routes that take a token as `?token=` too (a browser's EventSource cannot send headers); read tokens are for these. */
const QUERY_TOKEN_ROUTES: ReadonlySet<string> = new Set(["/runs/:runId/events", STREAM_PATH]);

/** The token a request presents: `Authorization: Bearer <token>`, or else `?token=` where a route takes it. */
function presentedToken(header: string | undefined, fromQuery: string | null): string {
  if (header !== undefined) {
    // The scheme is case-insensitive (RFC 9110); the token is not.
    const bearer = /^bearer +(\S+)\s*$/i.exec(header);
    if (!bearer) throw Errors.authHeaderMalformed(header.trim().split(/\s+/)[0] ?? "");
    return bearer[1]!;
  }
  if (fromQuery !== null) return fromQuery;
  throw Errors.authRequired();
}

/** `?token=` of a request's URL, or null. */
function queryToken(url: string): string | null {
  const query = url.indexOf("?");
  return query === -1 ? null : new URLSearchParams(url.slice(query + 1)).get("token");
}

/** Fastify's own client errors, translated into flowd's `{detail, code}` shape. */
function clientError(error: FastifyError, maxBodyBytes: number): FlowdError | null {
  switch (error.code) {
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return Errors.unsupportedMediaType();
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return Errors.bodyTooLarge(maxBodyBytes);
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return Errors.invalidJsonBody(error.message);
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return Errors.emptyJsonBody();
    case "FST_ERR_BAD_URL":
      return Errors.invalidUrl();
    case "FST_ERR_MAX_PARAM_LENGTH":
      return Errors.uriTooLong(MAX_PARAM_LENGTH);
    default:
      if (error.statusCode === 400 && error instanceof SyntaxError) {
        return Errors.invalidJsonBody(error.message);
      }
      return error.statusCode !== undefined && error.statusCode < 500
        ? Errors.invalidRequest(error.message)
        : null;
  }
}

/** A request the HTTP parser refused before any route (timeout, malformed, huge headers), in `{detail, code}` shape. */
function answerClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  if (error.code === "ECONNRESET" || socket.destroyed) return;
  // A response already under way (garbage pipelined behind an SSE request, say) is not interrupted by another.
  const inProgress = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
  if (inProgress) {
    socket.destroy();
    return;
  }
  const refusal =
    error.code === "ERR_HTTP_REQUEST_TIMEOUT"
      ? Errors.requestTimeout()
      : error.code === "HPE_HEADER_OVERFLOW"
        ? Errors.headersTooLarge()
        : Errors.invalidHttp();
  if (socket.writable) socket.write(rawErrorResponse(refusal));
  socket.destroy();
}

/** Sends a FlowdError in the API's error shape. */
export function sendError(reply: FastifyReply, error: FlowdError): FastifyReply {
  if (error.code === "AUTH_THROTTLED") void reply.header("retry-after", "60");
  if (error.code === "TOO_MANY_RUNS") void reply.header("retry-after", "1");
  return reply.status(error.httpStatus).send({ detail: error.message, code: error.code });
}

/**
 * The HTTP API: AgentOS-shaped REST and SSE. Fastify, for its speed and its raw-response
 * escape hatch (`reply.hijack()`), which SSE needs to control writes and backpressure.
 */
export function createHttpApp(deps: HttpDeps): FastifyInstance {
  const { config } = deps;
  // Fastify's own logger stays off: flowd logs what matters (errors, runs) through its pino logger.
  const app = Fastify({
    logger: false,
    bodyLimit: config.maxInputBytes,
    requestTimeout: config.requestTimeoutMs,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    http: {
      headersTimeout: Math.min(config.requestTimeoutMs, 20_000),
      connectionsCheckingInterval: Math.min(TIMEOUT_CHECK_INTERVAL_MS, config.requestTimeoutMs),
    },
    clientErrorHandler: answerClientError,
    frameworkErrors: (error, _request, reply) => {
      const known = clientError(error, config.maxInputBytes) ?? Errors.invalidRequest(error.message);
      void sendError(reply, known);
    },
  });
  void app.register(formBody, { bodyLimit: config.maxInputBytes });
  // Bodies are JSON or forms; plain text would only reach validation as a confusing string.
  app.removeContentTypeParser("text/plain");

  // Who may call: the Host a request is addressed to and the page it comes from, before anything else.
  app.addHook("onRequest", async (request, reply) => {
    const refusal = deps.access.refusal(request.headers);
    if (refusal) return sendError(reply, refusal);
  });
  // Pages of the allowed origins may read answers (CORS); the hook above refused the others.
  void app.register(cors, {
    origin: (origin, callback) => callback(null, origin !== undefined && deps.access.originAllowed(origin)),
    methods: ["GET", "HEAD", "POST", "DELETE"],
    // The Durable Streams protocol's answers are in headers: a page of another allowed origin reads them.
    exposedHeaders: ["retry-after", "stream-next-offset", "stream-up-to-date", "stream-closed", "stream-cursor"],
    maxAge: 600,
  });

  // Routes every request may reach without a key: health, and pages and documents that hold no data.
  const open = new Set(ROUTES.filter((route) => route.open).map((route) => route.path));
  open.add("/docs/:file").add("/assets/:file");
  // Fastify wants a primitive here; the hook below sets every request's before any route runs.
  app.decorateRequest<Principal | null>("principal", null);
  app.addHook("onRequest", async (request, reply) => {
    request.principal = ANYONE;
    // CORS preflights carry no credentials, by the browser's rules; what they precede does.
    if (!deps.auth.required || open.has(request.routeOptions.url ?? "") || request.method === "OPTIONS") return;
    const route = request.routeOptions.url ?? "";
    // A scraper on this machine, if the operator opened the metrics to it.
    if (route === "/metrics" && deps.config.metricsOpenOnLoopback && isLoopback(request.socket.remoteAddress)) return;
    try {
      const fromQuery = request.headers.authorization === undefined && QUERY_TOKEN_ROUTES.has(route) && (request.method === "GET" || request.method === "HEAD") ? queryToken(request.url) : null;
      const token = presentedToken(request.headers.authorization, fromQuery);
      request.principal = await deps.auth.authenticate(token, request.socket.remoteAddress);
      // A URL ends up in proxy logs, history and Referer headers: only a read token (short-lived, one run's events) goes there.
      if (fromQuery !== null && request.principal.kind !== "reader") throw Errors.tokenRefused("only a read token (POST /runs/{run_id}/read-token) is taken as ?token=; send other tokens as Authorization: Bearer");
    } catch (error) {
      if (error instanceof FlowdError) return sendError(reply, error);
      throw error;
    }
    // A read token reads one run's events, by these routes only; the route checks which run.
    if (request.principal.kind === "reader" && !QUERY_TOKEN_ROUTES.has(route)) return sendError(reply, Errors.readTokenOnly(request.principal.runId));
  });

  // Every JSON body, whatever the route, is bounded in depth where it is parsed.
  app.addHook("preValidation", async (request) => {
    if (nestsDeeperThan(request.body, config.maxInputDepth)) {
      throw Errors.inputTooDeep("The request body", config.maxInputDepth);
    }
  });

  app.setErrorHandler(async (error: FastifyError, _request, reply) => {
    const known = error instanceof FlowdError ? error : clientError(error, config.maxInputBytes);
    if (known) return sendError(reply, known);
    deps.logger.error({ err: error }, "unexpected error handling an HTTP request");
    return reply.status(500).send({ detail: `Internal error: ${error.message}. The server log has details.`, code: "INTERNAL" });
  });

  app.setNotFoundHandler(async (request, reply) =>
    reply.status(404).send({
      detail: `No route for ${request.method} ${request.url.split("?")[0]}. See the README for the HTTP API, or use the WebSocket at /workflows/ws.`,
      code: "NOT_FOUND",
    }),
  );

  // Every route must be in /openapi.json: a server with one that is not refuses to start.
  const registered: { method: string; url: string }[] = [];
  app.addHook("onRoute", (route) => {
    for (const method of [route.method].flat()) registered.push({ method, url: route.url });
  });
  app.addHook("onReady", async () => checkDescribed(registered));

  app.get("/health", async (_request, reply) => {
    const counters = {
      active_runs: deps.engine.activeRunCount,
      waiting_runs: deps.engine.waitingRunCount,
      streaming_connections: deps.outbounds.count,
      unsent_bytes: deps.outbounds.unsentBytes,
    };
    const problem = deps.storageProblem();
    if (problem) return reply.status(503).send({ status: "unavailable", code: problem.code, detail: problem.message, ...counters });
    return { status: "ok", ...counters };
  });
  registerWorkflowRoutes(app, deps);
  registerRunRoutes(app, deps);
  registerStreamRoutes(app, deps);
  app.get("/metrics", async (request, reply) => {
    deps.permissions.metrics(request.principal);
    if (!deps.metrics) throw Errors.metricsOff();
    const { contentType, body } = await deps.metrics.text();
    return reply.type(contentType).send(body);
  });
  registerDocsRoutes(app);
  registerInspectorRoutes(app);
  return app;
}
