import type { Socket } from "node:net";
import type { WebSocket } from "ws";
import { Errors, type FlowdError } from "../../errors.ts";
import type { EventBatch } from "../../protocol/run-events.ts";
import type { ServerFrame } from "../../protocol/server-frames.ts";
import { encodeTextFrame } from "../../protocol/ws-frame.ts";
import type { FeedSink } from "../run-feed.ts";
import type { Outbound } from "../outbound.ts";

/** Close code for a subscriber that stayed backed up too long: 1013, "try again later". */
export const STALLED_CLOSE_CODE = 1013;

/**
 * The TCP socket of an open WebSocket. `_socket` is ws's long-standing handle on it; flowd
 * writes its own complete frames there (see SocketSink).
 */
export function tcpSocketOf(socket: WebSocket): Socket {
  const tcp = (socket as unknown as { _socket?: Socket })._socket;
  if (!tcp) throw Errors.broken("ws no longer exposes an open WebSocket's TCP socket as _socket");
  return tcp;
}

/** A server frame as one complete WebSocket text frame. */
export function frameBytes(frame: ServerFrame): Buffer {
  return encodeTextFrame(JSON.stringify(frame));
}

/**
 * A WebSocket as a feed sink: backed up when its socket's write buffer passes the high-water mark.
 *
 * Every frame flowd sends skips ws's per-message framing: the complete frames of what one
 * commit added to a run are built once, into one buffer (EventBatch.wsFrames), and
 * written to the TCP socket through the connection's Outbound, as are answers. This is
 * safe because ws writes its own frames (pongs, close) to the same socket synchronously
 * and in call order when it does not compress (the server turns permessage-deflate off),
 * so frames never interleave, and it queues nothing of its own (what is unsent is the
 * socket's write buffer, which is what backpressure watches). `ws` is pinned to the minor
 * version test/protocol/ws-sender-guard.test.ts checked these assumptions against; that
 * test fails if an upgrade frames differently, queues, or writes out of call order.
 */
export class SocketSink implements FeedSink {
  private drainWaiters: (() => void)[] = [];
  private readonly onDrain = (): void => {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resume of waiters) resume();
  };

  constructor(
    private readonly socket: WebSocket,
    private readonly tcp: Socket,
    private readonly out: Outbound,
  ) {}

  hasRoom(): boolean {
    return this.out.hasRoom;
  }

  write(batch: EventBatch): boolean {
    return this.out.feed(batch.wsFrames());
  }

  whenDrained(callback: () => void): void {
    if (!this.out.open) return; // the owner stops its feeds on close
    // Above the high-water mark the socket's own (much smaller) one was passed too, so it
    // emits 'drain' once everything is handed to the kernel, whose buffer keeps the
    // connection busy while the next page is read.
    if (!this.tcp.writableNeedDrain) {
      setImmediate(callback);
      return;
    }
    // One listener for all the feeds of this socket that wait.
    if (this.drainWaiters.length === 0) this.tcp.once("drain", this.onDrain);
    this.drainWaiters.push(callback);
  }

  failed(runId: string, error: FlowdError): void {
    this.out.answer(frameBytes({ event: "error", error: error.message, code: error.code, run_id: runId }));
  }

  stalled(lastIndex: number): void {
    this.socket.close(STALLED_CLOSE_CODE, `too slow; reconnect with last_event_index ${lastIndex}`);
  }
}
