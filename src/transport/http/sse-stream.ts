import type { ServerResponse } from "node:http";
import type { FlowdError } from "../../errors.ts";
import type { EventBatch } from "../../protocol/run-events.ts";
import type { ServerFrame } from "../../protocol/server-frames.ts";
import { SSE_HEARTBEAT } from "../../protocol/sse.ts";
import type { EventLog } from "../../store/event-log.ts";
import { CorkedWriter } from "../corked-writer.ts";
import { RunFeed, type FeedOptions, type FeedSink } from "../run-feed.ts";

/** Interval of the comment heartbeat on quiet streams. */
export const SSE_HEARTBEAT_MS = 15_000;

/** Open SSE responses, so shutdown can end them (a hijacked response would otherwise hold the server open). */
export type SseStreams = Set<ServerResponse>;

/** An SSE response as a feed sink: backed up when its unsent bytes pass the high-water mark. */
class ResponseSink implements FeedSink {
  private readonly out: CorkedWriter;

  constructor(
    private readonly res: ServerResponse,
    private readonly highWaterBytes: number,
  ) {
    this.out = new CorkedWriter(res);
  }

  write(batch: EventBatch): boolean {
    if (this.res.writableEnded || this.res.destroyed) return false;
    return this.out.write(batch.sseBytes()) < this.highWaterBytes;
  }

  whenDrained(callback: () => void): void {
    if (this.res.writableEnded || this.res.destroyed) return; // 'close' stops the feed
    if (this.res.writableLength === 0) setImmediate(callback);
    else this.res.once("drain", callback);
  }

  failed(runId: string, error: FlowdError): void {
    if (this.res.writableEnded || this.res.destroyed) return;
    // No id: a resuming client's Last-Event-ID stays at the last event it got.
    const frame: ServerFrame = { event: "error", error: error.message, code: error.code, run_id: runId };
    this.out.write(`event: error\ndata: ${JSON.stringify(frame)}\n\n`);
  }

  stalled(): void {
    // An EventSource reconnects by itself with Last-Event-ID; other clients resume with ?after.
    this.res.end();
  }
}

/**
 * Streams a run's events after `afterIndex` as SSE on a raw response: the backlog at the
 * client's pace, then live events (the same catch-up → live handoff as the WebSocket,
 * I3, I6), then ends after the terminal event. A client that goes away only stops its
 * own delivery.
 */
export function streamRunAsSse(
  res: ServerResponse,
  eventLog: EventLog,
  streams: SseStreams,
  runId: string,
  afterIndex: number,
  feedOptions: FeedOptions & { highWaterBytes: number },
): void {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  // Reconnect after 1 s (EventSource's default is 3 s): resuming is cheap, the log has everything.
  res.write("retry: 1000\n\n");
  streams.add(res);
  const heartbeat = setInterval(() => res.write(SSE_HEARTBEAT), SSE_HEARTBEAT_MS);
  const feed = new RunFeed(eventLog, runId, afterIndex, new ResponseSink(res, feedOptions.highWaterBytes), feedOptions, {
    onEnd: () => res.end(),
  });
  res.on("close", () => {
    clearInterval(heartbeat);
    feed.stop();
    streams.delete(res);
  });
  feed.start();
}
