import type { IncomingMessage, ServerResponse } from "node:http";
import type { Engine } from "../../engine/engine.ts";
import { FlowdError } from "../../errors.ts";

/** What the HTTP routes need from the rest of the server. */
export interface HttpDeps {
  engine: Engine;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** Translates an error into the HTTP edge's shape: `{"detail":…,"code":…}` with its status. */
function sendError(res: ServerResponse, error: FlowdError): void {
  sendJson(res, error.httpStatus, { detail: error.message, code: error.code });
}

/** Handles one HTTP request. */
export function handleHttpRequest(deps: HttpDeps, req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://localhost");
  if (url.pathname === "/health") {
    if (req.method !== "GET" && req.method !== "HEAD") {
      sendJson(res, 405, { detail: "Use GET /health.", code: "METHOD_NOT_ALLOWED" });
      return;
    }
    sendJson(res, 200, { status: "ok", active_runs: deps.engine.activeRunCount });
    return;
  }
  sendError(
    res,
    new FlowdError("NOT_FOUND", `No route for ${req.method ?? "GET"} ${url.pathname}. Try GET /health, or the WebSocket at /workflows/ws.`),
  );
}
