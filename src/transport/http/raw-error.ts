import { STATUS_CODES } from "node:http";
import type { FlowdError } from "../../errors.ts";

/**
 * A whole HTTP response for an error, in the API's `{detail, code}` shape, for the places
 * that answer on the bare socket before any route runs (a refused WebSocket upgrade, a
 * request the HTTP parser refused). The connection closes after it.
 */
export function rawErrorResponse(error: FlowdError): string {
  const body = JSON.stringify({ detail: error.message, code: error.code });
  return (
    `HTTP/1.1 ${error.httpStatus} ${STATUS_CODES[error.httpStatus] ?? "Error"}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}
