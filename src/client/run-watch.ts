import { Errors, FlowdError } from "../errors.ts";
import type { RunEventBody } from "../protocol/run-events.ts";
import { isTerminalEvent } from "../protocol/terminal-events.ts";

/** The fields every stored run event carries beside its body (DESIGN §3). */
export interface EventEnvelope {
  event_index: number;
  run_id: string;
  workflow_id: string;
  workflow_name: string;
  session_id: string;
  /** Epoch seconds. */
  created_at: number;
}

/** A run event as the server sends it: one of the run event bodies, keyed on `event`, with its envelope. */
export type RunEvent = RunEventBody & EventEnvelope;

/** The part of a WebSocket the client uses: the browser's, or the `ws` package's in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** A WebSocket class: `new WebSocket(url)`. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** How a watch reconnects after its connection is lost. */
export interface ReconnectOptions {
  /** The first delay; each failed attempt doubles it (with jitter). Default 100 ms. */
  initialDelayMs?: number;
  /** The longest delay. Default 5,000 ms. */
  maxDelayMs?: number;
  /** Failed attempts in a row after which the watch gives up with SERVER_UNREACHABLE. Default: never. */
  maxAttempts?: number;
}

/** A page of a run's stored events after an index (`GET /runs/{run_id}/events`, JSON). */
/** Indices that no longer exist: compaction folded them into the RunContentCompacted event before them. */
export interface Gap {
  from_index: number;
  to_index: number;
  /** The index of the RunContentCompacted event that holds their text. */
  compacted_into?: number | null;
}

export interface EventPage {
  events: RunEvent[];
  /** Indices of the page's range that compaction folded away. */
  gaps: Gap[];
  has_more: boolean;
  /** The run has its terminal event. */
  finished: boolean;
}

export interface WatchConnection {
  wsUrl: string;
  token: string | undefined;
  /** Reads stored events after an index: the catch-up before the socket, a response per page rather than a message per event. */
  readPage: (runId: string, after: number) => Promise<EventPage>;
  /** A new socket to `url`, not yet open: its handlers are set before anything can arrive. */
  openSocket: (url: string) => Promise<WebSocketLike>;
  reconnect: ReconnectOptions;
}

/** Events buffered for a consumer that is behind before the watch stops reading (it resumes from the log later). */
const HIGH_WATER = 10_000;

/** A superseded range: the partial events of an interrupted step or a failed attempt, replaced by what follows. */
export interface SupersededRange {
  from: number;
  to: number;
  /** The event that superseded them (`WorkflowResumed` or `StepRetrying`) and its index. */
  by: "WorkflowResumed" | "StepRetrying";
  at: number;
}

/** Refusals after which a watch comes back later: the server is unreachable, stopping or full. */
const COME_BACK_ERRORS = new Set(["SERVER_UNREACHABLE", "SHUTTING_DOWN", "TOO_MANY_RUNS", "STORAGE_FAILED"]);

/** Close codes after which the server asks clients to come back: 1012 service restart, 1013 try again later. */
const COME_BACK_CODES = new Set([1012, 1013]);

/**
 * A run's events from after an index, as an async iterator: every index exactly once, in
 * order, across lost connections, server restarts and stalls, until the run's terminal
 * event. It reconnects with backoff and asks for what came after the last index it has,
 * which the server serves from its log (a range read).
 */
export class RunWatch implements AsyncIterable<RunEvent> {
  /** The index of the last event handed to the consumer (-1: none). */
  lastIndex: number;
  /** The ranges that later events superseded, in the order they were announced. */
  readonly superseded: SupersededRange[] = [];
  /** Indices the server no longer has (a compacted run: their text is in the RunContentCompacted before them), as it named them. */
  readonly gaps: Gap[] = [];
  /** How many times the watch connected again after losing its connection. */
  reconnects = 0;

  private queue: RunEvent[] = [];
  /** The index of the last event received (queued or handed out). */
  private lastReceived: number;
  private socket: WebSocketLike | null = null;
  private waiting: { resolve: () => void } | null = null;
  private failure: FlowdError | null = null;
  private ended = false;
  private closedByConsumer = false;
  private pausedForConsumer = false;
  private failedAttempts = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  /** A connection is being made (catch-up, then the socket): another must not start beside it. */
  private connecting = false;

  constructor(
    readonly runId: string,
    after: number,
    private readonly connection: WatchConnection,
  ) {
    this.lastIndex = after;
    this.lastReceived = after;
    void this.connect();
  }

  /** Whether the event at `index` was superseded (partial output of an attempt that did not finish). */
  isSuperseded(index: number): boolean {
    return this.superseded.some((range) => index >= range.from && index <= range.to);
  }

  /** Stops watching; an iteration under way ends. */
  close(): void {
    this.closedByConsumer = true;
    this.stopSocket();
    this.wake();
  }

  /** The events one at a time. */
  async *[Symbol.asyncIterator](): AsyncIterator<RunEvent> {
    for await (const batch of this.batches()) {
      for (const event of batch) {
        this.lastIndex = event.event_index;
        yield event;
      }
    }
  }

  /** The events in batches of what arrived together (a page, a commit): cheaper per event for a consumer that takes many. */
  async *batches(): AsyncGenerator<RunEvent[]> {
    try {
      for (;;) {
        if (this.queue.length > 0) {
          const batch = this.queue;
          this.queue = [];
          this.lastIndex = batch[batch.length - 1]!.event_index;
          if (this.pausedForConsumer) {
            this.pausedForConsumer = false;
            void this.connect();
          }
          yield batch;
          continue;
        }
        if (this.failure) throw this.failure;
        if (this.ended || this.closedByConsumer) return;
        await new Promise<void>((resolve) => (this.waiting = { resolve }));
      }
    } finally {
      this.close();
    }
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = null;
    waiting?.resolve();
  }

  private fail(error: FlowdError): void {
    this.failure = error;
    this.stopSocket();
    this.wake();
  }

  private stopSocket(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.onerror = () => {};
      socket.close(1000, "done");
    }
  }

  private get finished(): boolean {
    return this.ended || this.closedByConsumer || this.failure !== null;
  }

  private async connect(): Promise<void> {
    if (this.finished || this.socket || this.connecting) return;
    this.connecting = true;
    try {
      if (!(await this.catchUp())) return;
      const socket = await this.connection.openSocket(this.connection.wsUrl);
      if (this.finished) {
        // Closed before it opened: ws reports that as an error, which must not go unhandled.
        socket.onerror = () => {};
        socket.close(1000, "done");
        return;
      }
      this.socket = socket;
      socket.onmessage = (message) => this.onFrame(socket, message.data);
      socket.onerror = () => {};
      socket.onclose = (event) => {
        if (this.socket !== socket) return;
        this.socket = null;
        if (event.code === 1008) {
          this.fail(Errors.closedByPolicy(event.reason));
          return;
        }
        // 1012 and 1013 ask for a prompt return; anything else is a lost connection.
        this.retryLater(`connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`, COME_BACK_CODES.has(event.code));
      };
    } catch (error) {
      this.retryLater(`cannot connect: ${(error as Error).message}`);
    } finally {
      this.connecting = false;
    }
  }

  /**
   * What is stored after the last index received, in pages over HTTP, before the socket
   * takes over for what comes live. Whether to go on to the socket.
   */
  private async catchUp(): Promise<boolean> {
    for (;;) {
      let page: EventPage;
      try {
        page = await this.connection.readPage(this.runId, this.lastReceived);
      } catch (error) {
        const refusal = error instanceof FlowdError ? error : null;
        // Unreachable, stopping or full: come back later. Anything else (no such run, no key) is the answer.
        if (refusal && !COME_BACK_ERRORS.has(refusal.code)) this.fail(refusal);
        else this.retryLater(`cannot read the run's events: ${(error as Error).message}`);
        return false;
      }
      if (this.finished) return false;
      // Events and the gaps between them, in index order.
      const items: (RunEvent | Gap)[] = [...page.events, ...(page.gaps ?? [])].sort((a, b) => indexOf(a) - indexOf(b));
      for (const item of items) {
        if (!("event_index" in item ? this.receive(item) : this.receiveGap(item))) {
          this.retryLater(`index ${indexOf(item)} came after ${this.lastReceived}`, true);
          return false;
        }
      }
      this.wake();
      if (this.finished) return false;
      if (this.queue.length >= HIGH_WATER) {
        this.pausedForConsumer = true;
        return false;
      }
      if (!page.has_more) {
        // A finished run with nothing after the index: nothing will come (a socket would replay it from the start).
        if (page.finished) {
          this.ended = true;
          this.wake();
          return false;
        }
        return true;
      }
    }
  }

  private send(socket: WebSocketLike, action: Record<string, unknown>): void {
    if (socket === this.socket) socket.send(JSON.stringify(action));
  }

  private subscribe(socket: WebSocketLike): void {
    this.send(socket, { action: "reconnect", run_id: this.runId, last_event_index: this.lastReceived < 0 ? null : this.lastReceived });
  }

  private onFrame(socket: WebSocketLike, data: unknown): void {
    let frame: { event?: unknown; event_index?: unknown; run_id?: unknown; [key: string]: unknown };
    try {
      frame = JSON.parse(typeof data === "string" ? data : String(data)) as typeof frame;
    } catch {
      return;
    }
    switch (frame.event) {
      case "connected":
        if (frame.requires_auth === true) {
          if (this.connection.token === undefined) {
            this.fail(Errors.clientNeedsToken(this.connection.wsUrl));
            return;
          }
          this.send(socket, { action: "authenticate", token: this.connection.token });
        } else {
          this.subscribe(socket);
        }
        return;
      case "authenticated":
        this.subscribe(socket);
        return;
      case "auth_error":
      case "auth_required":
        this.fail(Errors.fromServer(frame.code, String(frame.error)));
        return;
      case "error": {
        if (frame.run_id !== undefined && frame.run_id !== this.runId) return;
        const error = Errors.fromServer(frame.code, String(frame.error));
        // The server is stopping or full: come back later. Anything else is the answer.
        if (COME_BACK_ERRORS.has(error.code)) {
          this.stopSocket();
          this.retryLater(error.message);
        } else {
          this.fail(error);
        }
        return;
      }
      case "replay":
        // A run that finished after the catch-up: replayed from the start. Nothing new in it ends the watch here.
        if (frame.run_id === this.runId && typeof frame.total_events === "number" && frame.total_events - 1 <= this.lastReceived) {
          this.ended = true;
          this.stopSocket();
          this.wake();
          return;
        }
        if (frame.run_id === this.runId) this.failedAttempts = 0;
        return;
      case "catch_up":
      case "subscribed":
        if (frame.run_id === this.runId) this.failedAttempts = 0;
        return;
    }
    if (frame.event === "gap" && frame.run_id === this.runId && typeof frame.from_index === "number" && typeof frame.to_index === "number") {
      if (!this.receiveGap({ from_index: frame.from_index, to_index: frame.to_index, compacted_into: typeof frame.compacted_into === "number" ? frame.compacted_into : null })) {
        this.stopSocket();
        this.retryLater(`a gap from ${frame.from_index} came after ${this.lastReceived}`, true);
      }
      return;
    }
    if (typeof frame.event_index !== "number" || frame.run_id !== this.runId) return;
    if (!this.receive(frame as unknown as RunEvent)) {
      // Never sent by a flowd server; ask again from what is known rather than hand out a gap.
      this.stopSocket();
      this.retryLater(`event ${frame.event_index} came after ${this.lastReceived}`, true);
      return;
    }
    if (!this.ended && this.queue.length >= HIGH_WATER) {
      // The consumer is behind: stop reading, and ask the log for the rest once it has caught up.
      this.pausedForConsumer = true;
      this.stopSocket();
    }
    this.wake();
  }

  /** Moves past indices the server named as gone; one named already is skipped. False for one that is not next. */
  private receiveGap(gap: Gap): boolean {
    if (gap.to_index <= this.lastReceived) return true;
    if (gap.from_index !== this.lastReceived + 1) return false;
    this.lastReceived = gap.to_index;
    this.gaps.push({ from_index: gap.from_index, to_index: gap.to_index, compacted_into: gap.compacted_into ?? null });
    return true;
  }

  /** Queues the run's next event; an index received already (a replay) is skipped. False for one that would leave a gap. */
  private receive(event: RunEvent): boolean {
    const index = event.event_index;
    if (index <= this.lastReceived) return true;
    if (index !== this.lastReceived + 1) return false;
    this.lastReceived = index;
    this.noteSupersession(event);
    this.queue.push(event);
    if (isTerminalEvent(event.event)) {
      this.ended = true;
      this.stopSocket();
    }
    return true;
  }

  private noteSupersession(event: RunEvent): void {
    if (event.event !== "WorkflowResumed" && event.event !== "StepRetrying") return;
    const { superseded_from_index: from, superseded_to_index: to } = event;
    if (from !== null && to !== null) this.superseded.push({ from, to, by: event.event, at: event.event_index });
  }

  private retryLater(reason: string, promptly = false): void {
    if (this.finished || this.pausedForConsumer) return;
    const { initialDelayMs = 100, maxDelayMs = 5000, maxAttempts } = this.connection.reconnect;
    this.failedAttempts += 1;
    if (maxAttempts !== undefined && this.failedAttempts > maxAttempts) {
      this.fail(Errors.gaveUpWatching(this.runId, maxAttempts, this.connection.wsUrl, reason, this.lastReceived));
      return;
    }
    const base = promptly && this.failedAttempts === 1 ? 0 : Math.min(maxDelayMs, initialDelayMs * 2 ** (this.failedAttempts - 1));
    // Jitter: clients dropped at once by a restart do not all come back in the same millisecond.
    const delay = base === 0 ? 0 : base / 2 + Math.random() * (base / 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.reconnects += 1;
      void this.connect();
    }, delay);
  }
}

/** Where an event or a gap sits in the run's index order. */
function indexOf(item: RunEvent | Gap): number {
  return "event_index" in item ? item.event_index : item.from_index;
}
