import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "../../src/client/index.ts";
import { resolveConfig } from "../../src/config.ts";
import { SseParser } from "../../src/protocol/sse.ts";
import { Step, Workflow } from "../../src/workflows/definition.ts";
import { runFlowd } from "../../testkit/server-process.ts";
import { range, startServer, waitFor, type TestServer } from "../helpers/server.ts";
import { TestClient, indicesOf } from "../helpers/ws-client.ts";

async function start(t: TestServer, workflowId: string, additionalData: Record<string, unknown> = {}): Promise<string> {
  const response = await fetch(`${t.url}/workflows/${workflowId}/runs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ background: true, additional_data: additionalData }),
  });
  expect(response.status).toBe(202);
  return ((await response.json()) as { run_id: string }).run_id;
}

async function runJson(t: TestServer, runId: string): Promise<{ status: string; pruned_at: number | null; event_count: number }> {
  return (await (await fetch(`${t.url}/runs/${runId}`)).json()) as { status: string; pruned_at: number | null; event_count: number };
}

describe("retention: finished runs' events are pruned, and reading them says so", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startServer({ settings: { retention: "1s" } });
  });
  afterAll(async () => {
    await t.close();
  });

  it("prunes a finished run past retention while another streams; every transport answers RUN_EXPIRED; running, paused and waiting runs are kept", async () => {
    const finished = await start(t, "ticker", { count: 50 });
    const paused = await start(t, "approval");
    const waiting = await start(t, "signalled");
    await waitFor("the runs to finish, pause and wait", async () => {
      const states = await Promise.all([finished, paused, waiting].map(async (id) => (await runJson(t, id)).status));
      return states.join() === "completed,paused,waiting" ? true : undefined;
    });
    // A run that streams the whole time, watched over the WebSocket.
    const { client: watcher } = await TestClient.connect(t.wsUrl);
    watcher.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 800, delayMs: 4 } });
    const streamed = watcher.untilTerminal(30_000);

    await waitFor("the finished run to be pruned", async () => {
      const run = await runJson(t, finished);
      return run.pruned_at !== null && (await t.storedIndices(finished)).length === 0 ? run : undefined;
    });
    const pruned = await runJson(t, finished);
    // The row stays: status, count of events it had, when it was pruned.
    expect(pruned).toMatchObject({ status: "completed", event_count: 54 });

    // WebSocket reconnect: an error naming the code and the run.
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "reconnect", run_id: finished, last_event_index: null });
    expect(await client.next()).toMatchObject({ event: "error", code: "RUN_EXPIRED", run_id: finished });
    await client.close();
    // HTTP: 410 with {detail, code} for SSE, JSON and the resume route.
    for (const [url, init] of [
      [`${t.url}/runs/${finished}/events`, {}],
      [`${t.url}/runs/${finished}/events?after=10`, { headers: { accept: "application/json" } }],
      [`${t.url}/workflows/ticker/runs/${finished}/resume`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ last_event_index: 3 }) }],
    ] as const) {
      const response = await fetch(url, init);
      expect(response.status, url).toBe(410);
      const body = (await response.json()) as { code: string; detail: string };
      expect(body.code).toBe("RUN_EXPIRED");
      expect(body.detail).toContain(`GET /runs/${finished}`);
    }
    // flowd/client: the watch ends with the error, typed.
    const watch = createClient({ url: t.url }).watch(finished);
    await expect((async () => {
      for await (const _ of watch) {
        // Nothing comes.
      }
    })()).rejects.toMatchObject({ name: "FlowdError", code: "RUN_EXPIRED" });
    // The CLI, reading the file: a clear message, exit 1.
    const cli = runFlowd(["runs", "events", finished, "--db", t.dbPath]);
    expect(await cli.exited).toBe(1);
    expect(cli.output()).toContain("RUN_EXPIRED");
    expect(cli.output()).toContain("no longer kept");

    // The streaming run: untouched and gapless; the runs that wait keep everything.
    const frames = await streamed;
    expect(indicesOf(frames.filter((f) => typeof f.event_index === "number"))).toEqual(range(804));
    await watcher.close();
    for (const id of [paused, waiting]) {
      const run = await runJson(t, id);
      expect(run.pruned_at, id).toBeNull();
      expect(await t.storedIndices(id)).toEqual(range(run.event_count));
    }
  });

  it("DELETE /runs/{id} deletes a finished run whole; a running one is 409, an unknown one 404", async () => {
    const done = await start(t, "ticker", { count: 3 });
    const running = await start(t, "ticker", { count: 100_000, delayMs: 50 });
    await waitFor("the short run to finish", async () => ((await runJson(t, done)).status === "completed" ? true : undefined));
    const refused = await fetch(`${t.url}/runs/${running}`, { method: "DELETE" });
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { code: string; detail: string }).detail).toMatch(/is running: only a finished run .* can be deleted/);
    const unknown = await fetch(`${t.url}/runs/no-such-run`, { method: "DELETE" });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { code: string }).code).toBe("RUN_NOT_FOUND");

    const cli = runFlowd(["runs", "delete", done, "--url", t.url]);
    expect(await cli.exited).toBe(0);
    expect(cli.output()).toContain(`Deleted run ${done}`);
    expect((await fetch(`${t.url}/runs/${done}`)).status).toBe(404);
    expect(await t.storedIndices(done)).toEqual([]);
    await fetch(`${t.url}/workflows/ticker/runs/${running}/cancel`, { method: "POST" });
  });
});

describe("pruning on request", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startServer();
  });
  afterAll(async () => {
    await t.close();
  });

  it("POST /runs/prune and flowd prune: bad durations refused clearly, a dry run deletes nothing, a prune keeps other workflows' runs", async () => {
    for (const older_than of ["-1d", "7 days", "", "1y", "0s"]) {
      const response = await fetch(`${t.url}/runs/prune`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ older_than }) });
      expect(response.status, older_than).toBe(422);
      expect(((await response.json()) as { detail: string }).detail, older_than).toMatch(/older_than: must be a duration such as 90s/);
    }
    // No retention set and no older_than: nothing says what to prune.
    const nothing = await fetch(`${t.url}/runs/prune`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(nothing.status).toBe(422);

    const tickers = [await start(t, "ticker", { count: 5 }), await start(t, "ticker", { count: 5 })];
    const other = await start(t, "steps-flow");
    await waitFor("the runs to finish", async () => {
      const states = await Promise.all([...tickers, other].map(async (id) => (await runJson(t, id)).status));
      return states.every((status) => status === "completed") ? true : undefined;
    });
    await sleep(20);

    const dry = runFlowd(["prune", "--older-than", "10ms", "--workflow", "ticker", "--dry-run", "--url", t.url]);
    expect(await dry.exited).toBe(0);
    expect(dry.output()).toContain("Would prune 2 runs, 18 events.");
    for (const id of tickers) expect((await runJson(t, id)).pruned_at).toBeNull();

    const bad = runFlowd(["prune", "--older-than", "a while", "--url", t.url]);
    expect(await bad.exited).toBe(1);
    expect(bad.output()).toContain('--older-than must be a duration such as 90s');

    const real = runFlowd(["prune", "--older-than", "10ms", "--workflow", "ticker", "--url", t.url]);
    expect(await real.exited).toBe(0);
    expect(real.output()).toContain("Pruned 2 runs, 18 events.");
    for (const id of tickers) {
      expect((await runJson(t, id)).pruned_at).not.toBeNull();
      expect(await t.storedIndices(id)).toEqual([]);
    }
    expect((await runJson(t, other)).pruned_at).toBeNull();
  });

  it("refuses a bad FLOWD_RETENTION, FLOWD_COMPACT_AFTER and a workflow's bad retention, saying what a duration looks like", () => {
    expect(() => resolveConfig({}, { FLOWD_RETENTION: "forever" })).toThrow(/FLOWD_RETENTION must be a duration such as 90s, 30m, 24h or 7d/);
    expect(() => resolveConfig({}, { FLOWD_COMPACT_AFTER: "-1h" })).toThrow(/FLOWD_COMPACT_AFTER must be a duration/);
    expect(() => Workflow({ id: "w", retention: "-3d", steps: [Step({ name: "s", executor: () => 1 })] })).toThrow(/"retention" must be a duration/);
    expect(Workflow({ id: "w", retention: "7d", steps: [Step({ name: "s", executor: () => 1 })] }).retentionMs).toBe(7 * 24 * 3600 * 1000);
  });
});

describe("compaction (FLOWD_COMPACT_AFTER)", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startServer({ settings: { compactAfter: "1ms" } });
  });
  afterAll(async () => {
    await t.close();
  });

  it("folds a finished run's deltas into one RunContentCompacted event; every reader gets it and a gap notice for the indices gone; other indices unchanged", async () => {
    // More deltas than a compaction step reads: the fold is extended over several transactions.
    const chunks = Array.from({ length: 600 }, (_, i) => `part ${i} "q" ✓\n`);
    const runId = await start(t, "verbatim", { chunks });
    const last = chunks.length + 3;
    await waitFor("the run to be compacted", async () => ((await t.storedIndices(runId)).length === 5 ? true : undefined));
    expect(await t.storedIndices(runId)).toEqual([0, 1, 2, last - 1, last]);
    const gap = { event: "gap", run_id: runId, from_index: 3, to_index: chunks.length + 1, reason: "compacted", compacted_into: 2 };

    // WebSocket replay.
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "reconnect", run_id: runId, last_event_index: null });
    const frames = (await client.untilTerminal()).filter((f) => f.event !== "replay");
    await client.close();
    expect(frames.map((f) => (f.event === "gap" ? "gap" : f.event_index))).toEqual([0, 1, 2, "gap", last - 1, last]);
    expect(frames[2]).toMatchObject({ event: "RunContentCompacted", content: chunks.join(""), compacted_to_index: chunks.length + 1, step_name: "say" });
    expect(frames[3]).toEqual(gap);
    // SSE: the notice is `event: gap`, with the index to resume after.
    const sse = new SseParser().push(await (await fetch(`${t.url}/runs/${runId}/events`)).text());
    expect(sse.map((m) => [m.id, m.event])).toEqual([["0", "WorkflowStarted"], ["1", "StepStarted"], ["2", "RunContentCompacted"], [String(chunks.length + 1), "gap"], [String(last - 1), "StepCompleted"], [String(last), "WorkflowCompleted"]]);
    // JSON: the gaps in a field of their own.
    const page = (await (await fetch(`${t.url}/runs/${runId}/events?after=1`, { headers: { accept: "application/json" } })).json()) as { events: { event_index: number }[]; gaps: unknown[] };
    expect(page.events.map((e) => e.event_index)).toEqual([2, last - 1, last]);
    expect(page.gaps).toEqual([gap]);
    // A reader that stopped inside the fold: told where the text of what it misses now is.
    const inside = (await (await fetch(`${t.url}/runs/${runId}/events?after=5`, { headers: { accept: "application/json" } })).json()) as { events: { event_index: number }[]; gaps: unknown[] };
    expect(inside.events.map((e) => e.event_index)).toEqual([last - 1, last]);
    expect(inside.gaps).toEqual([{ ...gap, from_index: 6 }]);
    // flowd/client: the events, and the gaps it was told of.
    const watch = createClient({ url: t.url }).watch(runId);
    const seen: number[] = [];
    for await (const event of watch) seen.push(event.event_index);
    expect(seen).toEqual([0, 1, 2, last - 1, last]);
    expect(watch.gaps).toEqual([{ from_index: 3, to_index: chunks.length + 1, compacted_into: 2 }]);
    // The CLI, reading the file or the database.
    const cli = runFlowd(["runs", "events", runId, "--db", t.dbPath]);
    expect(await cli.exited).toBe(0);
    expect(cli.output()).toContain(`gap: indices 3–${chunks.length + 1} no longer exist`);
    expect(cli.output()).toContain("RunContentCompacted [say]");
    // The output is the deltas joined, as it was.
    expect((await runJson(t, runId)) as unknown).toMatchObject({ status: "completed", event_count: last + 1 });
    expect(((await (await fetch(`${t.url}/runs/${runId}`)).json()) as { content: string }).content).toBe(chunks.join(""));
  });
});
