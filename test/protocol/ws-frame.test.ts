import * as ws from "ws";
import { describe, expect, it } from "vitest";
import { encodeTextFrame, encodeTextFrames } from "../../src/protocol/ws-frame.ts";

// ws's frame parser (exported by ws, not described by @types/ws).
interface FrameReceiver {
  on(event: "message", listener: (data: Buffer, isBinary: boolean) => void): void;
  on(event: "error", listener: (error: Error) => void): void;
  write(chunk: Buffer): void;
}
const { Receiver } = ws as unknown as { Receiver: new (options: { isServer: boolean }) => FrameReceiver };

/** Parses frames with ws's own client-side receiver: what every ws client does with our bytes. */
function decode(frames: Buffer[]): string[] {
  const messages: string[] = [];
  const receiver = new Receiver({ isServer: false });
  receiver.on("message", (data, isBinary) => {
    expect(isBinary).toBe(false);
    messages.push(data.toString("utf8"));
  });
  receiver.on("error", (error) => {
    throw error;
  });
  for (const frame of frames) receiver.write(frame);
  return messages;
}

describe("encodeTextFrame", () => {
  it("frames text of every length class so a WebSocket client reads it back unchanged", () => {
    // 7-bit, 16-bit and 64-bit payload lengths, at and around each boundary.
    const texts = [0, 1, 125, 126, 127, 65_535, 65_536, 200_000].map((n) => "x".repeat(n));
    expect(decode(texts.map(encodeTextFrame))).toEqual(texts);
  });

  it("counts UTF-8 bytes, not characters, in the length", () => {
    const text = JSON.stringify({ content: "héllo ✓ 🎉".repeat(20) });
    expect(Buffer.byteLength(text)).toBeGreaterThan(text.length);
    expect(decode([encodeTextFrame(text)])).toEqual([text]);
  });

  it("puts a page of frames back to back in one buffer, each read back apart, whatever its length class", () => {
    const texts = Array.from({ length: 50 }, (_, i) => `{"event_index":${i},"content":"${"é".repeat(i * 40)}"}`);
    texts.push("y".repeat(70_000));
    const page = encodeTextFrames(texts);
    expect(page.length).toBe(texts.reduce((sum, text) => sum + encodeTextFrame(text).length, 0));
    expect(decode([page])).toEqual(texts);
  });
});
