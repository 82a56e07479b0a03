import formBody from "@fastify/formbody";
import Fastify, { type FastifyError, type FastifyInstance } from "fastify";
import { FlowdError } from "../../errors.ts";
import type { TransportDeps } from "../server.ts";
import { registerRunRoutes } from "./run-routes.ts";
import type { SseStreams } from "./sse-stream.ts";
import { registerWorkflowRoutes } from "./workflow-routes.ts";
import { tokenMatches } from "../auth.ts";

/** Largest request body accepted, as for WebSocket frames. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** What the HTTP routes need: the transports' dependencies, and the registry of open SSE streams. */
export interface HttpDeps extends TransportDeps {
  sseStreams: SseStreams;
}

/** Fastify's own client errors, translated into flowd's `{detail, code}` shape. */
function clientError(error: FastifyError): FlowdError | null {
  switch (error.code) {
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new FlowdError(
        "UNSUPPORTED_MEDIA_TYPE",
        "Unsupported Content-Type: send JSON (application/json) or a form (application/x-www-form-urlencoded).",
      );
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new FlowdError("BODY_TOO_LARGE", `Request body is larger than ${MAX_BODY_BYTES} bytes.`);
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return new FlowdError("INVALID_JSON", `Request body is not valid JSON (${error.message}).`);
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new FlowdError("INVALID_JSON", "Content-Type is application/json but the body is empty: send a JSON object, or no Content-Type.");
    default:
      if (error.statusCode === 400 && error instanceof SyntaxError) {
        return new FlowdError("INVALID_JSON", `Request body is not valid JSON (${error.message}).`);
      }
      return error.statusCode !== undefined && error.statusCode < 500
        ? new FlowdError("INVALID_REQUEST", error.message)
        : null;
  }
}

/**
 * The HTTP API: AgentOS-shaped REST and SSE. Fastify, for its speed and its raw-response
 * escape hatch (`reply.hijack()`), which SSE needs to control writes and backpressure.
 */
export function createHttpApp(deps: HttpDeps): FastifyInstance {
  // Fastify's own logger stays off: flowd logs what matters (errors, runs) through its pino logger.
  const app = Fastify({ logger: false, bodyLimit: MAX_BODY_BYTES });
  void app.register(formBody, { bodyLimit: MAX_BODY_BYTES });
  // Bodies are JSON or forms; plain text would only reach validation as a confusing string.
  app.removeContentTypeParser("text/plain");

  app.addHook("onRequest", async (request, reply) => {
    const key = deps.securityKey;
    if (key === null || request.url === "/health") return;
    const header = request.headers.authorization ?? "";
    const token = header.startsWith("Bearer ") ? header.slice("Bearer ".length) : null;
    if (token === null || !tokenMatches(token, key)) {
      await reply.status(401).send({
        detail: "Missing or wrong bearer token: send the header Authorization: Bearer <FLOWD_SECURITY_KEY>.",
        code: token === null ? "AUTH_REQUIRED" : "AUTH_FAILED",
      });
    }
  });

  app.setErrorHandler(async (error: FastifyError, _request, reply) => {
    const known = error instanceof FlowdError ? error : clientError(error);
    if (known) return reply.status(known.httpStatus).send({ detail: known.message, code: known.code });
    deps.logger.error({ err: error }, "unexpected error handling an HTTP request");
    return reply.status(500).send({ detail: `Internal error: ${error.message}. The server log has details.`, code: "INTERNAL" });
  });

  app.setNotFoundHandler(async (request, reply) =>
    reply.status(404).send({
      detail: `No route for ${request.method} ${request.url.split("?")[0]}. See the README for the HTTP API, or use the WebSocket at /workflows/ws.`,
      code: "NOT_FOUND",
    }),
  );

  app.get("/health", async () => ({ status: "ok", active_runs: deps.engine.activeRunCount }));
  registerWorkflowRoutes(app, deps);
  registerRunRoutes(app, deps);
  return app;
}
