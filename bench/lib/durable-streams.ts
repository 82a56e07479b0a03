import { stream } from "@durable-streams/client";
import { createParser } from "eventsource-parser";
import { percentile } from "./percentile.ts";

/** B17's readers, in the bench process: a Durable Streams client, and the same run through flowd's own SSE route. */

type Frame = { event: string; event_index: number; content?: unknown };

const now = (): number => performance.timeOrigin + performance.now();

/** A finished run read whole by @durable-streams/client (catch-up, live: false): events per second. */
export async function durableCatchUp(url: string, runId: string): Promise<number> {
  const started = performance.now();
  const res = await stream<Frame>({ url: `${url}/streams/runs/${runId}`, offset: "-1", live: false });
  const items = await res.json();
  return items.length / ((performance.now() - started) / 1000);
}

/** The same run through GET /runs/{id}/events (SSE) to its end: events per second. */
export async function sseCatchUp(url: string, runId: string): Promise<number> {
  const started = performance.now();
  const count = await readSse(`${url}/runs/${runId}/events?after=-1`, () => {});
  return count / ((performance.now() - started) / 1000);
}

async function readSse(url: string, onEvent: (frame: Frame) => void): Promise<number> {
  const response = await fetch(url);
  let count = 0;
  const parser = createParser({
    onEvent: (message) => {
      if (message.event === "gap") return;
      count++;
      onEvent(JSON.parse(message.data) as Frame);
    },
  });
  const decoder = new TextDecoder();
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) parser.feed(decoder.decode(chunk, { stream: true }));
  return count;
}

/** Emit → receive latencies (ms) of a `paced` run's content, as the run goes. */
function latencyOf(frame: Frame, into: number[]): void {
  if (frame.event !== "RunContent" || typeof frame.content !== "string") return;
  const { t, i } = JSON.parse(frame.content) as { t: number; i: number };
  // The first tenth of a second is left out: the reader connects while it is emitted.
  if (i >= 100) into.push(now() - t);
}

/** A `paced` run followed live by @durable-streams/client (live: sse) to its end: p50 and p99 latency. */
export async function durableTail(url: string, runId: string): Promise<{ p50: number; p99: number }> {
  const latencies: number[] = [];
  const res = await stream<Frame>({ url: `${url}/streams/runs/${runId}`, offset: "-1", live: "sse" });
  await new Promise<void>((resolve) => {
    res.subscribeJson(async (batch) => {
      for (const item of batch.items) latencyOf(item, latencies);
      if (batch.streamClosed) resolve();
    });
    void res.closed.then(() => setTimeout(resolve, 100));
  });
  return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
}

/** The same through flowd's own SSE route. */
export async function sseTail(url: string, runId: string): Promise<{ p50: number; p99: number }> {
  const latencies: number[] = [];
  await readSse(`${url}/runs/${runId}/events?after=-1`, (frame) => latencyOf(frame, latencies));
  return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
}
