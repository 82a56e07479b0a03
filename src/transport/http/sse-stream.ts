import type { ServerResponse } from "node:http";
import type { Logger } from "pino";
import type { FlowdError } from "../../errors.ts";
import type { EventBatch } from "../../protocol/run-events.ts";
import type { ServerFrame } from "../../protocol/server-frames.ts";
import { SSE_HEARTBEAT } from "../../protocol/sse.ts";
import type { RunLog } from "../../store/store.ts";
import { Outbound, type OutboundLimits, type Outbounds } from "../outbound.ts";
import { RunFeed, type FeedOptions, type FeedSink } from "../run-feed.ts";

/** Open SSE responses, so shutdown can end them (a hijacked response would otherwise hold the server open). */
export type SseStreams = Set<ServerResponse>;

/** What an SSE stream needs from the server. */
export interface SseContext {
  eventLog: RunLog;
  streams: SseStreams;
  outbounds: Outbounds;
  feed: FeedOptions & OutboundLimits;
  /** Interval of the comment heartbeat on quiet streams. */
  heartbeatMs: number;
  logger: Logger;
}

/** An SSE response as a feed sink: backed up when its unsent bytes pass the high-water mark. */
class ResponseSink implements FeedSink {
  constructor(
    private readonly res: ServerResponse,
    private readonly out: Outbound,
    private readonly endStream: () => void,
  ) {}

  hasRoom(): boolean {
    return this.out.hasRoom;
  }

  write(batch: EventBatch): boolean {
    return this.out.feed(batch.sseBytes());
  }

  whenDrained(callback: () => void): void {
    if (!this.out.open) return; // 'close' stops the feed
    if (this.res.writableLength === 0) setImmediate(callback);
    else this.res.once("drain", callback);
  }

  failed(runId: string, error: FlowdError): void {
    // No id: a resuming client's Last-Event-ID stays at the last event it got.
    const frame: ServerFrame = { event: "error", error: error.message, code: error.code, run_id: runId };
    this.out.answer(`event: error\ndata: ${JSON.stringify(frame)}\n\n`);
  }

  stalled(): void {
    // An EventSource reconnects by itself with Last-Event-ID; other clients resume with ?after.
    this.endStream();
  }
}

/** The longest delay a Node timer takes (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Streams a run's events after `afterIndex` as SSE on a raw response: the backlog at the
 * client's pace, then live events (the same catch-up → live handoff as the WebSocket,
 * I3, I6), then ends after the terminal event. A client that goes away only stops its
 * own delivery. `headers` are those the route set (CORS) beside the stream's own.
 */
export function streamRunAsSse(
  res: ServerResponse,
  headers: Readonly<Record<string, string | number | readonly string[] | undefined>>,
  ctx: SseContext,
  runId: string,
  afterIndex: number,
  /** When the token the stream was opened with expires (epoch ms): the stream ends then, and a reconnect must bring a valid one. */
  tokenExpiresAt: number | null = null,
): void {
  const routeHeaders: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) routeHeaders[name] = Array.isArray(value) ? value.join(", ") : String(value);
  }
  res.writeHead(200, {
    ...routeHeaders,
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  // A failed write (the peer reset the connection) is reported here; 'close' cleans up.
  res.on("error", (error) => ctx.logger.debug({ err: error, runId }, "SSE response error"));
  let cutTimer: NodeJS.Timeout | undefined;
  /**
   * Ends the stream; a peer that does not read what is still unsent within the stall
   * timeout is cut off, so a sleeping tab cannot hold a socket (and its buffer) for ever.
   */
  const endStream = (): void => {
    if (!res.writableEnded) res.end();
    cutTimer ??= setTimeout(() => res.destroy(), ctx.feed.stallTimeoutMs);
  };
  const out = new Outbound(res, ctx.feed, { accepting: () => true, overflowed: endStream });
  ctx.outbounds.add(out);
  // Reconnect after 1 s (EventSource's default is 3 s): resuming is cheap, the log has everything.
  out.answer("retry: 1000\n\n");
  ctx.streams.add(res);
  const heartbeat = setInterval(() => out.answer(SSE_HEARTBEAT), ctx.heartbeatMs);
  const expiry = tokenExpiresAt === null ? undefined : setTimeout(endStream, Math.min(MAX_TIMER_MS, Math.max(0, tokenExpiresAt - Date.now())));
  const feed = new RunFeed(ctx.eventLog, runId, afterIndex, new ResponseSink(res, out, endStream), ctx.feed, {
    onEnd: endStream,
  });
  res.on("close", () => {
    clearInterval(heartbeat);
    clearTimeout(cutTimer);
    clearTimeout(expiry);
    feed.stop();
    ctx.outbounds.delete(out);
    ctx.streams.delete(res);
  });
  feed.start();
}
