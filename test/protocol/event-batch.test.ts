import { describe, expect, it } from "vitest";
import { CommittedEvent, EventBatch } from "../../src/protocol/run-events.ts";
import { SseParser } from "../../src/protocol/sse.ts";
import { encodeTextFrame } from "../../src/protocol/ws-frame.ts";

const events = [
  new CommittedEvent("r", 0, "WorkflowStarted", '{"event":"WorkflowStarted","event_index":0}'),
  new CommittedEvent("r", 1, "RunContent", '{"event":"RunContent","content":"héllo ✓","event_index":1}'),
  new CommittedEvent("r", 2, "WorkflowCompleted", '{"event":"WorkflowCompleted","event_index":2}'),
];

describe("EventBatch", () => {
  it("encodes its WebSocket frames once, back to back, as each event's own frame", () => {
    const batch = new EventBatch(events);
    expect(batch.wsFrames()).toEqual(Buffer.concat(events.map((event) => encodeTextFrame(event.frame))));
    // Encoded once: every subscriber writes the same buffer.
    expect(batch.wsFrames()).toBe(batch.wsFrames());
  });

  it("encodes its SSE messages with id and event, which a client parses back", () => {
    const messages = new SseParser().push(new EventBatch(events).sseBytes().toString());
    expect(messages).toEqual(events.map((event) => ({ id: String(event.index), event: event.event, data: event.frame })));
  });

  it("knows whether it holds the run's end, and filters to a new batch only when it must", () => {
    const batch = new EventBatch(events);
    expect(batch.endsRun).toBe(true);
    expect(batch.last.index).toBe(2);
    expect(new EventBatch(events.slice(0, 2)).endsRun).toBe(false);
    expect(batch.filter(() => true)).toBe(batch);
    expect(batch.filter(() => false)).toBeNull();
    expect(batch.filter((event) => event.index > 0)?.events.map((event) => event.index)).toEqual([1, 2]);
  });
});
