import type { Socket } from "node:net";
import type { WebSocket } from "ws";
import type { CommittedEvent } from "../../protocol/run-events.ts";
import type { FeedSink } from "../run-feed.ts";

/** Close code for a subscriber that stayed backed up too long: 1013, "try again later". */
export const STALLED_CLOSE_CODE = 1013;

/** A WebSocket as a feed sink: backed up when `bufferedAmount` passes the high-water mark. */
export class SocketSink implements FeedSink {
  private unflushed = 0;
  private drainWaiters: (() => void)[] = [];
  // One callback for every send (not a closure per frame): counts frames not yet handed to the OS.
  // Delivery resumes at a quarter of the high-water mark, so the socket never runs dry meanwhile.
  private readonly onFlushed = (): void => {
    this.unflushed -= 1;
    if (this.drainWaiters.length > 0 && (this.unflushed === 0 || this.socket.bufferedAmount < this.highWaterBytes / 4)) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const resume of waiters) resume();
    }
  };

  private corked = false;
  private readonly tcp: Socket | undefined;
  private readonly uncork = (): void => {
    this.corked = false;
    this.tcp?.uncork();
  };

  constructor(
    private readonly socket: WebSocket,
    private readonly highWaterBytes: number,
  ) {
    // ws writes each message with its own syscall; corking its TCP socket for the rest of the
    // current synchronous block (a commit's batch, a catch-up page) sends them in one writev.
    // `_socket` is ws's long-standing handle on the net.Socket; without it we just send uncorked.
    this.tcp = (socket as unknown as { _socket?: Socket })._socket;
  }

  write(event: CommittedEvent): boolean {
    if (this.socket.readyState !== this.socket.OPEN) return false;
    if (!this.corked && this.tcp) {
      this.corked = true;
      this.tcp.cork();
      queueMicrotask(this.uncork);
    }
    this.unflushed += 1;
    // The same bytes go to every subscriber: encoded once, sent as a text frame.
    this.socket.send(event.frameBytes(), { binary: false }, this.onFlushed);
    return this.socket.bufferedAmount < this.highWaterBytes;
  }

  whenDrained(callback: () => void): void {
    if (this.socket.readyState !== this.socket.OPEN) return; // the owner stops its feeds on close
    if (this.unflushed === 0) setImmediate(callback);
    else this.drainWaiters.push(callback);
  }

  stalled(lastIndex: number): void {
    this.socket.close(STALLED_CLOSE_CODE, `too slow; reconnect with last_event_index ${lastIndex}`);
  }
}
