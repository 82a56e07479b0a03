import { Option } from "commander";
import type { ClientConfig } from "../config.ts";
import { Errors } from "../errors.ts";
import { responseError } from "../client/client.ts";

/** `--token`, for commands that talk to a server. */
export const tokenOption = (): Option =>
  new Option("--token <token>", "what to authenticate with: the server's security key or a JWT (env FLOWD_TOKEN, else FLOWD_SECURITY_KEY)");

/** Headers every request to the server carries. */
export function authHeaders(config: ClientConfig): Record<string, string> {
  return config.token ? { authorization: `Bearer ${config.token}` } : {};
}

/** Calls the server's HTTP API and returns its JSON answer; errors come back as FlowdError. */
export async function callServer(config: ClientConfig, method: "GET" | "POST" | "DELETE", path: string, body?: unknown): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(`${config.url}${path}`, {
      method,
      headers: { accept: "application/json", ...(body === undefined ? {} : { "content-type": "application/json" }), ...authHeaders(config) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (error) {
    throw Errors.serverUnreachable(config.url, error);
  }
  if (!response.ok) throw await responseError(response);
  return response.json();
}
