import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { RawData, WebSocket } from "ws";
import type { Engine } from "../../engine/engine.ts";
import { errorMessage, Errors, FlowdError } from "../../errors.ts";
import { CLIENT_ACTION_NAMES, parseClientAction, type ClientAction } from "../../protocol/client-actions.ts";
import { parseStepRequirements } from "../../protocol/hitl.ts";
import { isFinished } from "../../protocol/run-status.ts";
import { CANCEL_REQUESTED_MESSAGE, type ServerFrame } from "../../protocol/server-frames.ts";
import type { RunLog, RunRecords, RunRow } from "../../store/store.ts";
import type { AuthGuard } from "../../auth/guard.ts";
import { ANYONE, type Permissions, type Principal } from "../../auth/principal.ts";
import { Outbound, type OutboundLimits, type OutboundOwner, type Outbounds } from "../outbound.ts";
import { RunFeed, type FeedOptions } from "../run-feed.ts";
import { SocketSink, frameBytes, tcpSocketOf } from "./socket-sink.ts";

/** Close code for a peer that breaks the rules (floods answers it never reads, keeps guessing the key): 1008. */
export const POLICY_CLOSE_CODE = 1008;

/** Wrong tokens one socket may send before it is closed. */
export const MAX_AUTH_FAILURES_PER_SOCKET = 3;

/** Actions one socket may have waiting behind one that reads the database before its reads pause. */
export const MAX_QUEUED_ACTIONS = 256;

/** What a workflow socket needs from the rest of the server. */
export interface WorkflowSocketDeps {
  engine: Engine;
  runStore: RunRecords;
  eventLog: RunLog;
  auth: AuthGuard;
  permissions: Permissions;
  logger: Logger;
  feed: FeedOptions & OutboundLimits;
  /** Deepest JSON nesting accepted in a frame. */
  maxInputDepth: number;
  /** How long a socket may stay open without authenticating, when a key is set. */
  authTimeoutMs: number;
  outbounds: Outbounds;
}

/**
 * One client connection on /workflows/ws: parse → validate → dispatch. A socket may
 * follow many runs; closing it only stops delivery, never the runs (I4).
 */
export class WorkflowSocket implements OutboundOwner {
  /** Who the socket's last accepted token says it is; null until then (when a key or JWTs are required). */
  private principal: Principal | null;
  /** Runs this socket follows, by run id. */
  private readonly following = new Map<string, RunFeed>();
  private authFailures = 0;
  /** While a key is set and the socket has not authenticated: it is closed when this fires. */
  private authDeadline: NodeJS.Timeout | undefined;
  /** Fires when the token the socket authenticated with expires. */
  private tokenExpiry: NodeJS.Timeout | undefined;
  private readonly tcp: Socket;
  private readonly out: Outbound;
  private readonly sink: SocketSink;
  /** Actions wait for the one before to finish, so a client's actions take effect (and are answered) in order. */
  private readonly backlog: ClientAction[] = [];
  private draining = false;

  constructor(
    private readonly socket: WebSocket,
    private readonly deps: WorkflowSocketDeps,
  ) {
    this.principal = deps.auth.required ? null : ANYONE;
    this.tcp = tcpSocketOf(socket);
    this.out = new Outbound(this.tcp, deps.feed, this);
    deps.outbounds.add(this.out);
    this.sink = new SocketSink(socket, this.tcp, this.out);
    socket.on("message", (data, isBinary) => this.onMessage(data, isBinary));
    socket.on("close", () => {
      clearTimeout(this.authDeadline);
      clearTimeout(this.tokenExpiry);
      deps.outbounds.delete(this.out);
      this.stopFollowingAll();
    });
    socket.on("error", (error) => deps.logger.debug({ err: error }, "websocket error"));
    this.send({ event: "connected", message: "Connected to flowd.", requires_auth: deps.auth.required });
    if (this.principal === null) this.startAuthDeadline();
  }

  /** When the token expires, the socket is as if it had never authenticated: told so, its runs no longer followed. */
  private watchExpiry(expiresAt: number | null): void {
    clearTimeout(this.tokenExpiry);
    if (expiresAt === null) return;
    this.tokenExpiry = setTimeout(() => {
      if (Date.now() < expiresAt) return this.watchExpiry(expiresAt);
      this.principal = null;
      this.stopFollowingAll();
      const expired = Errors.tokenRefused("it has expired (its exp is past); authenticate again with a new one");
      this.send({ event: "auth_error", error: expired.message, code: expired.code });
      this.startAuthDeadline();
    }, Math.min(2 ** 31 - 1, Math.max(0, expiresAt - Date.now())));
  }

  /** A socket that holds a connection without authenticating gives it back after FLOWD_AUTH_TIMEOUT_MS. */
  private startAuthDeadline(): void {
    this.authDeadline = setTimeout(() => {
      if (this.principal !== null) return;
      this.closeForPolicy(`not authenticated within ${this.deps.authTimeoutMs} ms; reconnect and authenticate first`);
    }, this.deps.authTimeoutMs);
  }

  accepting(): boolean {
    return this.socket.readyState === this.socket.OPEN;
  }

  overflowed(): void {
    this.closeForPolicy(`not reading: over ${this.deps.feed.maxUnsentBytes} bytes of answers unsent; read, then reconnect`);
  }

  /** The peer's address (read when needed: most connections never need it). */
  private get remoteAddress(): string | undefined {
    return this.tcp.remoteAddress;
  }

  private send(frame: ServerFrame): void {
    this.out.answer(frameBytes(frame));
  }

  /**
   * Closes a peer that broke the rules. What it sends while the closing handshake waits is
   * read (so its close frame is seen) and answered with nothing: the socket is closing.
   */
  private closeForPolicy(reason: string): void {
    this.deps.logger.warn({ remoteAddress: this.remoteAddress, reason }, "websocket closed by policy");
    this.stopFollowingAll();
    this.socket.close(POLICY_CLOSE_CODE, reason);
    // Not the long wait a stalled subscriber gets: a peer that broke the rules keeps its slot one stall timeout at most.
    setTimeout(() => this.socket.terminate(), this.deps.feed.stallTimeoutMs).unref();
  }

  private sendError(error: unknown): void {
    if (error instanceof FlowdError) {
      this.send({ event: "error", error: error.message, code: error.code });
      return;
    }
    this.deps.logger.error({ err: error }, "unexpected error handling a websocket message");
    this.send({ event: "error", error: `Internal error: ${errorMessage(error)}. The server log has details.`, code: "INTERNAL" });
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    if (isBinary) {
      this.sendError(Errors.binaryFrame());
      return;
    }
    const text = Array.isArray(data) ? Buffer.concat(data).toString("utf8") : Buffer.from(data as ArrayBuffer).toString("utf8");
    const parsed = parseClientAction(text, this.deps.maxInputDepth);
    if (!parsed.ok) {
      this.sendError(parsed.error);
      return;
    }
    this.backlog.push(parsed.action);
    // Reads stop while its actions wait: a client cannot queue without bound.
    if (this.backlog.length === MAX_QUEUED_ACTIONS) this.socket.pause();
    if (!this.draining) void this.drain();
  }

  /** Runs the waiting actions in order; an action that reads the database holds the ones after it. */
  private async drain(): Promise<void> {
    this.draining = true;
    for (let action = this.backlog.shift(); action; action = this.backlog.shift()) {
      if (this.backlog.length === MAX_QUEUED_ACTIONS / 2) this.socket.resume();
      if (this.socket.readyState !== this.socket.OPEN) continue;
      try {
        const pending = this.dispatch(action);
        if (pending) await pending;
      } catch (error) {
        this.sendError(error);
      }
    }
    this.draining = false;
  }

  private dispatch(msg: ClientAction): void | Promise<void> {
    const principal = this.principal;
    if (principal === null && msg.action !== "authenticate" && msg.action !== "ping") {
      this.send({
        event: "auth_required",
        error: `Authenticate first: send {"action":"authenticate","token":"<security key or JWT>"} before "${msg.action}".`,
        code: "AUTH_REQUIRED",
      });
      return;
    }
    switch (msg.action) {
      case "authenticate":
        return this.authenticate(msg.token);
      case "ping":
        return this.send({ event: "pong" });
      case "start-workflow":
        return this.start(principal!, msg);
      case "reconnect":
        return this.reconnect(principal!, msg.run_id, msg.last_event_index ?? -1);
      case "cancel-workflow":
        return this.cancel(principal!, msg.run_id);
      case "continue-workflow":
        return this.continueRun(principal!, msg);
      case "signal-workflow":
        return this.signal(principal!, msg);
      default: {
        const unreachable: never = msg;
        throw Errors.unknownAction(JSON.stringify(unreachable), CLIENT_ACTION_NAMES);
      }
    }
  }

  private async start(principal: Principal, msg: Extract<ClientAction, { action: "start-workflow" }>): Promise<void> {
    this.deps.permissions.start(principal, msg.workflow_id);
    const run = await this.deps.engine.start({
      workflowId: msg.workflow_id,
      message: msg.message,
      sessionId: msg.session_id,
      userId: this.deps.permissions.startedBy(principal, msg.user_id),
      additionalData: msg.additional_data,
      idempotencyKey: this.deps.permissions.idempotencyKey(principal, msg.idempotency_key),
      traceparent: msg.traceparent,
    });
    this.follow(run.runId, -1);
  }

  /** The run, if this socket's principal may know of it (RUN_NOT_FOUND as for an unknown one otherwise). */
  private async visibleRun(principal: Principal, runId: string): Promise<RunRow> {
    return this.deps.permissions.see(principal, runId, await this.deps.runStore.get(runId));
  }

  private async cancel(principal: Principal, runId: string): Promise<void> {
    this.deps.permissions.act(principal, await this.visibleRun(principal, runId));
    const run = await this.deps.engine.cancel(runId);
    this.send({ event: "cancel_requested", run_id: run.runId, message: CANCEL_REQUESTED_MESSAGE });
  }

  private async signal(principal: Principal, msg: Extract<ClientAction, { action: "signal-workflow" }>): Promise<void> {
    const { run_id: runId, name } = msg;
    this.deps.permissions.act(principal, await this.visibleRun(principal, runId));
    const { delivered } = await this.deps.engine.signal(runId, name, msg.payload ?? null);
    this.send({ event: "signal_accepted", run_id: runId, name, delivered });
  }

  private async continueRun(principal: Principal, msg: Extract<ClientAction, { action: "continue-workflow" }>): Promise<void> {
    const run = await this.visibleRun(principal, msg.run_id);
    this.deps.permissions.act(principal, run);
    if (run.workflowId !== msg.workflow_id) throw Errors.runOfOtherWorkflow(run.runId, msg.workflow_id, run.workflowId);
    const before = await this.deps.engine.continueRun(run.runId, parseStepRequirements(run.runId, msg.step_requirements));
    // What follows (StepContinued on) comes on this socket, through its feed of the run if it has one.
    if (!this.following.has(run.runId)) this.follow(run.runId, before.lastEventIndex);
  }

  private async authenticate(token: string): Promise<void> {
    if (!this.deps.auth.required) {
      this.principal = ANYONE;
      this.send({ event: "authenticated", message: "No security key is configured; no authentication is needed." });
      return;
    }
    let principal: Principal;
    try {
      principal = await this.deps.auth.authenticate(token, this.remoteAddress);
    } catch (error) {
      if (!(error instanceof FlowdError)) throw error;
      // A socket is as authenticated as the last token it sent.
      if (this.principal !== null) this.startAuthDeadline();
      this.principal = null;
      clearTimeout(this.tokenExpiry);
      this.stopFollowingAll();
      this.send({ event: "auth_error", error: error.message, code: error.code });
      this.authFailures += 1;
      if (this.authFailures >= MAX_AUTH_FAILURES_PER_SOCKET) {
        this.closeForPolicy(`${this.authFailures} failed authentications; reconnect with the right key`);
      }
      return;
    }
    // Another token, another caller: what the socket followed as the one before stops.
    if (this.principal !== null && !samePrincipal(this.principal, principal)) this.stopFollowingAll();
    this.principal = principal;
    clearTimeout(this.authDeadline);
    this.watchExpiry(principal.expiresAt ?? null);
    this.send({ event: "authenticated", message: "Authenticated.", ...(principal.userId !== null ? { user_id: principal.userId } : {}) });
  }

  /**
   * AgentOS reconnect: a finished run is replayed whole; an active one gets what was
   * missed after `lastEventIndex` (catch_up), then `subscribed`, then live events.
   * The counts it announces are the row's at the read; the feed delivers from `after`
   * whatever was committed since, with nothing lost or repeated (see RunLog.follow).
   */
  private async reconnect(principal: Principal, runId: string, lastEventIndex: number): Promise<void> {
    const run = await this.visibleRun(principal, runId);
    this.deps.permissions.read(principal, run);
    if (run.prunedAt !== null) {
      const expired = Errors.runExpired(runId, run.prunedAt);
      this.send({ event: "error", error: expired.message, code: expired.code, run_id: runId });
      return;
    }
    const eventCount = run.lastEventIndex + 1;
    if (isFinished(run.status)) {
      this.send({
        event: "replay",
        run_id: runId,
        status: run.status,
        total_events: eventCount,
        message: `Run already ${run.status}; replaying all ${eventCount} events.`,
      });
      this.follow(runId, -1);
      return;
    }
    const after = Math.min(lastEventIndex, run.lastEventIndex);
    const missed = run.lastEventIndex - after;
    if (missed > 0) {
      this.send({
        event: "catch_up",
        run_id: runId,
        status: run.status,
        missed_events: missed,
        current_event_count: eventCount,
        message: `Sending ${missed} missed events, then live events.`,
      });
    }
    this.follow(runId, after, run.lastEventIndex, () =>
      this.send({
        event: "subscribed",
        run_id: runId,
        status: run.status,
        current_event_count: eventCount,
        message: "Subscribed: new events follow as the run continues.",
      }),
    );
  }

  /**
   * Sends the run's events after `afterIndex` (catch-up, at the socket's pace), calls
   * `onLive` when it switches to live delivery, then streams live events to the end.
   */
  private follow(runId: string, afterIndex: number, liveAfter?: number, onLive?: () => void): void {
    this.following.get(runId)?.stop();
    const feed = new RunFeed(this.deps.eventLog, runId, afterIndex, this.sink, this.deps.feed, {
      ...(onLive ? { onLive, liveAfter } : {}),
      onEnd: () => {
        if (this.following.get(runId) === feed) this.following.delete(runId);
      },
    });
    this.following.set(runId, feed);
    feed.start();
  }

  private stopFollowingAll(): void {
    for (const feed of this.following.values()) feed.stop();
    this.following.clear();
  }
}

/** Whether two principals are the same caller with the same rights. */
function samePrincipal(a: Principal, b: Principal): boolean {
  if (a.kind !== b.kind || a.userId !== b.userId) return false;
  if (a.kind === "reader" && b.kind === "reader") return a.runId === b.runId;
  if (a.kind === "user" && b.kind === "user") return a.scopes.size === b.scopes.size && [...a.scopes].every((scope) => b.scopes.has(scope));
  return true;
}
