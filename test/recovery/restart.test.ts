import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { freshDatabaseEachTest, range, storedIndices, waitFor } from "../helpers/server.ts";
import { REPO_ROOT, runFlowd, startServerProcess } from "../../testkit/server-process.ts";
import { SseParser } from "../../src/protocol/sse.ts";
import { TestClient, indicesOf } from "../helpers/ws-client.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

const files = freshDatabaseEachTest();

function serverArgs(): string[] {
  return ["--workflows", FIXTURES, "--db", files.db];
}

function runRow(runId: string): Record<string, unknown> {
  const reader = new Database(files.db, { readonly: true });
  try {
    return reader.prepare("SELECT * FROM runs WHERE run_id = ?").get(runId) as Record<string, unknown>;
  } finally {
    reader.close();
  }
}

function storedEvents(runId: string): { event: string; payload: Record<string, unknown> }[] {
  const reader = new Database(files.db, { readonly: true });
  try {
    return reader
      .prepare<[string], { event: string; payload: string }>("SELECT event, payload FROM events WHERE run_id = ? ORDER BY event_index")
      .all(runId)
      .map((row) => ({ event: row.event, payload: JSON.parse(row.payload) as Record<string, unknown> }));
  } finally {
    reader.close();
  }
}

describe("SIGTERM (graceful shutdown)", () => {
  it("closes sockets with 1012, exits within 10 s, and the paused runs resume and finish after restart", async () => {
    const server = await startServerProcess(serverArgs());
    const { client } = await TestClient.connect(server.wsUrl);
    // The ticker's one step outlasts the 4 s drain, so it is stopped mid-step; nested-crash stops between steps.
    client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 1200, delayMs: 5 } });
    client.send({ action: "start-workflow", workflow_id: "nested-crash", message: "m", additional_data: { delayMs: 30 } });
    await client.take(12);
    const runIds = [...new Set(client.received.filter((f) => f.run_id).map((f) => f.run_id as string))];
    expect(runIds).toHaveLength(2);

    const stoppedAt = Date.now();
    server.child.kill("SIGTERM");
    const closed = await client.closed;
    expect(closed.code).toBe(1012);
    const exit = await Promise.race([server.exited, sleep(10_000).then(() => "still running after 10 s")]);
    expect(exit).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);
    for (const runId of runIds) expect(runRow(runId)).toMatchObject({ status: "running" });

    const again = await startServerProcess(serverArgs());
    try {
      expect(again.output()).toContain("run resumed");
      for (const runId of runIds) {
        const seen = indicesOf(client.received.filter((f) => f.run_id === runId));
        const { client: watcher } = await TestClient.connect(again.wsUrl);
        watcher.send({ action: "reconnect", run_id: runId, last_event_index: Math.max(...seen) });
        const frames = await watcher.untilTerminal();
        await watcher.close();
        expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
        const resumed = storedEvents(runId).find((e) => e.event === "WorkflowResumed");
        expect(resumed?.payload).toMatchObject({ attempt: 2, after_crash: false });
        const row = runRow(runId);
        expect(row).toMatchObject({ status: "completed", attempt: 2, crash_resumes: 0, paused_at: null });
        expect(storedIndices(new Database(files.db, { readonly: true }), runId)).toEqual(range((row.last_event_index as number) + 1));
      }
      const tickerResume = storedEvents(runIds[0]!).find((e) => e.event === "WorkflowResumed")?.payload;
      expect(tickerResume).toMatchObject({ resume_step_name: "tick", resume_step_path: "0", superseded_from_index: 1 });
    } finally {
      await again.stop();
    }
  });
});

describe("the crash loop guard", () => {
  it("ends a run that kills the server on every attempt with WorkflowError after FLOWD_MAX_RESUMES resumes", async () => {
    const first = await startServerProcess(serverArgs());
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "crash-every-time" });
    const runId = (await client.next()).run_id as string;
    expect(await first.exited).toBe("SIGKILL");

    // Each start resumes the run, which kills the server again, until the guard gives up.
    let starts = 1;
    while (runRow(runId).status === "running" && starts < 8) {
      const proc = runFlowd(["serve", "--port", "0", ...serverArgs()], { env: { FLOWD_MAX_RESUMES: "3" } });
      starts += 1;
      const outcome = await Promise.race([
        proc.exited,
        waitFor("the run to end", () => (runRow(runId).status === "running" ? undefined : "ended"), 15_000),
      ]);
      if (outcome === "ended") {
        proc.child.kill("SIGTERM");
        await proc.exited;
      }
    }
    expect(starts).toBe(5); // the first run, three resumes that crash, and the start that gives up
    const row = runRow(runId);
    expect(row).toMatchObject({ status: "error", crash_resumes: 3, attempt: 4 });
    expect(row.error).toContain("FLOWD_MAX_RESUMES=3");
    const events = storedEvents(runId);
    expect(events.filter((e) => e.event === "WorkflowResumed")).toHaveLength(3);
    expect(events.at(-1)?.event).toBe("WorkflowError");
    // The completed first step ran once: it is never among the steps that start again.
    expect(events.filter((e) => e.event === "StepStarted" && e.payload.step_name === "fine")).toHaveLength(1);
  });
});

describe("cancel across a restart", () => {
  it("honours a cancel request that was stored but not yet acted on when the server died", async () => {
    const first = await startServerProcess(serverArgs());
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "stubborn" });
    const runId = (await client.next()).run_id as string;
    // The step is under way (and ignores its abort signal) when the cancel arrives.
    expect(await client.next()).toMatchObject({ event: "StepStarted" });
    expect(await client.request({ action: "cancel-workflow", run_id: runId })).toMatchObject({ event: "cancel_requested" });
    first.child.kill("SIGKILL");
    await first.exited;
    expect(runRow(runId)).toMatchObject({ status: "running" });

    const second = await startServerProcess(serverArgs());
    try {
      expect(runRow(runId)).toMatchObject({ status: "cancelled" });
      const events = storedEvents(runId).map((e) => e.event);
      expect(events).toEqual(["WorkflowStarted", "StepStarted", "WorkflowCancelled"]);
    } finally {
      await second.stop();
    }
  });

  it("leaves a run that was cancelled before the crash cancelled", async () => {
    const first = await startServerProcess(serverArgs());
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 1000, delayMs: 5 } });
    const runId = (await client.next()).run_id as string;
    client.send({ action: "cancel-workflow", run_id: runId });
    await client.untilTerminal();
    const before = storedEvents(runId).length;
    first.child.kill("SIGKILL");
    await first.exited;

    const second = await startServerProcess(serverArgs());
    try {
      expect(runRow(runId)).toMatchObject({ status: "cancelled" });
      expect(storedEvents(runId)).toHaveLength(before);
    } finally {
      await second.stop();
    }
  });
});

describe("a run whose workflow the restarted server does not serve", () => {
  it("is left as it was; followers get what was stored, then RUN_NOT_RESUMED, instead of waiting; a cancel ends it", async () => {
    const first = await startServerProcess(serverArgs());
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 1000, delayMs: 5 } });
    const runId = (await client.next()).run_id as string;
    await client.take(5);
    first.child.kill("SIGKILL");
    await first.exited;
    const stored = storedEvents(runId).length;

    // Only the built-in workflows: "ticker" is not served.
    const second = await startServerProcess(["--db", files.db]);
    try {
      expect(second.output()).toContain("its workflow is not served by this process");
      expect(runRow(runId)).toMatchObject({ status: "running" });
      const { client: later } = await TestClient.connect(second.wsUrl);
      later.send({ action: "reconnect", run_id: runId, last_event_index: -1 });
      const frames = await later.take(stored + 2);
      expect(frames[0]).toMatchObject({ event: "catch_up", missed_events: stored });
      expect(indicesOf(frames)).toEqual(range(stored));
      const reason = frames.at(-1);
      expect(reason).toMatchObject({ event: "error", code: "RUN_NOT_RESUMED", run_id: runId });
      expect(reason?.error).toContain('workflow "ticker" is not served');
      expect(reason?.error).toContain("last_event_index");

      // Over SSE: the stored events, then the same reason, and the stream ends.
      const sse = await fetch(`${second.url}/runs/${runId}/events?after=${stored - 3}`);
      const messages = new SseParser().push(await sse.text());
      expect(messages.map((m) => m.event)).toEqual(["RunContent", "RunContent", "error"]);
      expect(JSON.parse(messages[2]!.data)).toMatchObject({ code: "RUN_NOT_RESUMED", run_id: runId });

      // Nothing here runs it, so a cancel ends it at once; a second one in the same breath adds nothing.
      later.send({ action: "cancel-workflow", run_id: runId });
      later.send({ action: "cancel-workflow", run_id: runId });
      expect(await later.next()).toMatchObject({ event: "cancel_requested" });
      await waitFor("the run to be cancelled", () => (runRow(runId).status === "cancelled" ? true : undefined));
      expect(await later.next()).toMatchObject({ event: expect.stringMatching(/^(cancel_requested|error)$/) });
      expect(storedEvents(runId).map((e) => e.event).filter((e) => e === "WorkflowCancelled")).toHaveLength(1);
      expect(second.output()).not.toContain("could not be stored");
      // Ended now: a reconnect replays it whole, up to the cancel.
      later.send({ action: "reconnect", run_id: runId, last_event_index: stored - 1 });
      const replay = await later.untilTerminal();
      expect(replay[0]).toMatchObject({ event: "replay", status: "cancelled", total_events: stored + 1 });
      expect(indicesOf(replay)).toEqual(range(stored + 1));
      expect(replay.at(-1)?.event).toBe("WorkflowCancelled");
      await later.close();
    } finally {
      await second.stop();
    }
  });
});

describe("one server per database", () => {
  it("refuses a second server on a file another live server owns, naming its pid", async () => {
    const first = await startServerProcess(serverArgs());
    try {
      const second = runFlowd(["serve", "--port", "0", ...serverArgs()]);
      expect(await second.exited).toBe(1);
      expect(second.output()).toContain(`Another flowd process (pid ${first.child.pid}) is serving`);
      const health = await fetch(`${first.url}/health`);
      expect(health.status).toBe(200);
    } finally {
      await first.stop();
    }
  });
});
