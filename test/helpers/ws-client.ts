import WebSocket from "ws";

/** A frame as a client sees it: JSON with an `event` field. */
export type Frame = Record<string, unknown> & { event: string };

const TERMINAL = new Set(["WorkflowCompleted", "WorkflowError", "WorkflowCancelled"]);

/** True for a run's terminal event frame. */
export function isTerminal(frame: Frame): boolean {
  return TERMINAL.has(frame.event);
}

/** A real `ws` client that queues every frame it receives, for tests to read in order. */
export class TestClient {
  readonly received: Frame[] = [];
  private readonly queue: Frame[] = [];
  private waiter: { resolve: (frame: Frame) => void; reject: (error: Error) => void } | null = null;
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly socket: WebSocket) {
    socket.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      this.received.push(frame);
      if (this.waiter) {
        const { resolve } = this.waiter;
        this.waiter = null;
        resolve(frame);
      } else {
        this.queue.push(frame);
      }
    });
    this.closed = new Promise((resolve) => {
      socket.on("close", (code, reason) => {
        this.waiter?.reject(new Error(`socket closed (${code} ${reason.toString()}) while waiting for a frame`));
        this.waiter = null;
        resolve({ code, reason: reason.toString() });
      });
    });
  }

  /** Connects and returns the client with the `connected` frame already read. */
  static async connect(url: string): Promise<{ client: TestClient; hello: Frame }> {
    const socket = new WebSocket(url);
    const client = new TestClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once("open", () => resolve());
      socket.once("error", reject);
    });
    const hello = await client.next();
    return { client, hello };
  }

  /** Sends an object as JSON, or a string as-is. */
  send(message: unknown): void {
    this.socket.send(typeof message === "string" ? message : JSON.stringify(message));
  }

  /** The next frame, waiting up to `timeoutMs`. */
  next(timeoutMs = 10_000): Promise<Frame> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no frame within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        resolve: (frame) => {
          clearTimeout(timer);
          resolve(frame);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
    });
  }

  /** Reads `count` frames. */
  async take(count: number, timeoutMs = 10_000): Promise<Frame[]> {
    const frames: Frame[] = [];
    while (frames.length < count) frames.push(await this.next(timeoutMs));
    return frames;
  }

  /** Reads frames up to and including the first terminal event. */
  async untilTerminal(timeoutMs = 20_000): Promise<Frame[]> {
    const frames: Frame[] = [];
    for (;;) {
      const frame = await this.next(timeoutMs);
      frames.push(frame);
      if (isTerminal(frame)) return frames;
    }
  }

  /** Sends one message and returns the next frame. */
  async request(message: unknown): Promise<Frame> {
    this.send(message);
    return this.next();
  }

  /** Closes the socket and waits until it is closed. */
  async close(): Promise<void> {
    if (this.socket.readyState === WebSocket.CLOSED) return;
    this.socket.close();
    await this.closed;
  }
}

/** The event_index values of the run events among `frames`. */
export function indicesOf(frames: readonly Frame[]): number[] {
  return frames.filter((f) => typeof f.event_index === "number").map((f) => f.event_index as number);
}
