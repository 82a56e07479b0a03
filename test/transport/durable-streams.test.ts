import { join } from "node:path";
import { stream } from "@durable-streams/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT, startServerProcess } from "../../testkit/server-process.ts";
import { freshDatabaseEachTest, range, startServer, waitFor, type TestServer } from "../helpers/server.ts";

/** Runs as Durable Streams (issue 22): the real @durable-streams/client follows them, and the protocol's read rules hold. */

type Frame = { event: string; event_index: number };
type Live = "sse" | "long-poll" | false;

/** One leg of a reader: from `offset`, until `stopAfter` events (then it aborts, keeping the offset after its last whole batch) or the stream's end. */
async function leg(url: string, offset: string, live: Live, stopAfter = Number.POSITIVE_INFINITY): Promise<{ items: Frame[]; offset: string; closed: boolean }> {
  const controller = new AbortController();
  const res = await stream<Frame>({ url, offset, live, signal: controller.signal });
  const items: Frame[] = [];
  let saved = offset;
  let closed = false;
  await new Promise<void>((resolve) => {
    res.subscribeJson(async (batch) => {
      if (controller.signal.aborted) return;
      items.push(...batch.items);
      saved = batch.offset;
      if (batch.streamClosed) {
        closed = true;
        resolve();
      }
      if (items.length >= stopAfter) {
        controller.abort();
        resolve();
      }
    });
    // The end of a catch-up, or a stream closed: its last batch comes with (or just after) this.
    res.closed.then(
      () => setTimeout(resolve, 100),
      () => resolve(),
    );
  });
  return { items, offset: saved, closed };
}

function expectWholeRun(items: Frame[], total: number): void {
  expect(items.map((item) => item.event_index)).toEqual(range(total));
  expect(items.at(-1)!.event).toBe("WorkflowCompleted");
}

describe("a run followed as a Durable Stream by @durable-streams/client", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startServer();
  });
  afterAll(async () => {
    await t.close();
  });

  const start = async (count: number, delayMs: number): Promise<string> =>
    ((await (await fetch(`${t.url}/workflows/ticker/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ background: true, additional_data: { count, delayMs } }) })).json()) as { run_id: string }).run_id;

  for (const live of ["sse", "long-poll"] as const) {
    it(`live (${live}): follows the run, stops, resumes from its saved offset, and gets every index once, in order, ending closed`, async () => {
      const runId = await start(300, 4);
      const url = `${t.url}/streams/runs/${runId}`;
      const first = await leg(url, "-1", live, 60);
      expect(first.items.length).toBeGreaterThanOrEqual(60);
      expect(first.closed).toBe(false);
      const second = await leg(url, first.offset, live);
      expect(second.closed).toBe(true);
      expectWholeRun([...first.items, ...second.items], 304);
    });
  }

  it("catch-up (live: false): what there is at each read, and the rest from the saved offset once the run is over", async () => {
    const runId = await start(300, 4);
    const url = `${t.url}/streams/runs/${runId}`;
    await waitFor("some events", async () => ((await t.storedIndices(runId)).length > 50 ? true : undefined));
    const first = await leg(url, "-1", false);
    expect(first.closed).toBe(false);
    expect(first.items.length).toBeGreaterThan(50);
    await waitFor("the run to end", async () => ((await t.storedIndices(runId)).length === 304 ? true : undefined), 20_000);
    const second = await leg(url, first.offset, false);
    expect(second.closed).toBe(true);
    expectWholeRun([...first.items, ...second.items], 304);
  });
});

describe("the protocol's read rules", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startServer();
  });
  afterAll(async () => {
    await t.close();
  });

  it("offsets, HEAD, up-to-date and closed headers, 404, 405 and 410", async () => {
    const runId = ((await (await fetch(`${t.url}/workflows/ticker/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ stream: false, additional_data: { count: 6 } }) })).json()) as { run_id: string }).run_id;
    const url = `${t.url}/streams/runs/${runId}`;
    // The whole run: a JSON array of the stored frames, the offset after the last, up to date and closed.
    const whole = await fetch(`${url}?offset=-1`);
    expect(whole.status).toBe(200);
    expect(whole.headers.get("content-type")).toContain("application/json");
    expect(whole.headers.get("stream-next-offset")).toBe("0000000000000010");
    expect(whole.headers.has("stream-up-to-date")).toBe(true);
    expect(whole.headers.get("stream-closed")).toBe("true");
    const frames = (await whole.json()) as Frame[];
    expect(frames.map((frame) => frame.event_index)).toEqual(range(10));
    // offset N is what ?after=N-1 is in flowd's own routes; offsets sort as strings.
    const tail = (await (await fetch(`${url}?offset=0000000000000007`)).json()) as Frame[];
    expect(tail.map((frame) => frame.event_index)).toEqual([7, 8, 9]);
    const own = (await (await fetch(`${t.url}/runs/${runId}/events?after=6`, { headers: { accept: "application/json" } })).json()) as { events: Frame[] };
    expect(own.events).toEqual(tail);
    // At the end of a finished run: nothing, closed, at once (also for a long-poll).
    const atEnd = await fetch(`${url}?offset=0000000000000010&live=long-poll`);
    expect([atEnd.status, await atEnd.text(), atEnd.headers.get("stream-closed")]).toEqual([200, "[]", "true"]);
    // HEAD: the headers, no body.
    const head = await fetch(url, { method: "HEAD" });
    expect([head.status, head.headers.get("stream-next-offset"), head.headers.get("stream-closed")]).toEqual([200, "0000000000000010", "true"]);
    // Bad offsets and modes: 400, saying what an offset is.
    for (const bad of ["abc", "12", "0000000000000099", "-2"]) {
      const answer = await fetch(`${url}?offset=${bad}`);
      expect(answer.status, bad).toBe(400);
      expect(((await answer.json()) as { detail: string }).detail).toMatch(/offset/);
    }
    expect((await fetch(`${url}?live=websocket`)).status).toBe(400);
    // An unknown run: 404.
    expect((await fetch(`${t.url}/streams/runs/no-such-run?offset=-1`)).status).toBe(404);
    // Writes: 405, with Allow.
    for (const method of ["PUT", "POST", "DELETE"]) {
      const refused = await fetch(url, method === "DELETE" ? { method } : { method, headers: { "content-type": "application/json" }, body: "[]" });
      expect(refused.status, method).toBe(405);
      expect(refused.headers.get("allow")).toBe("GET, HEAD");
      expect(((await refused.json()) as { code: string; detail: string })).toMatchObject({ code: "METHOD_NOT_ALLOWED" });
    }
    // A run still going: up to date at its end, not closed; a long-poll there waits for the next events.
    const going = ((await (await fetch(`${t.url}/workflows/signalled/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ background: true }) })).json()) as { run_id: string }).run_id;
    await waitFor("it to wait", async () => ((await t.query<{ status: string }>("SELECT status FROM runs WHERE run_id = ?", going))[0]?.status === "waiting" ? true : undefined));
    const open = await fetch(`${t.url}/streams/runs/${going}?offset=-1`);
    expect(open.headers.has("stream-up-to-date")).toBe(true);
    expect(open.headers.get("stream-closed")).toBeNull();
    const next = open.headers.get("stream-next-offset")!;
    await open.text();
    const polled = fetch(`${t.url}/streams/runs/${going}?offset=${next}&live=long-poll`);
    await fetch(`${t.url}/runs/${going}/signals/approved`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ by: "test" }) });
    const woken = await polled;
    expect(woken.status).toBe(200);
    // A live answer's cursor moves past the one the client sent.
    const cursor = woken.headers.get("stream-cursor")!;
    expect(cursor).toMatch(/^\d+$/);
    expect(((await woken.json()) as Frame[])[0]!.event_index).toBe(Number(next));
    // Pruned: 410 Gone.
    expect((await fetch(`${t.url}/runs/prune`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ older_than: "1ms", workflow_id: "ticker" }) })).status).toBe(200);
    const gone = await fetch(`${url}?offset=-1`);
    expect(gone.status).toBe(410);
    expect(((await gone.json()) as { code: string }).code).toBe("RUN_EXPIRED");
  });
});

describe("across a SIGKILL of the server", () => {
  const files = freshDatabaseEachTest();
  const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

  for (const live of ["sse", "long-poll"] as const) {
    it(`(${live}) the second leg, from the saved offset on the restarted server, completes the run exactly once`, async () => {
      const first = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
      let saved: Awaited<ReturnType<typeof leg>>;
      let runId = "";
      try {
        runId = ((await (await fetch(`${first.url}/workflows/ticker/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ background: true, additional_data: { count: 400, delayMs: 5 } }) })).json()) as { run_id: string }).run_id;
        saved = await leg(`${first.url}/streams/runs/${runId}`, "-1", live, 80);
      } finally {
        first.child.kill("SIGKILL");
        await first.exited;
      }
      const second = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
      try {
        const rest = await leg(`${second.url}/streams/runs/${runId}`, saved.offset, live);
        expect(rest.closed).toBe(true);
        const all = [...saved.items, ...rest.items];
        expect(all.map((item) => item.event_index)).toEqual(range(all.length));
        expect(all.at(-1)!.event).toBe("WorkflowCompleted");
      } finally {
        await second.stop();
      }
    }, 60_000);
  }

  it("(catch-up) what there was before the SIGKILL, then the rest from the saved offset once the restarted server has finished the run", async () => {
    const first = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
    let saved: Awaited<ReturnType<typeof leg>>;
    let runId = "";
    try {
      runId = ((await (await fetch(`${first.url}/workflows/ticker/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ background: true, additional_data: { count: 400, delayMs: 5 } }) })).json()) as { run_id: string }).run_id;
      await waitFor("some events", async () => {
        const head = await fetch(`${first.url}/streams/runs/${runId}`, { method: "HEAD" });
        return Number(head.headers.get("stream-next-offset")) > 50 ? true : undefined;
      });
      saved = await leg(`${first.url}/streams/runs/${runId}`, "-1", false);
      expect(saved.closed).toBe(false);
    } finally {
      first.child.kill("SIGKILL");
      await first.exited;
    }
    const second = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
    try {
      await waitFor("the resumed run to end", async () => ((await fetch(`${second.url}/streams/runs/${runId}`, { method: "HEAD" })).headers.get("stream-closed") === "true" ? true : undefined), 30_000);
      const rest = await leg(`${second.url}/streams/runs/${runId}`, saved.offset, false);
      expect(rest.closed).toBe(true);
      const all = [...saved.items, ...rest.items];
      expect(all.map((item) => item.event_index)).toEqual(range(all.length));
      expect(all.at(-1)!.event).toBe("WorkflowCompleted");
    } finally {
      await second.stop();
    }
  }, 60_000);
});
