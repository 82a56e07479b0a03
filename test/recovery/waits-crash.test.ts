import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SseParser } from "../../src/protocol/sse.ts";
import { range, tempDir, waitFor } from "../helpers/server.ts";
import { TestClient, indicesOf, type Frame } from "../helpers/ws-client.ts";
import { REPO_ROOT, startServerProcess, type ServerProcess } from "../../testkit/server-process.ts";
import { seededRandom } from "./crash-trials.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");
type Json = Record<string, unknown>;

let temp: ReturnType<typeof tempDir>;
beforeAll(() => {
  temp = tempDir();
});
afterAll(() => temp.remove());

function serve(db: string): Promise<ServerProcess> {
  return startServerProcess(["--workflows", FIXTURES, "--db", db]);
}

async function startRun(server: ServerProcess, workflowId: string, additionalData: Json = {}): Promise<string> {
  const response = await fetch(`${server.url}/workflows/${workflowId}/runs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ message: "crash", background: true, additional_data: additionalData }),
  });
  expect(response.status).toBe(202);
  return String(((await response.json()) as Json).run_id);
}

async function runJson(server: ServerProcess, runId: string): Promise<Json> {
  return (await (await fetch(`${server.url}/runs/${runId}`)).json()) as Json;
}

async function untilStatus(server: ServerProcess, runId: string, statuses: readonly string[], timeoutMs = 15_000): Promise<Json> {
  return waitFor(`run ${runId} to be ${statuses.join(" or ")}`, async () => {
    const run = await runJson(server, runId);
    return statuses.includes(String(run.status)) ? run : undefined;
  }, timeoutMs);
}

/** Every event of the run, read by a client that reconnects from the start. */
async function allEvents(server: ServerProcess, runId: string): Promise<Frame[]> {
  const { client } = await TestClient.connect(server.wsUrl);
  client.send({ action: "reconnect", run_id: runId, last_event_index: -1 });
  const frames = (await client.untilTerminal()).filter((frame) => typeof frame.event_index === "number");
  await client.close();
  return frames;
}

/** The run's stored events so far (JSON page). */
async function allEventsSoFar(server: ServerProcess, runId: string): Promise<Frame[]> {
  const response = await fetch(`${server.url}/runs/${runId}/events?limit=10000`, { headers: { accept: "application/json" } });
  return ((await response.json()) as { events: Frame[] }).events;
}

async function kill(server: ServerProcess): Promise<void> {
  server.child.kill("SIGKILL");
  expect(await server.exited).toBe("SIGKILL");
}

describe("a paused run survives kill -9", () => {
  it("paused, killed, restarted, continued over REST with form-encoded step_requirements: it completes, gapless, StepContinued at the next index", async () => {
    const db = join(temp.dir, "pause-rest.db");
    const first = await serve(db);
    const runId = await startRun(first, "approval");
    await untilStatus(first, runId, ["paused"]);
    await kill(first);

    const second = await serve(db);
    try {
      const paused = await runJson(second, runId);
      expect(paused).toMatchObject({ status: "paused", waiting_for: { kind: "confirmation", name: "send" } });
      const response = await fetch(`${second.url}/workflows/approval/runs/${runId}/continue`, {
        method: "POST",
        body: new URLSearchParams({ step_requirements: JSON.stringify([{ step_id: "1", confirmed: true }]), session_id: String(paused.session_id) }),
      });
      expect(response.status).toBe(200);
      const streamed = new SseParser().push(await response.text()).map((message) => JSON.parse(message.data) as Frame);
      expect(streamed[0]).toMatchObject({ event: "StepContinued", event_index: 5 });
      const frames = await allEvents(second, runId);
      expect(indicesOf(frames)).toEqual(range(frames.length));
      expect(frames.map((frame) => frame.event)).toEqual([
        "WorkflowStarted",
        "StepStarted",
        "StepCompleted",
        "StepPaused",
        "WorkflowPaused",
        "StepContinued",
        "StepStarted",
        "StepCompleted",
        "StepStarted",
        "StepCompleted",
        "WorkflowCompleted",
      ]);
      // No WorkflowResumed: nothing was executing when the server died.
      expect(frames.at(-1)?.content).toBe("receipt for sent (Draft: crash)");
    } finally {
      await second.stop();
    }
  });

  it("paused, killed, restarted, continued over the WebSocket by a client that then sees every event once", async () => {
    const db = join(temp.dir, "pause-ws.db");
    const first = await serve(db);
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "approval", message: "crash" });
    const before: Frame[] = [];
    while (before.at(-1)?.event !== "WorkflowPaused") before.push(await client.next());
    const runId = String(before[0]?.run_id);
    await kill(first);

    const second = await serve(db);
    try {
      const { client: again } = await TestClient.connect(second.wsUrl);
      again.send({ action: "reconnect", run_id: runId, last_event_index: before.at(-1)?.event_index });
      expect(await again.next()).toMatchObject({ event: "subscribed", status: "paused" });
      again.send({ action: "continue-workflow", workflow_id: "approval", run_id: runId, step_requirements: [{ step_id: "1", confirmed: true }] });
      const after = (await again.untilTerminal()).filter((frame) => typeof frame.event_index === "number");
      await again.close();
      const frames = [...before, ...after];
      expect(indicesOf(frames)).toEqual(range(frames.length));
      expect(after[0]).toMatchObject({ event: "StepContinued", event_index: Number(before.at(-1)?.event_index) + 1 });
      expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
    } finally {
      await second.stop();
    }
  });
});

describe("a Parallel branch running beside a wait, killed", () => {
  it("resumes at the restart as after a crash (the waiting branch waits again), not when the wait ends", async () => {
    const db = join(temp.dir, "parallel-busy.db");
    const first = await serve(db);
    const runId = await startRun(first, "parallel-busy", { sleepMs: 4000 });
    await untilStatus(first, runId, ["waiting"]);
    await sleep(300);
    await kill(first);
    const second = await serve(db);
    try {
      // The busy branch runs again now, while the other still sleeps.
      const frames = await waitFor("the busy branch to complete again", async () => {
        const list = await allEventsSoFar(second, runId);
        return list.some((f) => f.event === "StepCompleted" && f.step_name === "busy") ? list : undefined;
      });
      expect(frames.some((f) => f.event === "WorkflowResumed")).toBe(true);
      expect(frames.some((f) => f.event === "StepCompleted" && f.step_name === "sleepy")).toBe(false);
      const done = await untilStatus(second, runId, ["completed"], 15_000);
      expect(done.content).toEqual({ sleepy: "rested", busy: "worked" });
      const all = await allEvents(second, runId);
      expect(indicesOf(all)).toEqual(range(all.length));
      expect(all.filter((f) => f.event === "WaitCompleted")).toHaveLength(1);
    } finally {
      await second.stop();
    }
  });
});

describe("durable timers across kill -9", () => {
  it("a pause's timeout is stored: killed while paused, restarted, the run is cancelled at the original time (onTimeout cancel)", async () => {
    const db = join(temp.dir, "timeout.db");
    const first = await serve(db);
    const runId = await startRun(first, "unanswered");
    const paused = await untilStatus(first, runId, ["paused"]);
    const until = Number((paused.waiting_for as { until: number }).until);
    expect(until).toBeGreaterThan(Date.now());
    await kill(first);
    const second = await serve(db);
    try {
      const cancelled = await untilStatus(second, runId, ["cancelled"]);
      expect(Date.now()).toBeGreaterThanOrEqual(until);
      expect(cancelled.error).toContain("No one answered");
      const frames = await allEvents(second, runId);
      expect(indicesOf(frames)).toEqual(range(frames.length));
    } finally {
      await second.stop();
    }
  });

  it("input.sleep(3000), SIGKILL at ~1 s, restart at ~2 s: WaitCompleted comes about 3 s after the sleep began, and the input.step effect happened once", async () => {
    const db = join(temp.dir, "sleep.db");
    const effectsFile = join(temp.dir, "sleep-effects.txt");
    const first = await serve(db);
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "sleeper", message: "crash", additional_data: { effectsFile, sleepMs: 3000 } });
    const before: Frame[] = [];
    while (before.at(-1)?.event !== "WaitStarted") before.push(await client.next());
    const wakeAt = Number(before.at(-1)?.wake_at);
    const runId = String(before[0]?.run_id);
    await sleep(Math.max(0, wakeAt - 2000 - Date.now()));
    await kill(first);
    await sleep(Math.max(0, wakeAt - 1000 - Date.now()));
    const restartedAt = Date.now();
    const second = await serve(db);
    const readyAt = Date.now();
    try {
      const { client: again } = await TestClient.connect(second.wsUrl);
      again.send({ action: "reconnect", run_id: runId, last_event_index: before.at(-1)?.event_index });
      const after: Frame[] = [];
      let wokeAt = 0;
      for (;;) {
        const frame = await again.next();
        if (frame.event === "WaitCompleted") wokeAt = Date.now();
        // A run that finished before the reconnect is replayed from index 0: keep what came after the crash.
        if (typeof frame.event_index === "number" && frame.event_index > Number(before.at(-1)?.event_index)) after.push(frame);
        if (frame.event === "WorkflowCompleted") break;
      }
      await again.close();
      // At the stored time (or at once, if the restart took longer than that), not 3 s after the restart.
      expect(wokeAt).toBeGreaterThanOrEqual(wakeAt - 5);
      expect(wokeAt).toBeLessThan(Math.max(wakeAt, readyAt) + 1000);
      expect(wokeAt).toBeLessThan(restartedAt + 3000);
      const frames = [...before, ...after];
      expect(indicesOf(frames)).toEqual(range(frames.length));
      expect(after.map((frame) => frame.event)).toEqual(["WaitCompleted", "RunContent", "StepCompleted", "WorkflowCompleted"]);
    } finally {
      await second.stop();
    }
    expect(readFileSync(effectsFile, "utf8").trim().split("\n")).toEqual([`${runId} effect`]);
  });

  it("a kill during a retry's backoff delay resumes the same delay", async () => {
    const db = join(temp.dir, "retry.db");
    const counterFile = join(temp.dir, "retry-attempts.txt");
    const first = await serve(db);
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "slow-retry", message: "crash", additional_data: { counterFile } });
    const before: Frame[] = [];
    while (before.at(-1)?.event !== "WaitStarted") before.push(await client.next());
    const wakeAt = Number(before.at(-1)?.wake_at);
    expect(before.find((frame) => frame.event === "StepRetrying")).toMatchObject({ attempt: 1, delay_ms: 2000 });
    const runId = String(before[0]?.run_id);
    await kill(first);
    await sleep(500);
    const second = await serve(db);
    const readyAt = Date.now();
    try {
      const run = await untilStatus(second, runId, ["completed"]);
      const doneAt = Date.now();
      expect(run.content).toBe("succeeded on attempt 2");
      // The stored wake time (or at once, if the restart took longer than that), not a fresh 2 s after the restart.
      expect(doneAt).toBeGreaterThanOrEqual(wakeAt - 5);
      expect(doneAt).toBeLessThan(Math.max(wakeAt, readyAt) + 1000);
      const frames = await allEvents(second, runId);
      expect(indicesOf(frames)).toEqual(range(frames.length));
    } finally {
      await second.stop();
    }
    expect(readFileSync(counterFile, "utf8").trim().split("\n")).toHaveLength(2);
  });
});

describe("crash trials with runs that sleep, pause and retry", () => {
  /**
   * Seeded trials: runs that sleep (with an effect in input.step), retry after a failure,
   * and pause for a person are started; the server is SIGKILLed at a random moment;
   * after a restart the paused ones are continued, and every run must end once, gapless,
   * with its effects made once.
   */
  for (const seed of [1601, 1602, 1603, 1604]) {
    it(`seed ${seed}: every run ends once, gapless, with its effects made once`, async () => {
      const random = seededRandom(seed);
      const db = join(temp.dir, `trial-${seed}.db`);
      const first = await serve(db);
      const runs: { id: string; kind: "sleep" | "retry" | "pause"; file: string }[] = [];
      for (let i = 0; i < 6; i++) {
        const kind = (["sleep", "retry", "pause"] as const)[i % 3]!;
        const file = join(temp.dir, `trial-${seed}-${i}.txt`);
        const id =
          kind === "sleep"
            ? await startRun(first, "sleeper", { effectsFile: file, sleepMs: 200 + Math.floor(random() * 600) })
            : kind === "retry"
              ? await startRun(first, "flaky", { counterFile: file, failures: 1 })
              : await startRun(first, "approval");
        runs.push({ id, kind, file });
      }
      await sleep(Math.floor(random() * 700));
      await kill(first);
      const second = await serve(db);
      try {
        for (const run of runs) {
          if (run.kind !== "pause") continue;
          await untilStatus(second, run.id, ["paused"]);
          const response = await fetch(`${second.url}/workflows/approval/runs/${run.id}/continue`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ step_requirements: [{ step_id: "1", confirmed: true }], stream: false }),
          });
          expect(response.status).toBe(200);
        }
        for (const run of runs) {
          const done = await untilStatus(second, run.id, ["completed", "error", "cancelled"]);
          expect(done.status, `${run.kind} run ${run.id}`).toBe("completed");
          const frames = await allEvents(second, run.id);
          expect(indicesOf(frames)).toEqual(range(frames.length));
          expect(frames.filter((frame) => ["WorkflowCompleted", "WorkflowError", "WorkflowCancelled"].includes(frame.event))).toHaveLength(1);
          if (run.kind === "sleep") {
            expect(readFileSync(run.file, "utf8").trim().split("\n"), `effect of ${run.id}`).toEqual([`${run.id} effect`]);
          }
          if (run.kind === "retry") {
            // One failed attempt and one that succeeded; a crash mid-attempt may add one more run of it.
            const attempts = existsSync(run.file) ? readFileSync(run.file, "utf8").trim().split("\n").length : 0;
            expect(attempts).toBeGreaterThanOrEqual(2);
            expect(attempts).toBeLessThanOrEqual(3);
          }
        }
      } finally {
        await second.stop();
      }
    });
  }
});
