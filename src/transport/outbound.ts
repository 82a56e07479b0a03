import type { Writable } from "node:stream";

/** How much one connection may hold unsent. */
export interface OutboundLimits {
  /** Unsent bytes above which run feeds stop writing and read the log later, at the peer's pace (I6). */
  highWaterBytes: number;
  /**
   * Bytes of answers (anything but run events: pongs, errors, heartbeats) a connection may
   * queue while its peer reads nothing. Run feeds bound themselves by the high-water mark;
   * answers are as many as the peer asks for, so a peer that asks and never reads is cut off.
   */
  maxUnsentBytes: number;
}

/** The connection an Outbound writes for (methods rather than closures: there is one per connection). */
export interface OutboundOwner {
  /** Whether the connection still takes frames (a WebSocket that sent its close frame does not). */
  accepting(): boolean;
  /** Called once when answers pass `maxUnsentBytes`: close the connection, saying why. */
  overflowed(): void;
}

/** The stream under a connection: the TCP socket of a WebSocket, or an SSE response. */
export type OutboundStream = Pick<
  Writable,
  "cork" | "uncork" | "write" | "writableLength" | "writableEnded" | "destroyed" | "on"
>;

/**
 * Everything one connection sends goes through its Outbound: run feeds, answers, errors,
 * heartbeats. It never writes to a stream that has ended or to a connection that is
 * closing, and it bounds what the connection can make the server hold: feeds stop at the
 * high-water mark, and answers queued while the peer reads nothing past `maxUnsentBytes`
 * close the connection (`owner.overflowed()`) instead of growing the server's memory.
 *
 * Writes are corked for the rest of the current synchronous block, so what one block
 * writes (a commit's batch for every subscriber) leaves in one writev.
 */
export class Outbound {
  private corked = false;
  /**
   * Answer bytes written since the stream last emptied (the kernel took everything at the
   * end of a block) or drained below its own mark: what the peer has left unread.
   */
  private answersSinceDrain = 0;
  private overflowed = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.stream.uncork();
    if (this.stream.writableLength === 0) this.answersSinceDrain = 0;
  };

  constructor(
    private readonly stream: OutboundStream,
    private readonly limits: OutboundLimits,
    private readonly owner: OutboundOwner,
  ) {
    stream.on("drain", () => {
      this.answersSinceDrain = 0;
    });
  }

  /** Whether anything written now would be sent. */
  get open(): boolean {
    return !this.overflowed && !this.stream.writableEnded && !this.stream.destroyed && this.owner.accepting();
  }

  /** Bytes written and not yet handed to the kernel. */
  get unsentBytes(): number {
    return this.stream.writableLength;
  }

  /** Whether a run feed may write now: the connection is open and below its high-water mark. */
  get hasRoom(): boolean {
    return this.open && this.stream.writableLength < this.limits.highWaterBytes;
  }

  /** Writes a run feed's batch; false if it was not written or the connection is now above its high-water mark. */
  feed(chunk: Buffer | string): boolean {
    if (!this.open) return false;
    return this.write(chunk) < this.limits.highWaterBytes;
  }

  /** Writes an answer; false if it was not written (closed, or over budget: then the connection is closed). */
  answer(chunk: Buffer | string): boolean {
    if (!this.open) return false;
    this.answersSinceDrain += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.length;
    if (this.answersSinceDrain > this.limits.maxUnsentBytes) {
      this.overflowed = true;
      this.owner.overflowed();
      return false;
    }
    this.write(chunk);
    return true;
  }

  private write(chunk: Buffer | string): number {
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      queueMicrotask(this.uncork);
    }
    this.stream.write(chunk);
    return this.stream.writableLength;
  }
}

/** The open connections' outbounds, for `/health`. */
export class Outbounds {
  private readonly all = new Set<Outbound>();

  add(outbound: Outbound): void {
    this.all.add(outbound);
  }

  delete(outbound: Outbound): void {
    this.all.delete(outbound);
  }

  /** Connections streaming now (WebSockets and SSE responses). */
  get count(): number {
    return this.all.size;
  }

  /** Bytes all of them hold unsent. */
  get unsentBytes(): number {
    let total = 0;
    for (const outbound of this.all) total += outbound.unsentBytes;
    return total;
  }
}
