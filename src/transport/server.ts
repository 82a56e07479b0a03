import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { WebSocketServer, type ServerOptions, type WebSocket } from "ws";
import { AccessPolicy } from "./access.ts";
import { AuthGuard } from "../auth/guard.ts";
import { Permissions } from "../auth/principal.ts";
import { TokenVerifier } from "../auth/tokens.ts";
import { Errors } from "../errors.ts";
import { createHttpApp } from "./http/app.ts";
import { rawErrorResponse } from "./http/raw-error.ts";
import type { TransportDeps, TransportShared } from "./deps.ts";
import { Outbounds } from "./outbound.ts";
import { WorkflowSocket } from "./ws/workflow-socket.ts";

/** The WebSocket path of the AgentOS workflow protocol. */
export const WORKFLOW_WS_PATH = "/workflows/ws";

/** Interval of WebSocket pings; a peer silent for two of them is terminated. */
export const WS_HEARTBEAT_MS = 30_000;

/** How many stall timeouts a closing WebSocket gets to read up to its close frame. */
const CLOSING_WAIT_STALL_TIMEOUTS = 10;

/** How often a refused connection is logged at most (a flood of them would flood the log). */
const DROP_LOG_INTERVAL_MS = 10_000;

/** HTTP and WebSocket on one port. */
export interface Transport {
  /**
   * Binds the port and runs `beforeAccepting` before any request is served (requests and
   * upgrades that arrive meanwhile wait for it).
   */
  listen(port: number, host: string, beforeAccepting: () => Promise<void>): Promise<AddressInfo>;
  /** Stops accepting, closes every socket with `closeCode`, ends SSE streams, and waits for the listener to close. */
  close(closeCode: number, reason: string): Promise<void>;
}

/** Builds the HTTP API with the workflow WebSocket on the same port. */
export function createTransport(deps: TransportDeps): Transport {
  const { config, logger } = deps;
  const shared: TransportShared = {
    access: new AccessPolicy(config),
    auth: new AuthGuard(new TokenVerifier(config), config.authFailuresPerMinute, (address, error, throttled) =>
      logger.warn(
        { address, code: error.code, reason: error.message },
        throttled ? "a token was refused; this address is now throttled for the rest of the minute" : "a token was refused (first from this address this minute)",
      ),
    ),
    permissions: new Permissions(config.userIsolation),
    outbounds: new Outbounds(),
    sseStreams: new Set(),
  };
  const app = createHttpApp({ ...deps, ...shared });
  // Nothing is served before recovery has run (see listen).
  let opened!: () => void;
  const open = new Promise<void>((resolve) => {
    opened = resolve;
  });
  app.addHook("onRequest", async () => open);
  const http = app.server;
  // Past the cap, Node closes new connections at once: each one costs memory and a descriptor.
  http.maxConnections = config.maxConnections;
  let dropped = 0;
  let dropLogged = 0;
  http.on("drop", () => {
    dropped += 1;
    const now = Date.now();
    if (now - dropLogged < DROP_LOG_INTERVAL_MS) return;
    dropLogged = now;
    logger.warn({ maxConnections: config.maxConnections, dropped }, "connections refused: FLOWD_MAX_CONNECTIONS reached");
  });
  // `closeTimeout` is ws's since 8.23; its type definitions do not list it yet.
  const wsOptions: ServerOptions & { closeTimeout: number } = {
    noServer: true,
    maxPayload: config.maxInputBytes,
    perMessageDeflate: false,
    // A stalled subscriber's close frame waits behind what it has not read: it gets that
    // long to read up to it (its unsent bytes are bounded meanwhile) before it is cut.
    closeTimeout: CLOSING_WAIT_STALL_TIMEOUTS * config.stallTimeoutMs,
  };
  const wss = new WebSocketServer(wsOptions);
  // Heartbeat: a peer that has not answered the previous ping by the next one is gone (half-open TCP).
  const alive = new WeakSet<WebSocket>();
  const socketDeps = {
    ...deps,
    auth: shared.auth,
    permissions: shared.permissions,
    outbounds: shared.outbounds,
    maxInputDepth: config.maxInputDepth,
    authTimeoutMs: config.authTimeoutMs,
  };
  wss.on("connection", (socket) => {
    alive.add(socket);
    socket.on("pong", () => alive.add(socket));
    new WorkflowSocket(socket, socketDeps);
  });
  const heartbeat = setInterval(() => {
    for (const socket of wss.clients) {
      // A closing socket is bounded by its close timeout; its pongs may wait behind unread frames.
      if (socket.readyState === socket.CLOSING) continue;
      if (!alive.has(socket)) {
        socket.terminate();
        continue;
      }
      alive.delete(socket);
      socket.ping();
    }
  }, WS_HEARTBEAT_MS);
  heartbeat.unref();
  // Made once, outside the upgrade handler: a closure made in it would keep each request alive with its socket.
  const onUpgradeSocketError = (error: Error): void => logger.debug({ err: error }, "upgrade socket error");
  http.on("upgrade", (req, socket, head) => {
    socket.on("error", onUpgradeSocketError);
    void open.then(() => upgrade(req, socket, head));
  });
  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    if (socket.destroyed) return;
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (path !== WORKFLOW_WS_PATH) {
      socket.end(rawErrorResponse(Errors.noWebSocketHere(path, WORKFLOW_WS_PATH)));
      return;
    }
    const refusal = shared.access.refusal(req.headers);
    if (refusal) {
      socket.end(rawErrorResponse(refusal));
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
  };
  return {
    listen: async (port, host, beforeAccepting) => {
      await app.ready();
      return new Promise((resolve, reject) => {
        http.once("error", reject);
        http.listen(port, host, () => {
          http.off("error", reject);
          beforeAccepting().then(
            () => {
              opened();
              resolve(http.address() as AddressInfo);
            },
            (error: unknown) => {
              http.close();
              http.closeAllConnections();
              reject(error);
            },
          );
        });
      });
    },
    close: async (closeCode, reason) => {
      clearInterval(heartbeat);
      const closed = app.close();
      for (const client of wss.clients) client.close(closeCode, reason);
      for (const stream of shared.sseStreams) stream.end();
      http.closeIdleConnections();
      // Sockets that do not finish the closing handshake in time are cut.
      const cut = setTimeout(() => {
        for (const client of wss.clients) client.terminate();
        http.closeAllConnections();
      }, 2000);
      await closed;
      clearTimeout(cut);
    },
  };
}
