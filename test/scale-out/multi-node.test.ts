import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startPostgres, testPool, type TestPostgres } from "../../testkit/postgres.ts";
import { REPO_ROOT, runFlowd, startServerProcess, type ServerProcess } from "../../testkit/server-process.ts";
import { indicesOf, isTerminal, TestClient, type Frame } from "../helpers/ws-client.ts";
import { range, waitFor } from "../helpers/server.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");
const LEASE_MS = 1000;

let postgres: TestPostgres;
beforeAll(async () => {
  postgres = await startPostgres();
});
afterAll(async () => {
  await postgres.stop();
});

/** The URL of a database the nodes of a test use. */
function nodesUrl(database: string): string {
  const url = new URL(postgres.url);
  url.pathname = `/${database}`;
  return url.toString();
}

/** `count` flowd nodes as child processes on one database. */
async function startNodes(database: string, count: number): Promise<ServerProcess[]> {
  const url = await postgres.createDatabase(database);
  const nodes: ServerProcess[] = [];
  // The first migrates; the others find the schema up to date.
  nodes.push(await startServerProcess(["--workflows", FIXTURES, "--db", url], { env: { FLOWD_LEASE_MS: String(LEASE_MS) } }));
  for (let i = 1; i < count; i++) {
    nodes.push(await startServerProcess(["--workflows", FIXTURES, "--db", url], { env: { FLOWD_LEASE_MS: String(LEASE_MS) } }));
  }
  return nodes;
}

/** Follows a run from `node` to its end, reconnecting (to the next node in `nodes`) when its node goes away. */
async function watchToEnd(nodes: () => ServerProcess[], runId: string, startAt: number, onFrame: (frame: Frame) => void = () => {}): Promise<Frame[]> {
  const events: Frame[] = [];
  let last = -1;
  for (let attempt = 0, at = startAt; attempt < 20; attempt++, at++) {
    const alive = nodes();
    const node = alive[at % alive.length]!;
    let client: TestClient;
    try {
      ({ client } = await TestClient.connect(node.wsUrl));
    } catch {
      continue;
    }
    client.send({ action: "reconnect", run_id: runId, last_event_index: last });
    try {
      for (;;) {
        const frame = await client.next(15_000);
        if (typeof frame.event_index !== "number" || frame.run_id !== runId) continue;
        events.push(frame);
        onFrame(frame);
        last = Math.max(last, frame.event_index);
        if (isTerminal(frame)) {
          await client.close();
          return events;
        }
      }
    } catch {
      // The node went away: reconnect elsewhere from the last index.
    }
  }
  throw new Error(`run ${runId} did not end; received up to #${last}`);
}

describe("many nodes on one PostgreSQL database", () => {
  it("a run started on A is watched from B and C; A is SIGKILLed; another node resumes it within the lease; every watcher gets every index once", async () => {
    const nodes = await startNodes("three_nodes", 3);
    const [a, b, c] = nodes as [ServerProcess, ServerProcess, ServerProcess];
    try {
      const { client: starter } = await TestClient.connect(a.wsUrl);
      starter.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 300, delayMs: 10 } });
      const first = await starter.next();
      const runId = first.run_id as string;
      expect(typeof runId).toBe("string");
      const alive = (): ServerProcess[] => nodes.filter((node) => node.child.exitCode === null && node.child.signalCode === null);
      let resumedAt: number | null = null;
      const onFrame = (frame: Frame): void => {
        if (frame.event === "WorkflowResumed") resumedAt ??= Date.now();
      };
      const watchers = [watchToEnd(alive, runId, 1, onFrame), watchToEnd(alive, runId, 2, onFrame)];
      await starter.take(40);
      a.child.kill("SIGKILL");
      await a.exited;
      const killedAt = Date.now();
      const results = await Promise.all(watchers);
      for (const events of results) {
        const indices = indicesOf(events);
        expect(indices).toEqual(range(indices.length));
        expect(events.at(-1)?.event).toBe("WorkflowCompleted");
        const resumed = events.find((e) => e.event === "WorkflowResumed");
        expect(resumed).toMatchObject({ after_crash: true, attempt: 2 });
      }
      const took = b.output().includes("took over a run") ? b : c;
      expect(took.output()).toContain("took over a run");
      // Its next event (WorkflowResumed) reached a watcher within the lease plus a second of the kill.
      expect(resumedAt).not.toBeNull();
      expect(resumedAt! - killedAt).toBeLessThan(LEASE_MS + 1000);
      const pool = testPool(nodesUrl("three_nodes"));
      const { rows } = await pool.query<{ n: number; distinct_n: number; last: number }>(
        "SELECT count(*)::int AS n, count(DISTINCT event_index)::int AS distinct_n, max(event_index) AS last FROM events WHERE run_id = $1",
        [runId],
      );
      await pool.end();
      expect(rows[0]).toMatchObject({ n: rows[0]!.last + 1, distinct_n: rows[0]!.last + 1 });
      // The CLI reads the same log from PostgreSQL.
      const cli = runFlowd(["runs", "events", runId, "--json", "--db", nodesUrl("three_nodes")]);
      expect(await cli.exited).toBe(0);
      const printed = cli.output().trim().split("\n").map((line) => (JSON.parse(line) as { event_index: number }).event_index);
      expect(printed).toEqual(range(rows[0]!.last + 1));
    } finally {
      await Promise.all(nodes.map((node) => node.stop()));
    }
  }, 60_000);

  it("a node stopped with SIGSTOP past its lease, then SIGCONT: its writes to the taken-over run are refused, no index is written twice, it logs that it lost the run", async () => {
    const nodes = await startNodes("paused_node", 2);
    const [a, b] = nodes as [ServerProcess, ServerProcess];
    try {
      const { client: starter } = await TestClient.connect(a.wsUrl);
      starter.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 400, delayMs: 10 } });
      const runId = (await starter.next()).run_id as string;
      await starter.take(20);
      a.child.kill("SIGSTOP");
      // B takes the run over once A's lease lapses, while A is stopped.
      const { client: onB } = await TestClient.connect(b.wsUrl);
      onB.send({ action: "reconnect", run_id: runId, last_event_index: -1 });
      const seen: Frame[] = [];
      for (let frame = await onB.next(10_000); ; frame = await onB.next(10_000)) {
        if (typeof frame.event_index === "number") seen.push(frame);
        if (frame.event === "WorkflowResumed") break;
      }
      a.child.kill("SIGCONT");
      seen.push(...(await onB.untilTerminal(20_000)).filter((frame) => typeof frame.event_index === "number"));
      await waitFor("node A to log that it lost the run", () => (a.output().includes("lost the run") ? true : undefined));
      expect(indicesOf(seen)).toEqual(range(seen.length));
      expect(seen.at(-1)?.event).toBe("WorkflowCompleted");
      const pool = testPool(nodesUrl("paused_node"));
      const { rows } = await pool.query<{ n: number; last: number; terminals: number }>(
        `SELECT count(*)::int AS n, max(event_index) AS last,
                count(*) FILTER (WHERE event IN ('WorkflowCompleted', 'WorkflowError', 'WorkflowCancelled'))::int AS terminals
           FROM events WHERE run_id = $1`,
        [runId],
      );
      await pool.end();
      expect(rows[0]).toEqual({ n: seen.length, last: seen.length - 1, terminals: 1 });
      await starter.close();
      await onB.close();
    } finally {
      if (a.child.exitCode === null) a.child.kill("SIGCONT");
      await Promise.all(nodes.map((node) => node.stop()));
    }
  }, 60_000);

  it("a watcher on another node gets each event live as stored, whatever its size: small ones come with the commit notice, large ones are read", async () => {
    const nodes = await startNodes("event_sizes", 2);
    const [a, b] = nodes as [ServerProcess, ServerProcess];
    try {
      // Around the notice's limit (8000 bytes) in characters and in UTF-8 bytes, text that needs escaping, and many small ones.
      const chunks = [
        "small",
        "x".repeat(6500),
        "y".repeat(7990),
        "✓".repeat(2300),
        "✓".repeat(3000),
        'say "hi"\n\ttab \\ back',
        "z".repeat(40_000),
        ...Array.from({ length: 30 }, (_, i) => `chunk ${i} ${"é".repeat(i * 40)}`),
      ];
      const { client: starter } = await TestClient.connect(a.wsUrl);
      starter.send({ action: "start-workflow", workflow_id: "verbatim", additional_data: { chunks, delayMs: 20 } });
      const runId = (await starter.next()).run_id as string;
      const { client: watcher } = await TestClient.connect(b.wsUrl);
      watcher.send({ action: "reconnect", run_id: runId, last_event_index: -1 });
      const frames = (await watcher.untilTerminal(20_000)).filter((frame) => typeof frame.event_index === "number");
      await starter.untilTerminal(20_000);
      const pool = testPool(nodesUrl("event_sizes"));
      const { rows } = await pool.query<{ payload: string }>("SELECT payload FROM events WHERE run_id = $1 ORDER BY event_index", [runId]);
      await pool.end();
      expect(indicesOf(frames)).toEqual(range(rows.length));
      expect(frames).toEqual(rows.map((row) => JSON.parse(row.payload) as Frame));
      expect(frames.filter((frame) => frame.event === "RunContent").map((frame) => frame.content)).toEqual(chunks);
      await starter.close();
      await watcher.close();
    } finally {
      await Promise.all(nodes.map((node) => node.stop()));
    }
  }, 60_000);

  it("the same idempotency key sent to two nodes at once starts one run, and both callers get it; another request with it is refused on either node", async () => {
    const nodes = await startNodes("shared_keys", 2);
    const [a, b] = nodes as [ServerProcess, ServerProcess];
    const start = async (node: ServerProcess, key: string, message = "same"): Promise<{ status: number; body: Record<string, unknown> }> => {
      const response = await fetch(`${node.url}/workflows/ticker/runs`, {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": key },
        body: JSON.stringify({ message, background: true, additional_data: { count: 3 } }),
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    try {
      for (let i = 0; i < 15; i++) {
        const [onA, onB] = await Promise.all([start(a, `key-${i}`), start(b, `key-${i}`)]);
        expect([onA.status, onB.status]).toEqual([202, 202]);
        expect(onB.body.run_id, `key-${i}`).toBe(onA.body.run_id);
      }
      const pool = testPool(nodesUrl("shared_keys"));
      const { rows } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM runs");
      await pool.end();
      expect(rows[0]!.n).toBe(15);
      const reused = await start(b, "key-0", "something else");
      expect(reused).toMatchObject({ status: 409, body: { code: "IDEMPOTENCY_KEY_REUSED" } });
    } finally {
      await Promise.all(nodes.map((node) => node.stop()));
    }
  }, 60_000);

  it("a run killed with its node while a Parallel branch ran beside its wait is taken over and resumed by another node", async () => {
    const nodes = await startNodes("busy_beside_wait", 2);
    const [a, b] = nodes as [ServerProcess, ServerProcess];
    const runJson = async (node: ServerProcess, runId: string): Promise<Record<string, unknown>> =>
      (await (await fetch(`${node.url}/runs/${runId}`)).json()) as Record<string, unknown>;
    try {
      const started = await fetch(`${a.url}/workflows/parallel-busy/runs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ message: "m", background: true, additional_data: { sleepMs: 4000 } }),
      });
      const runId = String(((await started.json()) as Record<string, unknown>).run_id);
      await waitFor("the run to wait", async () => ((await runJson(a, runId)).status === "waiting" ? true : undefined));
      await new Promise((resolve) => setTimeout(resolve, 300));
      a.child.kill("SIGKILL");
      await a.exited;
      const done = await waitFor("the run to complete on B", async () => {
        const run = await runJson(b, runId);
        return run.status === "completed" ? run : undefined;
      }, 20_000);
      expect(done.content).toEqual({ sleepy: "rested", busy: "worked" });
      const events = await watchToEnd(() => [b], runId, 0);
      expect(indicesOf(events)).toEqual(range(events.length));
      expect(events.find((e) => e.event === "WorkflowResumed")).toMatchObject({ after_crash: true });
      expect(events.filter((e) => e.event === "WaitCompleted")).toHaveLength(1);
      expect(b.output()).toContain("took over a run whose node stopped while a branch of it ran beside a wait");
    } finally {
      await Promise.all(nodes.map((node) => node.stop()));
    }
  }, 60_000);

  it("a node stopped with SIGTERM hands its runs over at once: another node goes on with them long before their lease would lapse", async () => {
    const url = await postgres.createDatabase("handover");
    // A lease far longer than the test waits: only a handover lets B take the run in time.
    const env = { FLOWD_LEASE_MS: "60000" };
    const a = await startServerProcess(["--workflows", FIXTURES, "--db", url], { env });
    const b = await startServerProcess(["--workflows", FIXTURES, "--db", url], { env });
    try {
      const { client: starter } = await TestClient.connect(a.wsUrl);
      starter.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 100_000, delayMs: 10 } });
      const runId = (await starter.next()).run_id as string;
      await starter.take(20);
      const stoppedAt = Date.now();
      expect(await a.stop()).toBe(0);
      const seenOnA = indicesOf(starter.received.filter((frame) => typeof frame.event_index === "number"));
      const { client: watcher } = await TestClient.connect(b.wsUrl);
      watcher.send({ action: "reconnect", run_id: runId, last_event_index: Math.max(...seenOnA) });
      const onB: Frame[] = [];
      while (onB.filter((frame) => frame.event === "RunContent").length < 5 || !onB.some((frame) => frame.event === "WorkflowResumed")) {
        const frame = await watcher.next(15_000);
        if (typeof frame.event_index === "number") onB.push(frame);
      }
      expect(Date.now() - stoppedAt).toBeLessThan(20_000);
      const indices = [...seenOnA, ...indicesOf(onB)];
      expect(indices).toEqual(range(indices.length));
      const events = onB;
      // Stopped by the shutdown, not crashed: resumed as a paused run is.
      expect(events.find((e) => e.event === "WorkflowResumed")).toMatchObject({ after_crash: false });
      expect(b.output()).toContain("took over a run");
      watcher.send({ action: "cancel-workflow", run_id: runId });
      expect((await watcher.untilTerminal(15_000)).at(-1)?.event).toBe("WorkflowCancelled");
      await watcher.close();
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  }, 60_000);

  it("cancel, signal and continue sent to a node that does not hold the run take effect", async () => {
    const nodes = await startNodes("two_nodes", 2);
    const [a, b] = nodes as [ServerProcess, ServerProcess];
    try {
      const { client: onA } = await TestClient.connect(a.wsUrl);
      onA.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 100_000, delayMs: 5 } });
      const runId = (await onA.next()).run_id as string;
      await onA.take(5);
      const { client: onB } = await TestClient.connect(b.wsUrl);
      onB.send({ action: "cancel-workflow", run_id: runId });
      expect(await onB.next()).toMatchObject({ event: "cancel_requested", run_id: runId });
      const frames = await onA.untilTerminal(10_000);
      expect(frames.at(-1)?.event).toBe("WorkflowCancelled");

      // A run that waits holds no node: a signal sent to B ends the wait A opened.
      onA.send({ action: "start-workflow", workflow_id: "signalled", message: "m" });
      const waiting = (await onA.next()).run_id as string;
      for (let frame = await onA.next(); frame.event !== "WaitStarted"; frame = await onA.next());
      onB.send({ action: "signal-workflow", run_id: waiting, name: "approved", payload: { by: "bea" } });
      // Delivered at once, or kept until A has let the run go a moment later: either way the wait ends with it.
      expect(await onB.next()).toMatchObject({ event: "signal_accepted", run_id: waiting });
      const rest = await onA.untilTerminal(10_000);
      expect(rest.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: "approved by bea" });

      // A paused run holds no node either: a person's continue sent to B goes on from where A paused it.
      onA.send({ action: "start-workflow", workflow_id: "approval", message: "memo" });
      const paused = (await onA.next()).run_id as string;
      for (let frame = await onA.next(); frame.event !== "WorkflowPaused"; frame = await onA.next());
      const answer = await fetch(`${b.url}/workflows/approval/runs/${paused}/continue`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ step_requirements: [{ step_id: "1", confirmed: true }], stream: false }),
      });
      expect(answer.status).toBe(200);
      expect(await answer.json()).toMatchObject({ run_id: paused, status: "completed" });
      const after = await onA.untilTerminal(10_000);
      expect(after.map((frame) => frame.event)).toContain("StepContinued");
      expect(after.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: "receipt for sent (Draft: memo)" });
      await onA.close();
      await onB.close();
    } finally {
      await Promise.all(nodes.map((node) => node.stop()));
    }
  }, 60_000);
});
