import type { ServerResponse } from "node:http";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { Errors, FlowdError } from "../../errors.ts";
import type { EventBatch } from "../../protocol/run-events.ts";
import { isFinished } from "../../protocol/run-status.ts";
import type { RunRow } from "../../store/store.ts";
import { Outbound } from "../outbound.ts";
import { RunFeed, type FeedSink } from "../run-feed.ts";
import type { HttpDeps } from "./app.ts";

/**
 * A run's log as a Durable Stream (ElectricSQL's protocol, read side): one JSON message per
 * event, the stored frame as it is. An offset is the next event_index, zero-padded to a
 * fixed width, so offsets sort as strings; `-1` is the start.
 */
export const STREAM_PATH = "/streams/runs/:runId";

const OFFSET_DIGITS = 16;
/** How long a long-poll waits for the run's next event before it answers 204. */
const LONG_POLL_MS = 20_000;
/** How long one SSE response lasts before it ends cleanly (the client reconnects from its offset). */
const SSE_CONNECTION_MS = 30_000;
const SSE_KEEPALIVE_MS = 15_000;
/** Events per page read from the log while a response catches up. */
const PAGE_EVENTS = 5000;

/** Live answers' cursor: the 20-second interval they fall in, never the one the client sent (so a cache in front never serves an old answer to a new long-poll). */
const CURSOR_INTERVAL_MS = 20_000;

function cursorAfter(sent: unknown): string {
  const now = Math.floor(Date.now() / CURSOR_INTERVAL_MS);
  const previous = typeof sent === "string" && /^\d+$/.test(sent) ? Number(sent) : -1;
  return String(Math.max(now, previous + 1));
}

function offsetOf(nextIndex: number): string {
  return String(nextIndex).padStart(OFFSET_DIGITS, "0");
}

/** The index after which to read, from the protocol's `offset`; INVALID_REQUEST if it is not one this server gave. */
function afterIndex(offset: unknown, run: RunRow): number {
  if (offset === undefined || offset === "-1") return -1;
  if (typeof offset !== "string" || !new RegExp(`^\\d{${OFFSET_DIGITS}}$`).test(offset)) {
    throw Errors.invalidOffset(`offset must be -1 (the start) or an offset this server gave in Stream-Next-Offset (${OFFSET_DIGITS} digits); got ${JSON.stringify(offset)}.`);
  }
  const next = Number(offset);
  if (next > run.lastEventIndex + 1) {
    throw Errors.invalidOffset(`offset ${offset} is past the end of run ${run.runId} (its next offset is ${offsetOf(run.lastEventIndex + 1)}): resume from an offset this stream gave.`);
  }
  return next - 1;
}

/**
 * The messages of a batch: the run's frames, and compaction's gap notices where folded
 * indices are missing (a reader resuming inside a fold is told where its text went, as on
 * flowd's other routes).
 */
function framesOf(batch: EventBatch): string[] {
  return batch.events.map((event) => event.frame);
}

function baseHeaders(res: ServerResponse, reply: FastifyReply): void {
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) res.setHeader(name, value);
  }
  res.setHeader("cache-control", "no-store");
}

/** Writes `chunk`, waiting for the socket to take it when its buffer is full; a reader stalled past `stallMs` is cut off. */
async function send(res: ServerResponse, chunk: string, stallMs: number): Promise<boolean> {
  if (res.destroyed) return false;
  if (res.write(chunk)) return true;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    const timer = setTimeout(() => {
      res.destroy();
      done();
    }, stallMs);
    res.once("drain", done);
    res.once("close", done);
  });
  return !res.destroyed;
}

/** Catch-up: every event after `after` up to the run's end as read, in one JSON array written a page at a time. */
async function catchUp(deps: HttpDeps, reply: FastifyReply, run: RunRow, after: number): Promise<void> {
  const res = reply.raw;
  const tail = run.lastEventIndex;
  const stallMs = deps.feed.stallTimeoutMs;
  // The first page before the headers: a read that fails (a prune began, the database) is still a plain error answer.
  let page = after < tail ? await deps.eventLog.readPage(run.runId, after, PAGE_EVENTS) : null;
  reply.hijack();
  baseHeaders(res, reply);
  res.writeHead(200, {
    "content-type": "application/json",
    "stream-next-offset": offsetOf(tail + 1),
    "stream-up-to-date": "true",
    ...(isFinished(run.status) ? { "stream-closed": "true" } : {}),
  });
  let first = true;
  if (!(await send(res, "[", stallMs))) return;
  try {
    for (let last = after; last < tail; ) {
      // Fewer events than the headers promised: the answer is cut off, never ended as if whole.
      if (!page) throw new Error(`run ${run.runId}'s events ended at ${last}, before ${tail}`);
      const kept = page.batch.filter((event) => event.index <= tail);
      const frames = kept ? framesOf(kept) : [];
      if (frames.length > 0) {
        if (!(await send(res, `${first ? "" : ","}${frames.join(",")}`, stallMs))) return;
        first = false;
      }
      last = page.batch.last.index;
      page = last < tail ? await deps.eventLog.readPage(run.runId, last, PAGE_EVENTS) : null;
    }
  } catch (error) {
    deps.logger.warn({ err: error, runId: run.runId }, "a Durable Streams catch-up could not be read to its end; the reader was cut off and resumes from its offset");
    res.destroy();
    return;
  }
  res.end("]");
}

/** Long-poll at the tail: the next commit's events as soon as they are stored, or 204 after LONG_POLL_MS. */
async function longPoll(deps: HttpDeps, reply: FastifyReply, run: RunRow, after: number, cursor: string): Promise<void> {
  const res = reply.raw;
  baseHeaders(res, reply);
  res.setHeader("stream-cursor", cursor);
  deps.sseStreams.add(res);
  await new Promise<void>((resolve) => {
    let done = false;
    // Set once follow() returns: it may call back before (a run halted here).
    let stop: (() => void) | null = null;
    const settle = (): void => {
      done = true;
      clearTimeout(timer);
      stop?.();
      deps.sseStreams.delete(res);
      resolve();
    };
    const finish = (status: number, headers: Record<string, string>, body: string): void => {
      if (done) return;
      settle();
      if (!res.destroyed) res.writeHead(status, { "content-type": "application/json", "stream-up-to-date": "true", ...headers }).end(body);
    };
    const fail = (error: FlowdError): void => {
      if (done) return;
      settle();
      if (!res.destroyed) res.writeHead(error.httpStatus, { "content-type": "application/json" }).end(JSON.stringify({ detail: error.message, code: error.code }));
    };
    res.once("close", () => {
      if (!done) settle();
    });
    const timer = setTimeout(() => finish(204, { "stream-next-offset": offsetOf(after + 1) }, ""), LONG_POLL_MS);
    try {
      stop = deps.eventLog.follow(run.runId, after, {
        events: (batch) => {
          const frames = framesOf(batch);
          finish(200, { "stream-next-offset": offsetOf(batch.last.index + 1), ...(batch.endsRun ? { "stream-closed": "true" } : {}) }, `[${frames.join(",")}]`);
        },
        ended: () => finish(200, { "stream-next-offset": offsetOf(after + 1), "stream-closed": "true" }, "[]"),
        failed: fail,
      });
    } catch (error) {
      fail(error instanceof FlowdError ? error : Errors.databaseUnreadable(error));
      return;
    }
    if (done) stop();
  });
}

/** The protocol's SSE: `event: data` with a JSON array of frames, then `event: control` with the offset after them. */
class StreamSseSink implements FeedSink {
  private closedSent = false;
  /** Whether the last control event said up to date (the switch to live then needs no other). */
  upToDateSent = false;

  constructor(
    private readonly out: Outbound,
    private readonly res: ServerResponse,
    private readonly upToDate: (lastIndex: number) => boolean,
    private readonly end: () => void,
    private readonly cursor: string,
    private readonly logger: HttpDeps["logger"],
  ) {}

  hasRoom(): boolean {
    return this.out.hasRoom;
  }

  write(batch: EventBatch): boolean {
    const frames = framesOf(batch);
    const closed = batch.endsRun;
    const control = {
      streamNextOffset: offsetOf(batch.last.index + 1),
      streamCursor: this.cursor,
      upToDate: closed || this.upToDate(batch.last.index),
      ...(closed ? { streamClosed: true } : {}),
    };
    this.upToDateSent = control.upToDate;
    const data = frames.length > 0 ? `event: data\ndata: [${frames.join(",")}]\n\n` : "";
    const room = this.out.feed(`${data}event: control\ndata: ${JSON.stringify(control)}\n\n`);
    if (closed) {
      this.closedSent = true;
      this.end();
    }
    return room;
  }

  /** Says the client is caught up, without events (the switch to live, or a run already over). */
  control(nextIndex: number, closed: boolean): void {
    if (this.closedSent) return;
    this.upToDateSent = true;
    this.out.answer(`event: control\ndata: ${JSON.stringify({ streamNextOffset: offsetOf(nextIndex), streamCursor: this.cursor, upToDate: true, ...(closed ? { streamClosed: true } : {}) })}\n\n`);
    if (closed) {
      this.closedSent = true;
      this.end();
    }
  }

  whenDrained(callback: () => void): void {
    if (!this.out.open) return;
    if (this.res.writableLength === 0) setImmediate(callback);
    else this.res.once("drain", callback);
  }

  stalled(): void {
    this.end();
  }

  failed(runId: string, error: FlowdError): void {
    // No more of the run's events can come from here (it halted, or a read failed): cut off, not ended, so the
    // client's stream fails with an error rather than take a clean end for the stream's.
    this.logger.warn({ runId, code: error.code }, `a Durable Streams SSE reader was cut off: ${error.message}`);
    this.res.destroy();
  }
}

function sse(deps: HttpDeps, reply: FastifyReply, run: RunRow, after: number, cursor: string): void {
  reply.hijack();
  const res = reply.raw;
  baseHeaders(res, reply);
  res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "x-accel-buffering": "no", connection: "keep-alive" });
  let ended = false;
  let cutTimer: NodeJS.Timeout | undefined;
  /** Ends the response; a reader that does not read what is still unsent within the stall timeout is cut off. */
  const end = (): void => {
    if (ended) return;
    ended = true;
    if (!res.writableEnded) res.end();
    cutTimer = setTimeout(() => res.destroy(), deps.feed.stallTimeoutMs);
  };
  deps.sseStreams.add(res);
  const out = new Outbound(res, deps.feed, { accepting: () => true, overflowed: end });
  deps.outbounds.add(out);
  const tail = run.lastEventIndex;
  const sink = new StreamSseSink(out, res, (lastIndex) => lastIndex >= tail, end, cursor, deps.logger);
  const keepalive = setInterval(() => out.answer(": keep-alive\n\n"), SSE_KEEPALIVE_MS);
  // A response lasts a while, then ends cleanly: the client comes back from its offset (and a proxy never holds one for ever).
  const lifetime = setTimeout(end, SSE_CONNECTION_MS);
  const feed = new RunFeed(deps.eventLog, run.runId, after, sink, deps.feed, {
    onLive: () => {
      if (!sink.upToDateSent) sink.control(feed.lastIndex + 1, false);
    },
    onEnd: end,
  });
  res.on("close", () => {
    clearInterval(keepalive);
    clearTimeout(lifetime);
    clearTimeout(cutTimer);
    deps.sseStreams.delete(res);
    feed.stop();
    deps.outbounds.delete(out);
  });
  // Nothing after the offset, and nothing more will come: said at once.
  if (isFinished(run.status) && after >= tail) {
    sink.control(tail + 1, true);
    return;
  }
  feed.start();
}

async function visibleRun(deps: HttpDeps, request: FastifyRequest<{ Params: { runId: string } }>): Promise<RunRow> {
  const run = deps.permissions.see(request.principal, request.params.runId, await deps.runStore.get(request.params.runId));
  deps.permissions.read(request.principal, run);
  // Gone by retention: the protocol's 410.
  if (run.prunedAt !== null) throw Errors.runExpired(run.runId, run.prunedAt);
  return run;
}

/** `GET` and `HEAD /streams/runs/{run_id}`; writes are refused: the engine is the only writer of a run's log. */
export function registerStreamRoutes(app: FastifyInstance, deps: HttpDeps): void {
  app.get<{ Params: { runId: string }; Querystring: Record<string, unknown> }>(STREAM_PATH, async (request, reply) => {
    const run = await visibleRun(deps, request);
    const after = afterIndex(request.query.offset, run);
    if (request.method === "HEAD") {
      return reply
        .headers({
          "content-type": "application/json",
          "stream-next-offset": offsetOf(run.lastEventIndex + 1),
          "cache-control": "no-store",
          ...(isFinished(run.status) ? { "stream-closed": "true" } : {}),
        })
        .send();
    }
    const live = request.query.live;
    if (live !== undefined && live !== "long-poll" && live !== "sse") {
      throw Errors.invalidOffset(`live must be long-poll or sse (or left out for a catch-up); got ${JSON.stringify(live)}.`);
    }
    const cursor = cursorAfter(request.query.cursor);
    if (live === "sse") return sse(deps, reply, run, after, cursor);
    // At the end of a run still going, a long-poll waits for what comes next; otherwise what there is, up to the end.
    if (live === "long-poll" && after >= run.lastEventIndex && !isFinished(run.status)) {
      reply.hijack();
      return longPoll(deps, reply, run, after, cursor);
    }
    return catchUp(deps, reply, run, after);
  });
  for (const method of ["PUT", "POST", "DELETE", "PATCH"] as const) {
    app.route({
      method,
      url: STREAM_PATH,
      handler: async (_request, reply) => {
        void reply.header("allow", "GET, HEAD");
        throw Errors.streamReadOnly(method);
      },
    });
  }
}
