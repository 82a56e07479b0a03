import type { ServerResponse } from "node:http";
import { isTerminalEvent } from "../../protocol/run-events.ts";
import { SSE_HEARTBEAT, encodeSseEvent } from "../../protocol/sse.ts";
import type { EventLog } from "../../store/event-log.ts";

/** Interval of the comment heartbeat on quiet streams. */
export const SSE_HEARTBEAT_MS = 15_000;

/** Open SSE responses, so shutdown can end them (a hijacked response would otherwise hold the server open). */
export type SseStreams = Set<ServerResponse>;

/**
 * Streams a run's events after `afterIndex` as SSE on a raw response: the backlog, then
 * live events (the same catch-up → live handoff as the WebSocket, I3), then ends after
 * the terminal event. A client that goes away only stops its own delivery.
 */
export function streamRunAsSse(res: ServerResponse, eventLog: EventLog, streams: SseStreams, runId: string, afterIndex: number): void {
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  // Reconnect after 1 s (EventSource's default is 3 s): resuming is cheap, the log has everything.
  res.write("retry: 1000\n\n");
  streams.add(res);
  let stop: (() => void) | null = null;
  let ended = false;
  const heartbeat = setInterval(() => res.write(SSE_HEARTBEAT), SSE_HEARTBEAT_MS);
  const cleanup = (): void => {
    clearInterval(heartbeat);
    stop?.();
    stop = null;
    streams.delete(res);
  };
  const end = (): void => {
    if (ended) return;
    ended = true;
    cleanup();
    res.end();
  };
  res.on("close", cleanup);
  stop = eventLog.follow(runId, afterIndex, (event) => {
    res.write(encodeSseEvent(event.index, event.event, event.frame));
    if (isTerminalEvent(event.event)) end();
  });
  if (stop === null) end();
}
