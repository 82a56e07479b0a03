import type { AgentDefinition } from "./agent.ts";
import type { ChatModel } from "./chat-model.ts";
import { OfflineDemoModel } from "./offline-model.ts";
import { OpenAIChatModel } from "./openai-model.ts";

/** Model settings, from configuration. */
export interface ModelSettings {
  /** Unset: the offline demo model. */
  apiKey: string | null;
  baseUrl: string;
  defaultModel: string;
  timeoutMs: number;
  maxRetries: number;
  retryBaseMs: number;
  demoPaceMs: number;
}

/** Which model an agent talks to. */
export interface ResolvedModel {
  model: ChatModel;
  name: string;
}

/** Gives each agent its model: the configured endpoint, or the offline demo model when no key is set. */
export class ModelProvider {
  private readonly chat: ChatModel;
  readonly offline: boolean;

  constructor(private readonly settings: ModelSettings) {
    this.offline = settings.apiKey === null;
    this.chat =
      settings.apiKey === null
        ? new OfflineDemoModel(settings.demoPaceMs)
        : new OpenAIChatModel({
            apiKey: settings.apiKey,
            baseUrl: settings.baseUrl,
            timeoutMs: settings.timeoutMs,
            maxRetries: settings.maxRetries,
            retryBaseMs: settings.retryBaseMs,
          });
  }

  /** The endpoint all agents use (for the start-up log). */
  get endpoint(): string {
    return this.chat.endpoint;
  }

  /** The model for an agent: its own model name, or the default. */
  resolve(agent: AgentDefinition): ResolvedModel {
    return { model: this.chat, name: this.offline ? "offline-demo" : (agent.model ?? this.settings.defaultModel) };
  }
}
