import type { Socket } from "node:net";
import type { WebSocket } from "ws";
import type { FlowdError } from "../../errors.ts";
import type { ServerFrame } from "../../protocol/server-frames.ts";
import type { EventBatch } from "../../protocol/run-events.ts";
import { CorkedWriter } from "../corked-writer.ts";
import type { FeedSink } from "../run-feed.ts";

/** Close code for a subscriber that stayed backed up too long: 1013, "try again later". */
export const STALLED_CLOSE_CODE = 1013;

/**
 * A WebSocket as a feed sink: backed up when its socket's write buffer passes the high-water mark.
 *
 * Run events skip ws's per-message framing: the complete frames of what one commit added
 * to a run are built once, into one buffer (EventBatch.wsFrames), and written to the TCP
 * socket as-is, one write per commit for every subscriber. This is safe because ws
 * writes its own frames to the same socket synchronously and in call order when it does
 * not compress (the server turns permessage-deflate off), so frames never interleave,
 * and it queues nothing of its own (its `bufferedAmount` is the socket's write buffer,
 * which is what backpressure watches).
 */
export class SocketSink implements FeedSink {
  private drainWaiters: (() => void)[] = [];
  private readonly onDrain = (): void => {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resume of waiters) resume();
  };
  private readonly tcp: Socket;
  private readonly out: CorkedWriter;

  constructor(
    private readonly socket: WebSocket,
    private readonly highWaterBytes: number,
  ) {
    // `_socket` is ws's long-standing handle on the net.Socket of an open connection.
    const tcp = (socket as unknown as { _socket?: Socket })._socket;
    if (!tcp) throw new Error("SocketSink needs an open WebSocket (ws exposes its TCP socket as _socket)");
    this.tcp = tcp;
    this.out = new CorkedWriter(tcp);
  }

  write(batch: EventBatch): boolean {
    if (this.socket.readyState !== this.socket.OPEN) return false;
    return this.out.write(batch.wsFrames()) < this.highWaterBytes;
  }

  whenDrained(callback: () => void): void {
    if (this.socket.readyState !== this.socket.OPEN) return; // the owner stops its feeds on close
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
    if (this.socket.readyState !== this.socket.OPEN) return;
    // After any frames already written: ws writes to the same socket, in call order.
    const frame: ServerFrame = { event: "error", error: error.message, code: error.code, run_id: runId };
    this.socket.send(JSON.stringify(frame));
  }

  stalled(lastIndex: number): void {
    this.socket.close(STALLED_CLOSE_CODE, `too slow; reconnect with last_event_index ${lastIndex}`);
  }
}
