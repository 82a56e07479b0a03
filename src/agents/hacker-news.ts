import { z } from "zod";
import { errorMessage } from "../errors.ts";
import { tool, type ToolDefinition } from "./agent.ts";

/** Where the Hacker News API is, and how long to wait for it. */
export interface HackerNewsOptions {
  baseUrl?: string;
  timeoutMs?: number;
}

const DEFAULT_BASE_URL = "https://hacker-news.firebaseio.com/v0";

interface Item {
  id: number;
  title?: string;
  url?: string;
  score?: number;
  by?: string;
  time?: number;
  descendants?: number;
  text?: string;
  type?: string;
}

/** Hacker News tools for a research agent: top stories and one story's details, over HTTP with timeouts. */
export function hackerNewsTools(options: HackerNewsOptions = {}): ToolDefinition[] {
  const baseUrl = (options.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
  const timeoutMs = options.timeoutMs ?? 10_000;

  async function get<T>(path: string, signal: AbortSignal): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${baseUrl}${path}`, { signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) });
    } catch (error) {
      if (signal.aborted) throw error;
      throw new Error(`Hacker News API (${baseUrl}${path}) did not answer within ${timeoutMs} ms: ${errorMessage(error)}`);
    }
    if (!response.ok) throw new Error(`Hacker News API (${baseUrl}${path}) answered HTTP ${response.status}`);
    return (await response.json()) as T;
  }

  const summary = (item: Item) => ({
    id: item.id,
    title: item.title ?? null,
    url: item.url ?? null,
    score: item.score ?? null,
    by: item.by ?? null,
    comments: item.descendants ?? 0,
  });

  return [
    tool({
      name: "get_top_hackernews_stories",
      description: "Get the current top stories on Hacker News: id, title, url, score, author, comment count.",
      parameters: z.object({ num_stories: z.number().int().min(1).max(30).default(10) }),
      execute: async ({ num_stories }, { signal }) => {
        const ids = await get<number[]>("/topstories.json", signal);
        const items = await Promise.all(ids.slice(0, num_stories).map((id) => get<Item | null>(`/item/${id}.json`, signal)));
        return items.filter((item): item is Item => item !== null).map(summary);
      },
    }),
    tool({
      name: "get_hackernews_story",
      description: "Get one Hacker News story (or comment) by id, with its text.",
      parameters: z.object({ story_id: z.number().int().positive() }),
      execute: async ({ story_id }, { signal }) => {
        const item = await get<Item | null>(`/item/${story_id}.json`, signal);
        if (!item) throw new Error(`no Hacker News item has id ${story_id}`);
        return { ...summary(item), type: item.type ?? null, text: item.text ?? null, time: item.time ?? null };
      },
    }),
  ];
}
