import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { WebSocketServer, type WebSocket } from "ws";
import type { Engine } from "../engine/engine.ts";
import type { EventLog } from "../store/event-log.ts";
import type { RunStore } from "../store/run-store.ts";
import type { WorkflowRegistry } from "../workflows/registry.ts";
import { createHttpApp } from "./http/app.ts";
import type { SseStreams } from "./http/sse-stream.ts";
import type { FeedOptions } from "./run-feed.ts";
import { WorkflowSocket } from "./ws/workflow-socket.ts";

/** The WebSocket path of the AgentOS workflow protocol. */
export const WORKFLOW_WS_PATH = "/workflows/ws";

/** Largest WebSocket frame accepted; a bigger one closes the socket with 1009 (message too big). */
export const MAX_FRAME_BYTES = 1024 * 1024;

/** Interval of WebSocket pings; a peer silent for two of them is terminated. */
export const WS_HEARTBEAT_MS = 30_000;

/** What the transports need. */
export interface TransportDeps {
  engine: Engine;
  runStore: RunStore;
  eventLog: EventLog;
  workflows: WorkflowRegistry;
  securityKey: string | null;
  logger: Logger;
  /** How subscribers are fed (page size, stall timeout, high-water mark). */
  feed: FeedOptions & { highWaterBytes: number };
}

/** HTTP and WebSocket on one port. */
export interface Transport {
  /**
   * Binds the port and runs `beforeAccepting` synchronously before any connection is
   * served (connections wait in the listen backlog meanwhile).
   */
  listen(port: number, host: string, beforeAccepting: () => void): Promise<AddressInfo>;
  /** Stops accepting, closes every socket with `closeCode`, ends SSE streams, and waits for the listener to close. */
  close(closeCode: number, reason: string): Promise<void>;
}

/** Builds the HTTP API with the workflow WebSocket on the same port. */
export function createTransport(deps: TransportDeps): Transport {
  const sseStreams: SseStreams = new Set();
  const app = createHttpApp({ ...deps, sseStreams });
  const http = app.server;
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false });
  // Heartbeat: a peer that has not answered the previous ping by the next one is gone (half-open TCP).
  const alive = new WeakSet<WebSocket>();
  wss.on("connection", (socket) => {
    alive.add(socket);
    socket.on("pong", () => alive.add(socket));
    new WorkflowSocket(socket, deps);
  });
  const heartbeat = setInterval(() => {
    for (const socket of wss.clients) {
      if (!alive.has(socket)) {
        socket.terminate();
        continue;
      }
      alive.delete(socket);
      socket.ping();
    }
  }, WS_HEARTBEAT_MS);
  heartbeat.unref();
  http.on("upgrade", (req, socket, head) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (path !== WORKFLOW_WS_PATH) {
      socket.end(`HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\nNo WebSocket at ${path}; use ${WORKFLOW_WS_PATH}.\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
  });
  return {
    listen: async (port, host, beforeAccepting) => {
      await app.ready();
      return new Promise((resolve, reject) => {
        http.once("error", reject);
        http.listen(port, host, () => {
          http.off("error", reject);
          try {
            beforeAccepting();
          } catch (error) {
            http.close();
            reject(error);
            return;
          }
          resolve(http.address() as AddressInfo);
        });
      });
    },
    close: async (closeCode, reason) => {
      clearInterval(heartbeat);
      const closed = app.close();
      for (const client of wss.clients) client.close(closeCode, reason);
      for (const stream of sseStreams) stream.end();
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
