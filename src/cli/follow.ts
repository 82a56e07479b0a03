import { setTimeout as sleep } from "node:timers/promises";
import type { ClientConfig } from "../config.ts";
import { errorMessage, Errors, FlowdError } from "../errors.ts";
import { isTerminalEvent } from "../protocol/run-events.ts";
import { SseParser } from "../protocol/sse.ts";
import { responseError } from "../client/client.ts";
import { authHeaders } from "./api-client.ts";
import { duration } from "./format.ts";

/** How `flowd runs events --follow` follows a run. */
export interface FollowOptions {
  config: ClientConfig;
  runId: string;
  /** Print events after this index. */
  after: number;
  /** Prints one event (the frame as stored). */
  print: (frame: Record<string, unknown>) => void;
  /** Where progress and reconnect notices go (stderr). */
  notice: (line: string, transient: boolean) => void;
  /** Consecutive failed connection attempts before giving up. */
  maxAttempts?: number;
}

/** What following ended with. */
export interface FollowResult {
  terminalEvent: string;
  events: number;
  lastIndex: number;
}

/**
 * Follows a run over SSE from `after` to its terminal event. When the connection drops
 * (the server restarts, say) it reconnects with backoff and resumes after the last index
 * it printed, so no event is printed twice or skipped.
 */
export async function followRun(options: FollowOptions): Promise<FollowResult> {
  const { config, runId } = options;
  const maxAttempts = options.maxAttempts ?? 60;
  const started = Date.now();
  let last = options.after;
  let events = 0;
  let step = "-";
  let failures = 0;
  let lastProgress = 0;
  const progress = (force: boolean): void => {
    const now = Date.now();
    if (!force && now - lastProgress < 200) return;
    lastProgress = now;
    options.notice(`step: ${step} | events: ${events} (last #${last}) | elapsed: ${duration(now - started)}`, true);
  };

  for (;;) {
    let reason: string;
    try {
      const url = `${config.url}/runs/${encodeURIComponent(runId)}/events?after=${last}`;
      const response = await fetch(url, { headers: { accept: "text/event-stream", ...authHeaders(config) } });
      if (response.status >= 400 && response.status < 500) throw await responseError(response);
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      failures = 0;
      const parser = new SseParser();
      for await (const chunk of response.body.pipeThrough(new TextDecoderStream())) {
        for (const message of parser.push(chunk)) {
          const frame = JSON.parse(message.data) as Record<string, unknown>;
          if (message.event === "error") {
            // The server ended the stream with a reason (the run's events cannot be stored, or it does not run it): retrying would not help.
            throw Errors.fromServer(frame.code, String(frame.error));
          }
          const index = frame.event_index;
          if (typeof index !== "number" || index <= last) continue;
          options.print(frame);
          last = index;
          events += 1;
          if (typeof frame.step_name === "string") step = frame.step_name;
          progress(false);
          if (isTerminalEvent(message.event)) {
            progress(true);
            return { terminalEvent: message.event, events, lastIndex: last };
          }
        }
      }
      reason = "the stream ended before the run did";
    } catch (error) {
      if (error instanceof FlowdError) throw error;
      reason = errorMessage((error as { cause?: unknown }).cause ?? error);
    }
    failures += 1;
    if (failures > maxAttempts) {
      throw Errors.gaveUpFollowing(runId, maxAttempts, config.url, reason, last);
    }
    const backoff = Math.min(5000, 250 * 2 ** (failures - 1));
    const delay = Math.round(backoff * (0.5 + Math.random() / 2));
    options.notice(`connection lost (${reason}); reconnecting in ${duration(delay)} from event #${last + 1}`, false);
    await sleep(delay);
  }
}
