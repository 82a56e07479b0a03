import type { AddressInfo, Socket } from "node:net";
import * as ws from "ws";
import { WebSocket, WebSocketServer } from "ws";
import { afterEach, describe, expect, it } from "vitest";
import { encodeTextFrame, encodeTextFrames } from "../../src/protocol/ws-frame.ts";
import { tcpSocketOf } from "../../src/transport/ws/socket-sink.ts";

// flowd writes its own complete text frames to the TCP socket under a ws connection
// (src/transport/ws/socket-sink.ts). That is right only while ws frames a server's text
// message exactly so, and writes its frames to the socket at once, in call order, without
// a queue of its own. These tests fail if an upgrade of ws changes either; `ws` is pinned
// to the minor version they passed with (package.json).

// ws's own framing (exported by ws, not described by @types/ws).
interface FrameOptions {
  fin: boolean;
  opcode: number;
  mask: boolean;
  readOnly: boolean;
  rsv1: boolean;
}
const { Sender } = ws as unknown as { Sender: { frame(data: Buffer, options: FrameOptions): Buffer[] } };

let server: WebSocketServer | null = null;
afterEach(async () => {
  await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
  server = null;
});

/** A ws server as flowd runs it (no compression) and a client connected to it. */
async function connectedPair(): Promise<{ serverSide: WebSocket; client: WebSocket; received: string[] }> {
  server = new WebSocketServer({ port: 0, host: "127.0.0.1", perMessageDeflate: false });
  await new Promise((resolve) => server!.once("listening", resolve));
  const port = (server.address() as AddressInfo).port;
  const serverSide = new Promise<WebSocket>((resolve) => server!.once("connection", resolve));
  const client = new WebSocket(`ws://127.0.0.1:${port}`);
  const received: string[] = [];
  client.on("message", (data) => received.push(data.toString()));
  await new Promise((resolve) => client.once("open", resolve));
  return { serverSide: await serverSide, client, received };
}

describe("the ws framing shortcut's assumptions about ws", () => {
  it("frames a server's text message byte for byte as ws's Sender.frame does, at every length class", () => {
    for (const length of [0, 1, 125, 126, 127, 65_535, 65_536, 200_000]) {
      const text = "x".repeat(length);
      const theirs = Buffer.concat(Sender.frame(Buffer.from(text), { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false }));
      expect(encodeTextFrame(text).equals(theirs), `a ${length}-byte message`).toBe(true);
    }
    expect(encodeTextFrames(["a", "bc"]).equals(Buffer.concat([encodeTextFrame("a"), encodeTextFrame("bc")]))).toBe(true);
  });

  it("ws writes its frames to the socket at once and in call order, so frames written beside them never interleave", async () => {
    const { serverSide, client, received } = await connectedPair();
    const tcp = tcpSocketOf(serverSide);
    serverSide.send("one");
    tcp.write(encodeTextFrame("two"));
    serverSide.send("three");
    tcp.write(encodeTextFrames(["four", "five"]));
    serverSide.send("six");
    await new Promise<void>((resolve) => {
      const check = (): void => (received.length >= 6 ? resolve() : void setTimeout(check, 5));
      check();
    });
    expect(received).toEqual(["one", "two", "three", "four", "five", "six"]);
    client.close();
  });

  it("ws queues nothing of its own: what a stalled peer has not taken is all in the socket's write buffer", async () => {
    const { serverSide, client } = await connectedPair();
    (client as unknown as { _socket: Socket })._socket.pause();
    const tcp = tcpSocketOf(serverSide);
    const payload = "y".repeat(64 * 1024);
    for (let i = 0; i < 200; i++) serverSide.send(payload);
    // Past what the kernel takes, the rest waits in the socket: ws's bufferedAmount is that, and no more.
    expect(tcp.writableLength).toBeGreaterThan(0);
    expect(serverSide.bufferedAmount).toBe(tcp.writableLength);
    client.terminate();
  });
});
