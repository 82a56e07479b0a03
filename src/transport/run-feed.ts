import { Errors, FlowdError } from "../errors.ts";
import type { EventBatch } from "../protocol/run-events.ts";
import type { RunLog } from "../store/store.ts";

const FIRST_PAGE_SIZE = 32;

/** Where a feed writes its events: a WebSocket or an SSE response. */
export interface FeedSink {
  /**
   * Writes a batch of the run's events (what a commit added, or a page read from the log)
   * in one write; returns false once the transport's buffer is above its high-water mark.
   */
  write(batch: EventBatch): boolean;
  /** Whether a batch may be written now (the transport is below its high-water mark). */
  hasRoom(): boolean;
  /** Calls back once everything written so far has left the process (or the sink closed). */
  whenDrained(callback: () => void): void;
  /** Stalled past the timeout: close the subscriber, telling it to reconnect after `lastIndex`. */
  stalled(lastIndex: number): void;
  /** No more of the run's events will come from this server (see EventLog.halt): tell the subscriber why. */
  failed(runId: string, error: FlowdError): void;
}

/** How feeds behave; one set per server. */
export interface FeedOptions {
  /** Events read from the log per page while catching up. */
  pageSize: number;
  /** How long a subscriber may stay backed up before it is closed. */
  stallTimeoutMs: number;
  /** Every open feed of the server, for its metrics (live, or reading from the log). */
  census?: Set<RunFeed>;
}

/** What a feed reports to its owner. */
export interface FeedHooks {
  /** First switch from catch-up to live delivery (the WebSocket sends `subscribed` here). */
  onLive?: () => void;
  /**
   * The last index the catch-up was announced up to (a reconnect's `catch_up` counts the
   * events missed when the run was read): `onLive` comes right after it, even if more
   * were committed while the catch-up was read, so that the client gets exactly what was
   * announced before `subscribed` and everything later after it.
   */
  liveAfter?: number;
  /** The terminal event was written (or the run halted in this server, see EventLog.halt): the feed is over. */
  onEnd?: () => void;
}

/**
 * Delivers a run's events after an index to one subscriber: every event exactly once,
 * in order, whatever its speed (I3, I6). The log is the buffer: a subscriber reads it in
 * pages while it catches up; once caught up it is fed live; when its transport buffer
 * passes the high-water mark it leaves live delivery and goes back to reading the log
 * at its own pace, so a slow subscriber costs the server at most one buffer, and never
 * slows the run or the other subscribers. Stalled past the timeout, it is closed and
 * told where to reconnect from.
 */
export class RunFeed {
  private last: number;
  private stopLive: (() => void) | null = null;
  /** Backed up: live events are ignored (they are re-read from the log once drained). */
  private paused = false;
  private closed = false;
  private wentLive = false;
  /** The first page is small so the first event leaves within a millisecond; later pages are full size. */
  private firstPage = true;
  private stallTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: RunLog,
    private readonly runId: string,
    afterIndex: number,
    private readonly sink: FeedSink,
    private readonly options: FeedOptions,
    private readonly hooks: FeedHooks = {},
  ) {
    this.last = afterIndex;
  }

  /** Starts delivery (the catch-up runs as far as the sink keeps up). */
  start(): void {
    this.options.census?.add(this);
    void this.pump();
  }

  /** Stops delivery for good (the subscriber went away). */
  stop(): void {
    this.options.census?.delete(this);
    this.closed = true;
    clearTimeout(this.stallTimer);
    this.stopLive?.();
    this.stopLive = null;
  }

  /** Whether it is fed live now (rather than reading the log: catching up, or backed up). */
  get live(): boolean {
    return this.stopLive !== null;
  }

  /** The index of the last event written to the sink. */
  get lastIndex(): number {
    return this.last;
  }

  /** Writes a batch; false once the feed is over (the run ended) or the sink is backed up. */
  private deliver(batch: EventBatch): boolean {
    const { liveAfter } = this.hooks;
    if (!this.wentLive && liveAfter !== undefined && batch.last.index > liveAfter) {
      const announced = batch.filter((event) => event.index <= liveAfter);
      if (announced) {
        this.sink.write(announced);
        this.last = announced.last.index;
      }
      this.goneLive();
      batch = batch.filter((event) => event.index > liveAfter)!;
    }
    const keepGoing = this.sink.write(batch);
    this.last = batch.last.index;
    if (batch.endsRun) {
      this.onEnded();
      return false;
    }
    return keepGoing;
  }

  /** Catch-up: pages from the log while the sink keeps up, then live delivery. */
  private async pump(): Promise<void> {
    this.paused = false;
    if (this.closed) return;
    // Other feeds of the connection (or a reconnect) may have filled it: read nothing until it drains.
    if (!this.sink.hasRoom()) {
      this.waitForDrain();
      return;
    }
    const size = this.firstPage ? Math.min(FIRST_PAGE_SIZE, this.options.pageSize) : this.options.pageSize;
    this.firstPage = false;
    let page;
    try {
      page = await this.log.readPage(this.runId, this.last, size);
    } catch (error) {
      this.onFailure(error instanceof FlowdError ? error : Errors.databaseUnreadable(error));
      return;
    }
    // Stopped while the page was read (the subscriber went away).
    if (this.closed) return;
    // Filled meanwhile by other writes of the connection: the page is read again once it drains.
    if (page && !this.sink.hasRoom()) {
      this.waitForDrain();
      return;
    }
    // Nothing is stored after a run's terminal event: if a page has it, it is the last.
    if (page && !this.deliver(page.batch)) {
      if (!this.closed) this.waitForDrain();
      return;
    }
    if (page?.full) {
      // More to read: let this page leave now (sinks flush at the end of the synchronous
      // block) and read the next one next turn, so the socket is never idle while a page
      // is read, and other clients are served in between.
      setImmediate(() => void this.pump());
      return;
    }
    // Caught up with what was committed: follow() reads what came since the last page
    // and hands over to live delivery with nothing lost or repeated (I3, see RunLog.follow).
    let stop: () => void;
    try {
      stop = this.log.follow(this.runId, this.last, {
        events: (batch) => this.onLive(batch),
        ended: () => this.onEnded(),
        failed: (error) => this.onFailure(error),
      });
    } catch (error) {
      // The run is gone (or cannot be read): the subscriber is told, nothing is left unhandled.
      this.onFailure(error instanceof FlowdError ? error : Errors.databaseUnreadable(error));
      return;
    }
    // Over already (the run had ended, or halted here), or backed up by the backlog follow() handed over.
    if (this.closed || this.paused) {
      stop();
      return;
    }
    this.stopLive = stop;
    this.goneLive();
  }

  private goneLive(): void {
    if (this.wentLive) return;
    this.wentLive = true;
    this.hooks.onLive?.();
  }

  /** The run's terminal event was delivered, or came before the index this feed started from. */
  private onEnded(): void {
    // Backed up: the terminal event was not written, and is read again from the log once drained.
    if (this.closed || this.paused) return;
    this.stop();
    this.hooks.onEnd?.();
  }

  private onLive(batch: EventBatch): void {
    if (this.paused || this.closed) return;
    // Backed up already (another feed of the connection filled it): this batch is read again from the log.
    if (!this.sink.hasRoom()) {
      this.stopLive?.();
      this.stopLive = null;
      this.waitForDrain();
      return;
    }
    if (!this.deliver(batch) && !this.closed) {
      // Backed up: leave live delivery; the log keeps everything for later.
      this.stopLive?.();
      this.stopLive = null;
      this.waitForDrain();
    }
  }

  private onFailure(error: FlowdError): void {
    if (this.closed) return;
    this.stop();
    this.sink.failed(this.runId, error);
    this.hooks.onEnd?.();
  }

  private waitForDrain(): void {
    this.paused = true;
    this.stallTimer = setTimeout(() => {
      this.stop();
      this.sink.stalled(this.last);
    }, this.options.stallTimeoutMs);
    this.sink.whenDrained(() => {
      clearTimeout(this.stallTimer);
      if (!this.closed) void this.pump();
    });
  }
}
