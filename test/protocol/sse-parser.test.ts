import { describe, expect, it } from "vitest";
import { SseParser, encodeSseEvent } from "../../src/protocol/sse.ts";

describe("the SSE parser", () => {
  it("reads what the server encodes, even split at every character", () => {
    const stream = encodeSseEvent(0, "WorkflowStarted", '{"a":1}') + ": keep-alive\n\n" + encodeSseEvent(1, "RunContent", '{"b":"x\\ny"}');
    const parser = new SseParser();
    const messages = [...stream].flatMap((char) => parser.push(char));
    expect(messages).toEqual([
      { id: "0", event: "WorkflowStarted", data: '{"a":1}' },
      { id: "1", event: "RunContent", data: '{"b":"x\\ny"}' },
    ]);
    expect(parser.lastEventId).toBe("1");
  });

  it("handles CRLF and CR line ends, multi-line data, and defaults the event name", () => {
    const parser = new SseParser();
    expect(parser.push("data: one\r\ndata: two\r\n\r\nid: 7\rdata:three\r\r\n")).toEqual([
      { id: null, event: "message", data: "one\ntwo" },
      { id: "7", event: "message", data: "three" },
    ]);
  });

  it("waits for the rest of a CRLF split across chunks", () => {
    const parser = new SseParser();
    expect(parser.push("data: a\r")).toEqual([]);
    expect(parser.push("\n\r\n")).toEqual([{ id: null, event: "message", data: "a" }]);
  });
});
