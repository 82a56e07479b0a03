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
  private readonly onFlushed = (): void => {
    this.unflushed -= 1;
    if (this.unflushed === 0 && this.drainWaiters.length > 0) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const resume of waiters) resume();
    }
  };

  constructor(
    private readonly socket: WebSocket,
    private readonly highWaterBytes: number,
  ) {}

  write(event: CommittedEvent): boolean {
    if (this.socket.readyState !== this.socket.OPEN) return false;
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
