import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ON_POSTGRES, range, startServer, waitFor, type TestServer } from "../helpers/server.ts";
import { TestClient, indicesOf, isTerminal, type Frame } from "../helpers/ws-client.ts";

let t: TestServer;
beforeEach(async () => {
  t = await startServer();
});
afterEach(async () => {
  await t.close();
});

async function startRun(client: TestClient, workflowId: string, extra: Record<string, unknown> = {}): Promise<Frame> {
  client.send({ action: "start-workflow", workflow_id: workflowId, message: "hello", session_id: "s-1", ...extra });
  const first = await client.next();
  expect(first.event).toBe("WorkflowStarted");
  return first;
}

describe("the seed scenario: start, disconnect, reconnect, catch up", () => {
  it("delivers every index exactly once, in order, across the disconnect, ending with WorkflowCompleted", async () => {
    const { client: first } = await TestClient.connect(t.wsUrl);
    first.send({
      action: "start-workflow",
      workflow_id: "content-creation-workflow",
      message: "Research and create content plan for AI agents",
      session_id: "test-session-123",
    });
    const initial = await first.take(20);
    expect(initial.map((f) => f.event_index)).toEqual(range(20));
    const runId = initial[0]?.run_id as string;
    expect(initial.every((f) => f.run_id === runId && f.session_id === "test-session-123")).toBe(true);
    await first.close();

    await new Promise((resolve) => setTimeout(resolve, 300)); // the user leaves the page; the run goes on

    const { client: second } = await TestClient.connect(t.wsUrl);
    second.send({ action: "reconnect", run_id: runId, last_event_index: 19, session_id: "test-session-123" });
    const catchUp = await second.next();
    expect(catchUp).toMatchObject({ event: "catch_up", run_id: runId, status: "running" });
    const missed = catchUp.missed_events as number;
    expect(missed).toBeGreaterThan(0);
    expect(catchUp.current_event_count).toBe(20 + missed);

    const missedFrames = await second.take(missed);
    expect(indicesOf(missedFrames)).toEqual(range(missed).map((i) => 20 + i));
    const subscribed = await second.next();
    expect(subscribed).toMatchObject({ event: "subscribed", run_id: runId, current_event_count: 20 + missed });

    const live = await second.untilTerminal();
    expect(live.at(-1)?.event).toBe("WorkflowCompleted");
    const all = [...indicesOf(initial), ...indicesOf(missedFrames), ...indicesOf(live)];
    expect(all).toEqual(range(all.length));
    expect(await t.storedIndices(runId)).toEqual(all);
    await second.close();
  });
});

describe("reconnect", () => {
  it("with last_event_index null to a running run sends everything from index 0, then live events", async () => {
    const { client: starter } = await TestClient.connect(t.wsUrl);
    const started = await startRun(starter, "ticker", { additional_data: { count: 60, delayMs: 5 } });
    await starter.take(10);
    await starter.close();

    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "reconnect", run_id: started.run_id, last_event_index: null });
    const catchUp = await client.next();
    expect(catchUp.event).toBe("catch_up");
    const missed = catchUp.missed_events as number;
    expect(missed).toBe(catchUp.current_event_count);
    const backlog = await client.take(missed);
    expect(indicesOf(backlog)).toEqual(range(missed));
    expect((await client.next()).event).toBe("subscribed");
    const live = await client.untilTerminal();
    expect(indicesOf(live)).toEqual(range(live.length).map((i) => missed + i));
    await client.close();
  });

  it("to a run that has nothing new sends only subscribed, then live events", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    const started = await startRun(client, "ticker", { additional_data: { count: 5, delayMs: 300 } });
    expect((await client.next()).event).toBe("StepStarted");
    const { client: watcher } = await TestClient.connect(t.wsUrl);
    watcher.send({ action: "reconnect", run_id: started.run_id, last_event_index: 1 });
    const subscribed = await watcher.next();
    expect(subscribed).toMatchObject({ event: "subscribed", status: "running", current_event_count: 2 });
    const live = await watcher.untilTerminal();
    expect(indicesOf(live)).toEqual([2, 3, 4, 5, 6, 7, 8]);
    await client.close();
    await watcher.close();
  });

  it("to a finished run replays all N events from index 0, whatever last_event_index says", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    const started = await startRun(client, "ticker", { additional_data: { count: 8 } });
    const rest = await client.untilTerminal();
    const total = 1 + rest.length;

    client.send({ action: "reconnect", run_id: started.run_id, last_event_index: 5 });
    const replay = await client.next();
    expect(replay).toMatchObject({ event: "replay", run_id: started.run_id, status: "completed", total_events: total });
    const frames = await client.take(total);
    expect(indicesOf(frames)).toEqual(range(total));
    expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
    // A replay is exact: the same frames the live client saw.
    expect(frames).toEqual([started, ...rest]);
    await client.close();
  });

  it("from two sockets at once gives both the identical sequence", async () => {
    const { client: starter } = await TestClient.connect(t.wsUrl);
    const started = await startRun(starter, "ticker", { additional_data: { count: 80, delayMs: 2 } });
    await starter.take(15);
    const [a, b] = await Promise.all([TestClient.connect(t.wsUrl), TestClient.connect(t.wsUrl)]);
    a.client.send({ action: "reconnect", run_id: started.run_id, last_event_index: 3 });
    b.client.send({ action: "reconnect", run_id: started.run_id, last_event_index: 3 });
    const [framesA, framesB] = await Promise.all([a.client.untilTerminal(), b.client.untilTerminal()]);
    const runEvents = (frames: Frame[]) => frames.filter((f) => typeof f.event_index === "number");
    expect(runEvents(framesA)).toEqual(runEvents(framesB));
    expect(indicesOf(framesA)).toEqual(range(indicesOf(framesA).length).map((i) => 4 + i));
    await Promise.all([starter.close(), a.client.close(), b.client.close()]);
  });

  it("to an unknown run answers an error naming the run, and the socket stays usable", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    const error = await client.request({ action: "reconnect", run_id: "no-such-run", last_event_index: 3 });
    expect(error).toMatchObject({ event: "error", error: "Run no-such-run not found", code: "RUN_NOT_FOUND" });
    expect(await client.request({ action: "ping" })).toEqual({ event: "pong" });
    await client.close();
  });
});

describe("runs belong to the server", () => {
  it("a run whose only client disconnects at once still finishes, with every event stored (I4)", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    const started = await startRun(client, "ticker", { additional_data: { count: 40, delayMs: 2 } });
    await client.close();
    const status = await waitFor("the run to finish", async () => {
      const [row] = await t.query<{ status: string }>("SELECT status FROM runs WHERE run_id = ?", started.run_id);
      return row!.status === "running" ? undefined : row!.status;
    });
    expect(status).toBe("completed");
    // WorkflowStarted, StepStarted, 40 × RunContent, StepCompleted, WorkflowCompleted
    expect(await t.storedIndices(started.run_id as string)).toEqual(range(44));
  });

  it("one socket can run and watch several runs at once, each in its own order", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 30, delayMs: 1 } });
    client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 30, delayMs: 1 } });
    const byRun = new Map<string, Frame[]>();
    let finished = 0;
    while (finished < 2) {
      const frame = await client.next();
      const list = byRun.get(frame.run_id as string) ?? [];
      list.push(frame);
      byRun.set(frame.run_id as string, list);
      if (isTerminal(frame)) finished += 1;
    }
    expect(byRun.size).toBe(2);
    for (const frames of byRun.values()) expect(indicesOf(frames)).toEqual(range(34));
    await client.close();
  });
});

describe("appends racing with reconnects (I3)", () => {
  it("never shows a gap or a duplicate at the catch-up to live handoff", async () => {
    const { client: starter } = await TestClient.connect(t.wsUrl);
    const count = 1500;
    // On PostgreSQL a reconnect takes round trips: the run appends a little slower, so that many reconnects race with it.
    const started = await startRun(starter, "ticker", { additional_data: { count, delayMs: ON_POSTGRES ? 1 : 0 } });
    const runId = started.run_id as string;
    let last = 0;
    let reconnects = 0;
    // Reconnect over and over while the run appends one event per event-loop turn.
    for (;;) {
      const { client } = await TestClient.connect(t.wsUrl);
      client.send({ action: "reconnect", run_id: runId, last_event_index: last });
      const first = await client.next();
      if (first.event === "replay") {
        await client.close();
        break;
      }
      reconnects += 1;
      const take = 5 + (reconnects % 37);
      // Events may come before the catch_up or subscribed notice (the run appends meanwhile).
      const seen: number[] = typeof first.event_index === "number" ? [first.event_index] : [];
      while (seen.length < take) {
        const frame = await client.next();
        if (typeof frame.event_index === "number") seen.push(frame.event_index);
        if (isTerminal(frame)) break;
      }
      expect(seen).toEqual(range(seen.length).map((i) => last + 1 + i));
      last = seen.at(-1) ?? last;
      await client.close();
    }
    expect(reconnects).toBeGreaterThan(10);
    expect(await t.storedIndices(runId)).toEqual(range(count + 4));
    await starter.close();
  });
});
