/** The chat-completions shapes flowd uses, and the interface every model (real or offline) implements. */

/** A tool call the model asked for. */
export interface ToolCall {
  id: string;
  name: string;
  /** The JSON text of the arguments, as the model wrote it. */
  arguments: string;
}

/** One message of a conversation, in chat-completions form. */
export type ChatMessage =
  | { role: "system"; content: string }
  | { role: "user"; content: string }
  | {
      role: "assistant";
      content: string | null;
      tool_calls?: { id: string; type: "function"; function: { name: string; arguments: string } }[];
    }
  | { role: "tool"; tool_call_id: string; content: string };

/** A tool as the model sees it. */
export interface ToolSpec {
  type: "function";
  function: { name: string; description: string; parameters: Record<string, unknown> };
}

/** Token counts reported by the model. */
export interface TokenUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** What one model turn produced. */
export interface ModelTurn {
  content: string;
  toolCalls: ToolCall[];
  usage: TokenUsage | null;
}

/** A retry the model client is about to make (429 or 5xx). */
export interface RetryNotice {
  attempt: number;
  status: number;
  delayMs: number;
  error: string;
}

/** One streamed request. */
export interface ModelRequest {
  model: string;
  messages: ChatMessage[];
  tools: ToolSpec[];
  signal: AbortSignal;
}

/** Callbacks for what streams in while a turn runs. */
export interface TurnHandlers {
  onContent(text: string): void;
  onRetry(notice: RetryNotice): void;
}

/** A chat model: an OpenAI-compatible endpoint, or the offline demo model. */
export interface ChatModel {
  /** Where requests go, for logs and error messages. */
  readonly endpoint: string;
  complete(request: ModelRequest, handlers: TurnHandlers): Promise<ModelTurn>;
}
