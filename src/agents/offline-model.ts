import { setTimeout as sleep } from "node:timers/promises";
import type { ChatMessage, ChatModel, ModelRequest, ModelTurn, TurnHandlers } from "./chat-model.ts";

/** The offline demo model's endpoint label, as logs and events show it. */
export const OFFLINE_MODEL_ENDPOINT = "offline-demo-model";

function lastUser(messages: readonly ChatMessage[]): string {
  for (let i = messages.length - 1; i >= 0; i--) {
    const message = messages[i];
    if (message?.role === "user") return message.content.trim().replace(/\s+/g, " ");
  }
  return "";
}

/** The first sentence of the instructions: the agent's role ("You are a research agent."). */
function role(messages: readonly ChatMessage[]): string {
  const system = messages.find((m) => m.role === "system");
  return system?.role === "system" ? (system.content.split(".")[0] ?? "").toLowerCase() : "";
}

function researchNotes(topic: string): string[] {
  return [
    `Research brief: "${topic}".`,
    "Offline demo content (no model configured).",
    "Finding 1: interest in the subject has grown steadily,",
    "with most discussion centred on practical use",
    "rather than theory.",
    "Finding 2: readers ask for worked examples,",
    "clear trade-offs and honest limits.",
    "Finding 3: the strongest sources",
    "share reproducible measurements",
    "and say how they were taken.",
    "Finding 4: tooling matters as much as ideas;",
    "people adopt what they can try in minutes.",
    "Finding 5: reliability questions come up often:",
    "what happens on failure, on restart,",
    "and under load.",
    "Open questions: which audiences",
    "are under-served,",
    "and which formats reach them best?",
    "Sources to follow up: community forums,",
    "recent conference talks,",
    "and practitioner blogs.",
    "Summary: focus on practical guidance,",
    "evidence, and hands-on examples",
    `for "${topic}".`,
  ];
}

function contentPlan(topic: string): string[] {
  return [
    `Content plan for "${topic}".`,
    "Week 1: an explainer post",
    "that defines the terms",
    "and shows one end-to-end example.",
    "Week 2: a hands-on tutorial",
    "with code readers can run",
    "in under ten minutes.",
    "Week 3: a case study",
    "with real measurements",
    "and the lessons learned.",
    "Week 4: a myths-and-facts piece",
    "answering the open questions",
    "from the research.",
    "Formats: long-form article,",
    "short video walkthrough,",
    "and a thread of key takeaways.",
    "Success measures: time on page,",
    "tutorial completions,",
    "and questions asked.",
    "Next step: draft the week 1 outline.",
  ];
}

function genericAnswer(topic: string): string[] {
  return [
    `Offline demo answer about "${topic}".`,
    "No model is configured, so this text is generated locally:",
    "set OPENAI_API_KEY (and OPENAI_BASE_URL for Ollama, vLLM or a proxy)",
    "to get real model output.",
  ];
}

/** Splits phrases into word-pair chunks, like a model streaming tokens. */
export function toTokens(phrases: readonly string[]): string[] {
  return phrases.flatMap((phrase) => {
    const words = phrase.split(" ");
    const chunks: string[] = [];
    for (let i = 0; i < words.length; i += 2) chunks.push(`${words.slice(i, i + 2).join(" ")} `);
    return chunks;
  });
}

/**
 * The offline demo model: the same interface as a real model, deterministic text built
 * from the input (research notes for a research agent, a plan for a planner, else a
 * short note), streamed at a human pace. It never calls tools.
 */
export class OfflineDemoModel implements ChatModel {
  readonly endpoint = OFFLINE_MODEL_ENDPOINT;

  constructor(private readonly paceMs: number) {}

  async complete(request: ModelRequest, handlers: TurnHandlers): Promise<ModelTurn> {
    const topic = lastUser(request.messages) || "the topic you gave";
    const agentRole = role(request.messages);
    const phrases = agentRole.includes("research")
      ? researchNotes(topic)
      : agentRole.includes("plan")
        ? contentPlan(topic)
        : genericAnswer(topic);
    const tokens = toTokens(phrases);
    for (const token of tokens) {
      if (this.paceMs > 0) await sleep(this.paceMs, undefined, { signal: request.signal });
      handlers.onContent(token);
    }
    const completion = tokens.length;
    const prompt = Math.ceil(request.messages.reduce((n, m) => n + (m.content?.length ?? 0), 0) / 4);
    return {
      content: tokens.join("").trim(),
      toolCalls: [],
      usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
    };
  }
}
