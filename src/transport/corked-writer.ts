import type { Writable } from "node:stream";

/**
 * Writes to a stream corked for the rest of the current synchronous block, so what one
 * block writes (a commit's batch for every subscriber) leaves in one writev instead of
 * a syscall per event. Both sinks, WebSocket and SSE, write through one of these.
 */
export class CorkedWriter {
  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.stream.uncork();
  };

  constructor(private readonly stream: Pick<Writable, "cork" | "uncork" | "write" | "writableLength">) {}

  /** Writes a chunk; returns how many bytes the stream now holds unsent. */
  write(chunk: Buffer | string): number {
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      queueMicrotask(this.uncork);
    }
    this.stream.write(chunk);
    return this.stream.writableLength;
  }
}
