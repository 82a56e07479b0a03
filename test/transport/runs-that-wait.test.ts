import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { SseParser } from "../../src/protocol/sse.ts";
import { range, startServer, tempDir, waitFor, type TestServer } from "../helpers/server.ts";
import { testWorkflows } from "../fixtures/workflows.ts";
import { TestClient, indicesOf, type Frame } from "../helpers/ws-client.ts";

type Json = Record<string, unknown>;
const servers: TestServer[] = [];
const temps: ReturnType<typeof tempDir>[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
  for (const temp of temps.splice(0)) temp.remove();
});

async function server(): Promise<TestServer> {
  const t = await startServer();
  servers.push(t);
  return t;
}

function file(name: string): string {
  const temp = tempDir();
  temps.push(temp);
  return join(temp.dir, name);
}

async function post(url: string, body: Json | URLSearchParams | null, headers: Record<string, string> = {}): Promise<{ status: number; json: Json }> {
  const init: RequestInit = { method: "POST", headers };
  if (body instanceof URLSearchParams) init.body = body;
  else if (body !== null) {
    init.body = JSON.stringify(body);
    init.headers = { "content-type": "application/json", ...headers };
  }
  const response = await fetch(url, init);
  return { status: response.status, json: (await response.json()) as Json };
}

/** Starts a run in the background; returns its id once it is stored. */
async function startRun(t: TestServer, workflowId: string, additionalData: Json = {}, message = "hello"): Promise<string> {
  const { status, json } = await post(`${t.url}/workflows/${workflowId}/runs`, { message, background: true, additional_data: additionalData });
  expect(status).toBe(202);
  return String(json.run_id);
}

async function getRun(t: TestServer, runId: string): Promise<Json> {
  return (await (await fetch(`${t.url}/runs/${runId}`)).json()) as Json;
}

async function untilStatus(t: TestServer, runId: string, status: string): Promise<Json> {
  return waitFor(`run ${runId} to be ${status}`, async () => {
    const run = await getRun(t, runId);
    return run.status === status ? run : undefined;
  });
}

async function events(t: TestServer, runId: string): Promise<Json[]> {
  const response = await fetch(`${t.url}/runs/${runId}/events?limit=10000`, { headers: { accept: "application/json" } });
  return ((await response.json()) as { events: Json[] }).events;
}

const names = (list: readonly Json[]): unknown[] => list.map((event) => event.event);

function continueUrl(t: TestServer, workflowId: string, runId: string): string {
  return `${t.url}/workflows/${workflowId}/runs/${runId}/continue`;
}

describe("pause and continue (AgentOS shapes)", () => {
  it("a step that requires confirmation pauses the run with StepPaused and WorkflowPaused; the run row says what it waits for", async () => {
    const t = await server();
    const runId = await startRun(t, "approval");
    const run = await untilStatus(t, runId, "paused");
    expect(run.waiting_for).toEqual({ kind: "confirmation", name: "send", until: null });
    const log = await events(t, runId);
    expect(names(log)).toEqual(["WorkflowStarted", "StepStarted", "StepCompleted", "StepPaused", "WorkflowPaused"]);
    expect(log[3]).toMatchObject({ step_name: "send", step_id: "1", requires_confirmation: true, confirmation_message: "Send this draft?" });
    expect(log[4]).toMatchObject({
      status: "paused",
      paused_step_index: 1,
      paused_step_name: "send",
      pause_kind: "step",
      step_requirements: [{ step_id: "1", step_name: "send", requires_confirmation: true, confirmed: null, on_reject: "skip" }],
    });
    const [overview] = await t.query("SELECT status, wait_kind, wait_name FROM run_overview WHERE run_id = ?", runId);
    expect(overview).toEqual({ status: "paused", wait_kind: "confirmation", wait_name: "send" });
  });

  it("continue with stream=false answers the run as it ends; a rejection skips the step (onReject: skip)", async () => {
    const t = await server();
    const runId = await startRun(t, "approval");
    await untilStatus(t, runId, "paused");
    const { status, json } = await post(continueUrl(t, "approval", runId), { step_requirements: [{ step_id: "1", confirmed: false }], stream: false });
    expect(status).toBe(200);
    expect(json).toMatchObject({ status: "completed", content: "receipt for Draft: hello", waiting_for: null });
    const log = await events(t, runId);
    expect(names(log).slice(5)).toEqual(["StepContinued", "StepSkipped", "StepStarted", "StepCompleted", "WorkflowCompleted"]);
    expect(log[5]).toMatchObject({ step_id: "1", confirmed: false, timed_out: false });
  });

  it("user input is checked against the step's schema: a wrong field is 422 naming it, and the run stays paused; a right one goes on", async () => {
    const t = await server();
    const runId = await startRun(t, "input-form");
    await untilStatus(t, runId, "paused");
    const paused = (await events(t, runId)).find((event) => event.event === "StepPaused");
    expect(paused?.user_input_schema).toEqual([
      { name: "amount", field_type: "int", description: null, required: true },
      { name: "note", field_type: "str", description: null, required: false },
    ]);
    const url = continueUrl(t, "input-form", runId);
    const wrong = await post(url, { step_requirements: [{ step_id: "0", user_input: { amount: "ten" } }], stream: false });
    expect(wrong.status).toBe(422);
    expect(wrong.json).toMatchObject({ code: "INVALID_REQUIREMENT" });
    expect(String(wrong.json.detail)).toContain("amount");
    const missing = await post(url, { step_requirements: [{ step_id: "0" }], stream: false });
    expect(missing).toMatchObject({ status: 422, json: { code: "INVALID_REQUIREMENT" } });
    expect((await getRun(t, runId)).status).toBe("paused");
    const right = await post(url, { step_requirements: [{ step_id: "0", user_input: { amount: 10, note: "ok" } }], stream: false });
    expect(right).toMatchObject({ status: 200, json: { status: "completed", content: { amount: 10, note: "ok" } } });
  });

  it("two continues racing: exactly one wins, the other gets 409; a continue on a running or finished run is RUN_NOT_PAUSED", async () => {
    const t = await server();
    const runId = await startRun(t, "approval");
    await untilStatus(t, runId, "paused");
    const body = { step_requirements: [{ step_id: "1", confirmed: true }], stream: false };
    const answers = await Promise.all([post(continueUrl(t, "approval", runId), body), post(continueUrl(t, "approval", runId), body)]);
    expect(answers.map((a) => a.status).sort()).toEqual([200, 409]);
    expect(answers.find((a) => a.status === 409)?.json.code).toBe("RUN_NOT_PAUSED");
    expect(names(await events(t, runId)).filter((name) => name === "StepContinued")).toHaveLength(1);
    const again = await post(continueUrl(t, "approval", runId), body);
    expect(again).toMatchObject({ status: 409, json: { code: "RUN_NOT_PAUSED" } });

    const running = await startRun(t, "ticker", { count: 200, delayMs: 10 });
    const refused = await post(continueUrl(t, "ticker", running), body);
    expect(refused).toMatchObject({ status: 409, json: { code: "RUN_NOT_PAUSED" } });
    const unknown = await post(continueUrl(t, "approval", "no-such-run"), body);
    expect(unknown).toMatchObject({ status: 404, json: { code: "RUN_NOT_FOUND" } });
  });

  it("bad step_requirements are INVALID_REQUIREMENT with what is wrong, and the run stays paused", async () => {
    const t = await server();
    const runId = await startRun(t, "approval");
    await untilStatus(t, runId, "paused");
    const url = continueUrl(t, "approval", runId);
    for (const bad of ["not json", "{}", "[]", "[1]", JSON.stringify([{ step_id: "1", confirmed: "yes" }])]) {
      const answer = await post(url, new URLSearchParams({ step_requirements: bad, stream: "false" }));
      expect(answer.status, bad).toBe(422);
      expect(answer.json.code, bad).toBe("INVALID_REQUIREMENT");
      expect(String(answer.json.detail), bad).toMatch(/step_requirements|confirm/);
    }
    const missing = await post(url, { stream: false });
    expect(missing).toMatchObject({ status: 422, json: { code: "INVALID_REQUIREMENT" } });
    expect(String(missing.json.detail)).toContain("step_requirements is missing");
    const otherStep = await post(url, { step_requirements: [{ step_id: "../99", confirmed: false }], stream: false });
    expect(otherStep).toMatchObject({ status: 422, json: { code: "INVALID_REQUIREMENT" } });
    expect(String(otherStep.json.detail)).toContain('step_id "1"');
    const unresolved = await post(url, { step_requirements: [{ step_id: "1" }], stream: false });
    expect(unresolved).toMatchObject({ status: 422, json: { code: "INVALID_REQUIREMENT" } });
    expect(String(unresolved.json.detail)).toContain('"confirmed"');
    expect((await getRun(t, runId)).status).toBe("paused");
  });

  it("a Router lets a person pick the route (RouterPaused, selected_choices)", async () => {
    const t = await server();
    const runId = await startRun(t, "route-pick");
    await untilStatus(t, runId, "paused");
    const paused = (await events(t, runId)).find((event) => event.event === "RouterPaused");
    expect(paused).toMatchObject({ available_choices: ["left", "right"], allow_multiple_selections: false });
    const url = continueUrl(t, "route-pick", runId);
    const wrong = await post(url, { step_requirements: [{ step_id: "0", selected_choices: ["up"] }], stream: false });
    expect(wrong).toMatchObject({ status: 422, json: { code: "INVALID_REQUIREMENT" } });
    const two = await post(url, { step_requirements: [{ step_id: "0", selected_choices: ["left", "right"] }], stream: false });
    expect(two).toMatchObject({ status: 422, json: { code: "INVALID_REQUIREMENT" } });
    const right = await post(url, { step_requirements: [{ step_id: "0", selected_choices: ["right", "right"] }], stream: false });
    expect(right).toMatchObject({ status: 200, json: { status: "completed", content: "went right" } });
  });

  it("hitlTimeoutMs with onTimeout approve: the run goes on by itself, StepContinued says timed_out", async () => {
    const t = await server();
    const runId = await startRun(t, "auto-approve");
    const run = await untilStatus(t, runId, "completed");
    expect(run.content).toBe("approved by time");
    const continued = (await events(t, runId)).find((event) => event.event === "StepContinued");
    expect(continued).toMatchObject({ timed_out: true, confirmed: true });
  });

  it("over the WebSocket: continue-workflow gets what follows on that socket; bad input gets an error frame and the socket goes on", async () => {
    const t = await server();
    const runId = await startRun(t, "approval");
    await untilStatus(t, runId, "paused");
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "continue-workflow", workflow_id: "approval", run_id: runId, step_requirements: "nonsense" });
    expect(await client.next()).toMatchObject({ event: "error", code: "INVALID_REQUIREMENT" });
    client.send({ action: "continue-workflow", workflow_id: "ticker", run_id: runId, step_requirements: [{ confirmed: true }] });
    expect(await client.next()).toMatchObject({ event: "error", code: "RUN_NOT_FOUND" });
    client.send({ action: "signal-workflow", run_id: runId, name: "" });
    expect(await client.next()).toMatchObject({ event: "error", code: "INVALID_MESSAGE" });
    client.send({ action: "continue-workflow", workflow_id: "approval", run_id: runId, step_requirements: [{ step_id: "1", confirmed: true }] });
    const after = await client.untilTerminal();
    expect(names(after)).toEqual(["StepContinued", "StepStarted", "StepCompleted", "StepStarted", "StepCompleted", "WorkflowCompleted"]);
    expect(after[0]?.event_index).toBe(5);
    client.send({ action: "ping" });
    expect(await client.next()).toMatchObject({ event: "pong" });
    await client.close();
  });
});

describe("durable sleep and signals", () => {
  it("input.sleep: the run is `waiting` until its stored time, then goes on without sending what it sent before the wait again", async () => {
    const t = await server();
    const effectsFile = file("effects.txt");
    const runId = await startRun(t, "sleeper", { effectsFile, sleepMs: 400 });
    const waiting = await untilStatus(t, runId, "waiting");
    const waitingFor = waiting.waiting_for as Json;
    expect(waitingFor.kind).toBe("timer");
    await untilStatus(t, runId, "completed");
    const log = await events(t, runId);
    expect(names(log)).toEqual([
      "WorkflowStarted",
      "StepStarted",
      "SubStepCompleted",
      "RunContent",
      "WaitStarted",
      "WaitCompleted",
      "RunContent",
      "StepCompleted",
      "WorkflowCompleted",
    ]);
    expect(log[4]).toMatchObject({ wait_kind: "timer", wait_key: "0~1" });
    expect(Number(log[4]?.wake_at)).toBe(waitingFor.until);
    expect(readFileSync(effectsFile, "utf8").trim().split("\n")).toEqual([`${runId} effect`]);
  });

  it("a signal sent before the wait is kept and taken by it; one sent during the wait ends it; none: the timeout", async () => {
    const t = await server();
    // Sent while the run is still at its first step: kept in the mailbox.
    const early = await startRun(t, "signalled", { timeoutMs: 60_000, beforeMs: 300 });
    // Not checked when kept (no wait says its schema yet): dropped when taken, and the next one is taken.
    const invalid = await post(`${t.url}/runs/${early}/signals/approved`, { by: 5 });
    expect(invalid).toMatchObject({ status: 202, json: { delivered: false } });
    const kept = await post(`${t.url}/runs/${early}/signals/approved`, { by: "early bird", extra: "ignored" });
    expect(kept).toMatchObject({ status: 202, json: { delivered: false } });
    await post(`${t.url}/runs/${early}/signals/approved`, { by: "second" });
    expect((await untilStatus(t, early, "completed")).content).toBe("approved by early bird");
    // Taken in the transaction that recorded the wait's end; the one left was dropped when the run ended.
    const mailbox = (await t.query<{ payload: unknown }>("SELECT payload FROM signals WHERE run_id = ?", early)).map((row) => ({
      by: (typeof row.payload === "string" ? (JSON.parse(row.payload) as { by: string }) : (row.payload as { by: string })).by,
    }));
    expect(mailbox).toEqual([]);
    const discarded = (await events(t, early)).find((event) => event.event === "CustomEvent");
    expect(discarded).toMatchObject({ name: "signal_discarded", data: { signal: "approved", reason: expect.stringContaining("by") } });

    const during = await startRun(t, "signalled");
    const waiting = await untilStatus(t, during, "waiting");
    expect(waiting.waiting_for).toEqual({ kind: "signal", name: "approved", until: null });
    const bad = await post(`${t.url}/runs/${during}/signals/approved`, { by: 42 });
    expect(bad).toMatchObject({ status: 422, json: { code: "INVALID_SIGNAL" } });
    expect(String(bad.json.detail)).toContain("by");
    expect((await getRun(t, during)).status).toBe("waiting");
    // Keys the schema does not name are accepted, as zod accepts them.
    const good = await post(`${t.url}/runs/${during}/signals/approved`, { by: "ann", note: "fine" });
    expect(good).toMatchObject({ status: 202, json: { delivered: true } });
    expect((await untilStatus(t, during, "completed")).content).toBe("approved by ann");
    const completed = (await events(t, during)).find((event) => event.event === "WaitCompleted");
    expect(completed).toMatchObject({ wait_kind: "signal", timed_out: false, payload: { by: "ann" } });

    const never = await startRun(t, "signalled", { timeoutMs: 300 });
    expect((await untilStatus(t, never, "completed")).content).toBe("timed out");
    expect((await events(t, never)).find((event) => event.event === "WaitCompleted")).toMatchObject({ timed_out: true });

    const finished = await post(`${t.url}/runs/${never}/signals/approved`, { by: "late" });
    expect(finished).toMatchObject({ status: 409, json: { code: "RUN_FINISHED" } });
    const unknown = await post(`${t.url}/runs/nope/signals/approved`, { by: "x" });
    expect(unknown).toMatchObject({ status: 404, json: { code: "RUN_NOT_FOUND" } });
  });

  it("two Parallel branches wait at once (a sleep, a signal): each goes on when its own wait ends, nothing sent twice", async () => {
    const t = await server();
    const runId = await startRun(t, "parallel-waits", { sleepMs: 300 });
    await untilStatus(t, runId, "waiting");
    // The sleep ends first; the run goes on with the listener still waiting.
    await waitFor("the sleeping branch to complete", async () =>
      (await events(t, runId)).some((event) => event.event === "StepCompleted" && event.step_name === "napper") ? true : undefined,
    );
    const waiting = await untilStatus(t, runId, "waiting");
    expect(waiting.waiting_for).toMatchObject({ kind: "signal", name: "go" });
    expect((await post(`${t.url}/runs/${runId}/signals/go`, { n: 1 })).status).toBe(202);
    const done = await untilStatus(t, runId, "completed");
    expect(done.content).toEqual({ napper: "slept", listener: 'heard {"n":1}' });
    const log = await events(t, runId);
    expect(indicesOf(log as Frame[])).toEqual(range(log.length));
    const count = (name: string, step?: string) => log.filter((e) => e.event === name && (step === undefined || e.step_name === step)).length;
    expect(count("ParallelExecutionStarted")).toBe(1);
    expect(count("StepStarted", "napper")).toBe(1);
    expect(count("StepStarted", "listener")).toBe(1);
    expect(log.filter((e) => e.event === "RunContent").map((e) => e.content)).toEqual(["nap ", "woke"]);
    expect(count("WaitStarted")).toBe(2);
    expect(count("WaitCompleted")).toBe(2);
  });

  it("a Parallel branch that fails ends the run although another branch waits; nothing of the wait is left", async () => {
    const t = await server();
    const runId = await startRun(t, "parallel-fail-wait");
    const failed = await untilStatus(t, runId, "error");
    expect(failed.error).toContain("branch failed");
    expect(failed.waiting_for).toBeNull();
    // The wait's timeout (500 ms) passes: nothing is appended to the ended run.
    await new Promise((resolve) => setTimeout(resolve, 700));
    const log = await events(t, runId);
    expect(log.at(-1)?.event).toBe("WorkflowError");
    expect(names(log).filter((name) => name === "StepError")).toHaveLength(1);
    expect(await post(`${t.url}/runs/${runId}/signals/go`, {})).toMatchObject({ status: 409, json: { code: "RUN_FINISHED" } });
  });

  it("over the WebSocket: signal-workflow answers signal_accepted", async () => {
    const t = await server();
    const runId = await startRun(t, "signalled");
    await untilStatus(t, runId, "waiting");
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "signal-workflow", run_id: runId, name: "approved", payload: { by: "ws" } });
    expect(await client.next()).toMatchObject({ event: "signal_accepted", run_id: runId, name: "approved", delivered: true });
    await client.close();
    expect((await untilStatus(t, runId, "completed")).content).toBe("approved by ws");
  });

  it("a run keeps at most 1,000 signals it has not waited for (429 past that)", async () => {
    const t = await server();
    const runId = await startRun(t, "approval");
    await untilStatus(t, runId, "paused");
    for (let i = 0; i < 1000; i += 50) {
      const answers = await Promise.all(range(50).map((j) => post(`${t.url}/runs/${runId}/signals/s${(i + j) % 3}`, { i: i + j })));
      expect(answers.every((a) => a.status === 202)).toBe(true);
    }
    const refused = await post(`${t.url}/runs/${runId}/signals/s0`, { i: 1000 });
    expect(refused).toMatchObject({ status: 429, json: { code: "TOO_MANY_SIGNALS" } });
  });

  it("cancel right after the start ends the run even while it is going to sleep (40 tries)", async () => {
    const t = await server();
    const ids = await Promise.all(
      range(40).map(async () => {
        const runId = await startRun(t, "signalled");
        await post(`${t.url}/workflows/signalled/runs/${runId}/cancel`, null);
        return runId;
      }),
    );
    for (const runId of ids) await untilStatus(t, runId, "cancelled");
  });

  it("cancel ends a paused run at once; continuing it then is RUN_NOT_PAUSED", async () => {
    const t = await server();
    const runId = await startRun(t, "approval");
    await untilStatus(t, runId, "paused");
    expect((await post(`${t.url}/workflows/approval/runs/${runId}/cancel`, null)).status).toBe(200);
    await untilStatus(t, runId, "cancelled");
    const late = await post(continueUrl(t, "approval", runId), { step_requirements: [{ confirmed: true }], stream: false });
    expect(late).toMatchObject({ status: 409, json: { code: "RUN_NOT_PAUSED" } });
  });

  it("cancel ends a waiting run at once", async () => {
    const t = await server();
    const runId = await startRun(t, "signalled");
    await untilStatus(t, runId, "waiting");
    const { status } = await post(`${t.url}/workflows/signalled/runs/${runId}/cancel`, null);
    expect(status).toBe(200);
    const run = await untilStatus(t, runId, "cancelled");
    expect(run.waiting_for).toBeNull();
  });
});

describe("step retries", () => {
  it("a step that fails twice then succeeds: two StepRetrying naming each failed attempt's events, then it completes", async () => {
    const t = await server();
    const counterFile = file("attempts.txt");
    const runId = await startRun(t, "flaky", { counterFile, failures: 2 });
    await untilStatus(t, runId, "completed");
    const log = await events(t, runId);
    expect(indicesOf(log as Frame[])).toEqual(range(log.length));
    const retries = log.filter((event) => event.event === "StepRetrying");
    expect(retries).toHaveLength(2);
    const starts = log.filter((event) => event.event === "StepStarted").map((event) => event.event_index);
    expect(retries.map((r) => [r.attempt, r.delay_ms, r.superseded_from_index, r.error])).toEqual([
      [1, 300, starts[0], "failure 1"],
      [2, 600, starts[1], "failure 2"],
    ]);
    for (const retry of retries) expect(retry.superseded_to_index).toBe(Number(retry.event_index) - 1);
    expect(log.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: "succeeded on attempt 3" });
  });

  it("NonRetryableError is not retried; onError skip goes on with null; onError pause lets a person retry", async () => {
    const t = await server();
    const fatal = await startRun(t, "fatal");
    const failed = await untilStatus(t, fatal, "error");
    expect(failed.error).toContain("the card was declined");
    expect(names(await events(t, fatal))).not.toContain("StepRetrying");

    const skipped = await startRun(t, "skip-on-error");
    expect((await untilStatus(t, skipped, "completed")).content).toBe("after got null");
    expect(names(await events(t, skipped))).toContain("StepError");

    const counterFile = file("fragile.txt");
    const paused = await startRun(t, "pause-on-error", { counterFile, failures: 1 });
    await untilStatus(t, paused, "paused");
    const pause = (await events(t, paused)).find((event) => event.event === "WorkflowPaused");
    expect(pause?.step_requirements).toEqual([expect.objectContaining({ requires_error_decision: true, error_message: "failure 1", decision: null })]);
    const retried = await post(continueUrl(t, "pause-on-error", paused), { step_requirements: [{ step_id: "0", decision: "retry" }], stream: false });
    expect(retried).toMatchObject({ status: 200, json: { status: "completed", content: "succeeded on attempt 2" } });
    // The retry is a new attempt: it starts as one.
    expect(names(await events(t, paused)).filter((name) => name === "StepStarted")).toHaveLength(2);
  });
});

describe("a waiting run whose workflow this server does not load", () => {
  it("continue and signal answer RUN_NOT_RESUMED (503) every time and record nothing; the run waits on for a server that runs it", async () => {
    const dbPath = file("shared.db");
    const first = await startServer({ dbPath });
    const paused = await startRun(first, "approval");
    const waiting = await startRun(first, "signalled");
    await untilStatus(first, paused, "paused");
    await untilStatus(first, waiting, "waiting");
    await first.close();
    const partial = await startServer({ dbPath, workflows: testWorkflows.filter((w) => w.id !== "approval" && w.id !== "signalled") });
    servers.push(partial);
    for (let i = 0; i < 2; i++) {
      const answer = await post(continueUrl(partial, "approval", paused), { step_requirements: [{ confirmed: true }], stream: false });
      expect(answer).toMatchObject({ status: 503, json: { code: "RUN_NOT_RESUMED" } });
      const signal = await post(`${partial.url}/runs/${waiting}/signals/approved`, { by: "x" });
      expect(signal).toMatchObject({ status: 503, json: { code: "RUN_NOT_RESUMED" } });
    }
    expect((await getRun(partial, paused)).last_event_index).toBe(4);
    expect(await partial.query("SELECT CAST(count(*) AS INTEGER) AS n FROM signals")).toEqual([{ n: 0 }]);
    // Cancel needs nothing of the workflow: it ends the waiting run at once.
    expect((await post(`${partial.url}/workflows/signalled/runs/${waiting}/cancel`, null)).status).toBe(200);
    await untilStatus(partial, waiting, "cancelled");
    await partial.close();
    servers.splice(servers.indexOf(partial), 1);
    const full = await startServer({ dbPath });
    servers.push(full);
    const done = await post(continueUrl(full, "approval", paused), { step_requirements: [{ confirmed: true }], stream: false });
    expect(done).toMatchObject({ status: 200, json: { status: "completed" } });
  });
});

describe("a long paused history", () => {
  it("a WebSocket continue sent during a reconnect's catch-up does not cut the catch-up short; WorkflowPaused lists the latest 100 resolved requirements", async () => {
    const t = await server();
    const counterFile = file("many.txt");
    const runId = await startRun(t, "pause-on-error", { counterFile, failures: 130 });
    for (let i = 0; i < 129; i++) {
      await untilStatus(t, runId, "paused");
      const answer = await post(continueUrl(t, "pause-on-error", runId), { step_requirements: [{ decision: "retry" }], stream: false });
      expect(answer.status).toBe(200);
    }
    await untilStatus(t, runId, "paused");
    const [last] = await t.query<{ payload: string }>(
      "SELECT payload FROM events WHERE run_id = ? AND event = 'WorkflowPaused' ORDER BY event_index DESC LIMIT 1",
      runId,
    );
    expect((JSON.parse(last!.payload) as { step_requirements: unknown[] }).step_requirements).toHaveLength(101);
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "reconnect", run_id: runId, last_event_index: -1 });
    client.send({ action: "continue-workflow", workflow_id: "pause-on-error", run_id: runId, step_requirements: [{ decision: "retry" }] });
    const frames = (await client.untilTerminal()).filter((frame) => typeof frame.event_index === "number");
    await client.close();
    expect(indicesOf(frames)).toEqual(range(frames.length));
    expect(frames.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: "succeeded on attempt 131" });
  });
});

describe("SSE continue", () => {
  it("continue with stream (the default) answers an SSE stream of what follows, from StepContinued at the next index", async () => {
    const t = await server();
    const runId = await startRun(t, "approval");
    await untilStatus(t, runId, "paused");
    const response = await fetch(continueUrl(t, "approval", runId), {
      method: "POST",
      body: new URLSearchParams({ step_requirements: JSON.stringify([{ step_id: "1", confirmed: true }]) }),
    });
    expect(response.headers.get("content-type")).toContain("text/event-stream");
    const frames = new SseParser().push(await response.text()).map((message) => JSON.parse(message.data) as Json);
    expect(frames[0]).toMatchObject({ event: "StepContinued", event_index: 5 });
    expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
    expect(indicesOf(frames as Frame[])).toEqual(range(frames.length).map((i) => i + 5));
  });
});
