import { setTimeout as sleep } from "node:timers/promises";
import OpenAI, { APIError } from "openai";
import { errorMessage } from "../errors.ts";
import type { ChatModel, ModelRequest, ModelTurn, TokenUsage, ToolCall, TurnHandlers } from "./chat-model.ts";

/** Settings of an OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, LM Studio, a proxy). */
export interface OpenAIModelOptions {
  apiKey: string;
  /** e.g. https://api.openai.com/v1 or http://localhost:11434/v1 */
  baseUrl: string;
  /** Longest wait for the response to start, and between two chunks of the stream. */
  timeoutMs: number;
  /** Retries after 429 or 5xx, before giving up. */
  maxRetries: number;
  /** First retry delay; it doubles each time, with jitter. */
  retryBaseMs: number;
}

/** A model call that failed for good; its message names the endpoint and what happened. */
export class ModelError extends Error {
  override readonly name = "ModelError";
}

function retryable(status: number): boolean {
  return status === 429 || status >= 500;
}

/** The server's Retry-After, in ms, when it gave one. */
function retryAfterMs(error: APIError): number | null {
  const header = error.headers?.get?.("retry-after");
  if (!header) return null;
  const seconds = Number(header);
  return Number.isFinite(seconds) ? Math.max(0, seconds * 1000) : null;
}

/** Streams chat completions from an OpenAI-compatible endpoint through the `openai` package. */
export class OpenAIChatModel implements ChatModel {
  readonly endpoint: string;
  private readonly client: OpenAI;

  constructor(private readonly options: OpenAIModelOptions) {
    this.endpoint = options.baseUrl;
    // The SDK's own retries stay off: flowd retries itself so that each retry shows up in the run's events.
    this.client = new OpenAI({ apiKey: options.apiKey, baseURL: options.baseUrl, maxRetries: 0, timeout: options.timeoutMs });
  }

  async complete(request: ModelRequest, handlers: TurnHandlers): Promise<ModelTurn> {
    for (let attempt = 1; ; attempt++) {
      const idle = new AbortController();
      const signal = AbortSignal.any([request.signal, idle.signal]);
      let timer: NodeJS.Timeout | undefined;
      const arm = (): void => {
        clearTimeout(timer);
        timer = setTimeout(() => idle.abort(), this.options.timeoutMs);
      };
      arm();
      try {
        let stream;
        try {
          stream = await this.client.chat.completions.create(
            {
              model: request.model,
              messages: request.messages,
              ...(request.tools.length > 0 ? { tools: request.tools } : {}),
              stream: true,
              stream_options: { include_usage: true },
            },
            { signal },
          );
        } catch (error) {
          if (request.signal.aborted) throw error;
          if (idle.signal.aborted) throw this.timeoutError("to start answering");
          if (error instanceof APIError && error.status !== undefined) {
            if (retryable(error.status) && attempt <= this.options.maxRetries) {
              const backoff = this.options.retryBaseMs * 2 ** (attempt - 1) * (0.5 + Math.random());
              const delayMs = Math.round(retryAfterMs(error) ?? backoff);
              handlers.onRetry({ attempt, status: error.status, delayMs, error: error.message });
              clearTimeout(timer);
              await sleep(delayMs, undefined, { signal: request.signal });
              continue;
            }
            const tries = attempt > 1 ? ` after ${attempt} attempts` : "";
            throw new ModelError(`Model endpoint ${this.endpoint} answered HTTP ${error.status}${tries}: ${error.message}`);
          }
          throw new ModelError(`Could not reach model endpoint ${this.endpoint}: ${errorMessage((error as { cause?: unknown }).cause ?? error)}`);
        }
        return await this.readStream(stream, handlers, arm, request.signal, idle.signal);
      } finally {
        clearTimeout(timer);
      }
    }
  }

  private timeoutError(what: string): ModelError {
    return new ModelError(`Model endpoint ${this.endpoint} took longer than ${this.options.timeoutMs} ms ${what} (FLOWD_MODEL_TIMEOUT_MS).`);
  }

  private async readStream(
    stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>,
    handlers: TurnHandlers,
    arm: () => void,
    callerSignal: AbortSignal,
    idleSignal: AbortSignal,
  ): Promise<ModelTurn> {
    let content = "";
    let usage: TokenUsage | null = null;
    const calls = new Map<number, ToolCall>();
    try {
      for await (const chunk of stream) {
        arm();
        if (chunk.usage) {
          usage = {
            prompt_tokens: chunk.usage.prompt_tokens,
            completion_tokens: chunk.usage.completion_tokens,
            total_tokens: chunk.usage.total_tokens,
          };
        }
        const delta = chunk.choices?.[0]?.delta;
        if (!delta) continue;
        if (typeof delta.content === "string" && delta.content !== "") {
          content += delta.content;
          handlers.onContent(delta.content);
        }
        for (const part of delta.tool_calls ?? []) {
          const call = calls.get(part.index) ?? { id: "", name: "", arguments: "" };
          if (part.id) call.id = part.id;
          if (part.function?.name) call.name += part.function.name;
          if (part.function?.arguments) call.arguments += part.function.arguments;
          calls.set(part.index, call);
        }
      }
    } catch (error) {
      if (callerSignal.aborted) throw error;
      if (idleSignal.aborted) throw this.timeoutError("between two chunks of its stream");
      const message = errorMessage(error);
      if (error instanceof SyntaxError || /parse|JSON/i.test(message)) {
        throw new ModelError(`Model endpoint ${this.endpoint} sent a malformed stream: ${message}`);
      }
      throw new ModelError(`The stream from model endpoint ${this.endpoint} broke off: ${errorMessage((error as { cause?: unknown }).cause ?? error)}`);
    }
    const toolCalls = [...calls.entries()]
      .sort(([a], [b]) => a - b)
      .map(([index, call]) => ({ ...call, id: call.id || `call_${index}` }));
    for (const call of toolCalls) {
      if (call.name === "") throw new ModelError(`Model endpoint ${this.endpoint} sent a tool call without a function name.`);
    }
    return { content, toolCalls, usage };
  }
}
