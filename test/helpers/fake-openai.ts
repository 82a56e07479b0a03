import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** One scripted answer of the fake chat-completions endpoint. */
export type ScriptedResponse =
  | {
      kind: "stream";
      /** Each is sent as one `data:` event (objects as JSON, strings as-is). */
      chunks: (Record<string, unknown> | string)[];
      /** Delay before the first chunk, and between chunks. */
      firstDelayMs?: number;
      delayMs?: number;
      /** Cut the connection after the chunks instead of sending [DONE]. */
      drop?: boolean;
    }
  | { kind: "error"; status: number; message: string; retryAfter?: string };

/** A request the fake received. */
export interface RecordedRequest {
  path: string;
  authorization: string | undefined;
  body: {
    model: string;
    stream: boolean;
    messages: { role: string; content: string | null; tool_calls?: unknown[]; tool_call_id?: string }[];
    tools?: { type: string; function: { name: string; parameters: Record<string, unknown> } }[];
  };
}

let chunkId = 0;
function chunk(delta: Record<string, unknown>, finish: string | null = null): Record<string, unknown> {
  return {
    id: `chatcmpl-${++chunkId}`,
    object: "chat.completion.chunk",
    created: 1_700_000_000,
    model: "fake-model",
    choices: [{ index: 0, delta, finish_reason: finish }],
  };
}

function usageChunk(prompt: number, completion: number): Record<string, unknown> {
  return {
    id: `chatcmpl-${++chunkId}`,
    object: "chat.completion.chunk",
    created: 1_700_000_000,
    model: "fake-model",
    choices: [],
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
  };
}

/** A streamed text answer, one chunk per piece, then a usage chunk. */
export function textAnswer(pieces: string[], options: { firstDelayMs?: number; delayMs?: number } = {}): ScriptedResponse {
  return {
    kind: "stream",
    chunks: [
      chunk({ role: "assistant", content: "" }),
      ...pieces.map((content) => chunk({ content })),
      chunk({}, "stop"),
      usageChunk(11, pieces.length),
    ],
    ...options,
  };
}

/** Tool calls streamed the way OpenAI does: id and name first, then the arguments in pieces. */
export function toolCallAnswer(calls: { id: string; name: string; argumentPieces: string[] }[]): ScriptedResponse {
  const chunks: Record<string, unknown>[] = [chunk({ role: "assistant", content: null })];
  calls.forEach((call, index) => {
    chunks.push(chunk({ tool_calls: [{ index, id: call.id, type: "function", function: { name: call.name, arguments: "" } }] }));
    for (const piece of call.argumentPieces) chunks.push(chunk({ tool_calls: [{ index, function: { arguments: piece } }] }));
  });
  chunks.push(chunk({}, "tool_calls"), usageChunk(20, 5));
  return { kind: "stream", chunks };
}

/**
 * A local HTTP server that speaks the OpenAI chat-completions streaming protocol
 * (SSE `data:` chunks, `delta.content`, `delta.tool_calls` in pieces, `usage`,
 * `[DONE]`), answering each request with the next scripted response.
 */
export class FakeOpenAI {
  readonly requests: RecordedRequest[] = [];
  private readonly script: ScriptedResponse[] = [];
  private server: Server | null = null;
  url = "";

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
    return this;
  }

  /** Queues answers for the next requests, in order. */
  enqueue(...responses: ScriptedResponse[]): void {
    this.script.push(...responses);
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let raw = "";
    for await (const part of req) raw += String(part);
    this.requests.push({ path: req.url ?? "", authorization: req.headers.authorization, body: JSON.parse(raw) as RecordedRequest["body"] });
    const next = this.script.shift() ?? { kind: "error", status: 500, message: "the fake has no scripted response left" };
    if (next.kind === "error") {
      res.writeHead(next.status, { "content-type": "application/json", ...(next.retryAfter ? { "retry-after": next.retryAfter } : {}) });
      res.end(JSON.stringify({ error: { message: next.message, type: "fake_error", code: null } }));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    for (const [i, data] of next.chunks.entries()) {
      const wait = i === 0 ? next.firstDelayMs : next.delayMs;
      if (wait) await new Promise((resolve) => setTimeout(resolve, wait));
      if (res.destroyed) return;
      res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
    }
    if (next.drop) {
      // Let the chunks reach the client first, then cut the connection without ending the response.
      await new Promise((resolve) => setTimeout(resolve, 50));
      res.socket?.destroy();
      return;
    }
    res.end("data: [DONE]\n\n");
  }
}
