import { createParser, type EventSourceParser } from "eventsource-parser";

/**
 * Server-Sent Events framing: `id: <event_index>`, `event: <type>`, `data: <json>`.
 * The id lets a browser EventSource resume by itself with Last-Event-ID.
 */

/** One SSE message as a client sees it. */
export interface SseMessage {
  id: string | null;
  event: string;
  data: string;
}

/** Encodes one run event; `data` is single-line JSON (JSON.stringify never emits a raw newline). */
export function encodeSseEvent(id: number, event: string, data: string): string {
  return `id: ${id}\nevent: ${event}\ndata: ${data}\n\n`;
}

/** A comment line: keeps proxies and idle timers from closing a quiet stream. */
export const SSE_HEARTBEAT = ": keep-alive\n\n";

/**
 * An incremental SSE parser: eventsource-parser (the WHATWG event-stream rules: fields,
 * comments, multi-line data, CRLF or LF line ends, messages split across chunks), giving
 * back the messages each chunk completes.
 */
export class SseParser {
  private completed: SseMessage[] = [];
  private readonly parser: EventSourceParser = createParser({
    onEvent: (message) => {
      this.completed.push({ id: message.id ?? null, event: message.event ?? "message", data: message.data });
      if (message.id !== undefined) this.lastEventId = message.id;
    },
  });
  /** The id of the last message with one; what a client sends back as Last-Event-ID. */
  lastEventId: string | null = null;

  /** Feeds a chunk of the stream; returns the messages it completed. */
  push(chunk: string): SseMessage[] {
    this.parser.feed(chunk);
    const messages = this.completed;
    this.completed = [];
    return messages;
  }
}
