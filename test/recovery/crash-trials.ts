import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { range, startServer, tempDir } from "../helpers/server.ts";
import { REPO_ROOT, startServerProcess } from "../../testkit/server-process.ts";
import { TestClient, indicesOf, isTerminal, type Frame } from "../helpers/ws-client.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");
const MESSAGE = "crash test";
const TERMINAL = new Set(["WorkflowCompleted", "WorkflowError", "WorkflowCancelled"]);

import { seededRandom } from "../../src/ops/seeded-random.ts";

export { seededRandom };

/** The output of `nested-crash` run start to finish with no crash (the reference a crashed run must match). */
export async function referenceOutput(): Promise<unknown> {
  const t = await startServer();
  try {
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "nested-crash", message: MESSAGE, additional_data: { delayMs: 1 } });
    const frames = await client.untilTerminal();
    await client.close();
    expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
    return frames.at(-1)?.content;
  } finally {
    await t.close();
  }
}

export interface StoredEvent {
  event_index: number;
  event: string;
  payload: string;
}

/**
 * One crash trial: start a server process, start `runs` runs of `nested-crash` each
 * watched by its own client, SIGKILL the server at a seeded random moment, restart it
 * on the same file, reconnect every client from its last index, and check I1, I5, one
 * terminal event per run, the final output, and that no checkpointed step ran again.
 */
/** What a trial exercised, so the suite can check that the crashes really hit running runs. */
export interface TrialOutcome {
  resumedRuns: number;
  restoredSteps: number;
  supersededEvents: number;
}

/** Where a trial's nodes store, and how the trial reads what they stored. */
export interface TrialStore {
  /** The `--db` every node of the trial is given. */
  db: string;
  events(runId: string): Promise<StoredEvent[]>;
  checkpoints(runId: string): Promise<{ step_path: string; attempt: number }[]>;
  close(): Promise<void>;
}

/** A trial's SQLite file (one node, restarted after the kill). */
function sqliteTrialStore(db: string): TrialStore {
  let reader: Database.Database | null = null;
  const open = (): Database.Database => (reader ??= new Database(db, { readonly: true }));
  return {
    db,
    events: async (runId) =>
      open().prepare<[string], StoredEvent>("SELECT event_index, event, payload FROM events WHERE run_id = ? ORDER BY event_index").all(runId),
    checkpoints: async (runId) =>
      open()
        .prepare<[string], { step_path: string; attempt: number }>("SELECT step_path, attempt FROM step_checkpoints WHERE run_id = ? AND step_name IS NOT NULL")
        .all(runId),
    close: async () => {
      reader?.close();
    },
  };
}

/** How a trial's service goes on after the kill. */
export interface TrialNodes {
  /** The store of the trial with this seed. */
  store(seed: number, dir: string): Promise<TrialStore>;
  /** Environment of every node. */
  env?: Record<string, string>;
  /** true: a second node runs beside the first from the start and takes its runs over (PostgreSQL); false: the killed node is restarted. */
  takeover: boolean;
}

/** One node on a SQLite file, restarted on the same file after the kill. */
export const RESTART_ON_SQLITE: TrialNodes = { store: async (seed, dir) => sqliteTrialStore(join(dir, `trial-${seed}.db`)), takeover: false };

export async function crashTrial(seed: number, dir: string, expectedOutput: unknown, runs = 3, nodes: TrialNodes = RESTART_ON_SQLITE): Promise<TrialOutcome> {
  const outcome: TrialOutcome = { resumedRuns: 0, restoredSteps: 0, supersededEvents: 0 };
  const random = seededRandom(seed);
  const store = await nodes.store(seed, dir);
  const db = store.db;
  const nodeOptions = nodes.env ? { env: nodes.env } : {};
  const effectsFile = join(dir, `effects-${seed}.txt`);
  const delayMs = 5 + Math.floor(random() * 20);
  // The workflow streams about 19 chunks delayMs apart: most kills land mid-run, a few after it ends.
  const killAfterMs = Math.floor(random() * 22 * delayMs);
  const context = `seed ${seed} (delay ${delayMs} ms, kill after ${killAfterMs} ms)`;

  const first = await startServerProcess(["--workflows", FIXTURES, "--db", db], nodeOptions);
  // Taking over: the second node serves from the start, and holds none of the first's runs until their leases lapse.
  const standby = nodes.takeover ? await startServerProcess(["--workflows", FIXTURES, "--db", db], nodeOptions) : null;
  const watchers: { client: TestClient; runId: string }[] = [];
  for (let i = 0; i < runs; i++) {
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({
      action: "start-workflow",
      workflow_id: "nested-crash",
      message: MESSAGE,
      additional_data: { delayMs, effectsFile },
    });
    const started = await client.next().catch((error: unknown) => {
      throw new Error(`${context}: no answer to a start (${String(error)}); the node said:\n${first.output().slice(-4000)}`);
    });
    watchers.push({ client, runId: started.run_id as string });
  }
  await sleep(killAfterMs);
  first.child.kill("SIGKILL");
  expect(await first.exited, context).toBe("SIGKILL");
  await Promise.all(watchers.map((w) => w.client.closed));

  const second = standby ?? (await startServerProcess(["--workflows", FIXTURES, "--db", db], nodeOptions));
  try {
    const afterRestart = new Map<string, Frame[]>();
    for (const { client, runId } of watchers) {
      const seen = indicesOf(client.received);
      const last = seen.length > 0 ? Math.max(...seen) : null;
      const { client: again } = await TestClient.connect(second.wsUrl);
      again.send({ action: "reconnect", run_id: runId, last_event_index: last });
      const frames = await again.untilTerminal(20_000);
      afterRestart.set(runId, frames);
      await again.close();
    }

    const effects = existsSync(effectsFile)
      ? readFileSync(effectsFile, "utf8").trim().split("\n").filter(Boolean).map((line) => line.split(" "))
      : [];
    for (const { client, runId } of watchers) {
      const stored = await store.events(runId);
      // I1: indices 0..N-1.
      expect(stored.map((e) => e.event_index), context).toEqual(range(stored.length));
      // I5: everything a client saw before the crash is stored, same index, same payload.
      const beforeCrash = client.received.filter((f) => typeof f.event_index === "number");
      for (const frame of beforeCrash) {
        expect(JSON.parse(stored[frame.event_index as number]?.payload ?? "null"), context).toEqual(frame);
      }
      // Exactly one terminal event, last, and the same result as an uninterrupted run.
      const terminals = stored.filter((e) => TERMINAL.has(e.event));
      expect(
        terminals.map((e) => e.event),
        `${context}: ${terminals.map((e) => e.payload).join("\n")}\nthe node that finished it said:\n${second.output().slice(-6000)}`,
      ).toEqual(["WorkflowCompleted"]);
      expect(stored.at(-1)?.event, context).toBe("WorkflowCompleted");
      expect(JSON.parse(stored.at(-1)?.payload ?? "{}").content, context).toEqual(expectedOutput);
      // The client, before and after the crash, has seen every index.
      const frames = afterRestart.get(runId) ?? [];
      const union = new Set([...indicesOf(beforeCrash), ...indicesOf(frames)]);
      expect(union.size, context).toBe(stored.length);
      expect(frames.filter(isTerminal).length, context).toBe(1);
      // Resumed runs say so, and take up the index sequence where it stopped.
      const resumed = stored.filter((e) => e.event === "WorkflowResumed");
      if (resumed.length > 0) {
        const body = JSON.parse(resumed[0]?.payload ?? "{}") as Record<string, unknown>;
        expect(body, context).toMatchObject({ attempt: 2, after_crash: true });
        outcome.resumedRuns += 1;
        outcome.restoredSteps += body.restored_steps as number;
        if (typeof body.superseded_from_index === "number") {
          expect(body.superseded_to_index, context).toBe(resumed[0]!.event_index - 1);
          expect(stored[body.superseded_from_index]?.event, context).toBe("StepStarted");
          outcome.supersededEvents += (body.superseded_to_index as number) - body.superseded_from_index + 1;
        }
      }

      // No step with a checkpoint ran again after the attempt that completed it.
      const checkpoints = await store.checkpoints(runId);
      const runEffects = effects.filter(([id]) => id === runId);
      for (const checkpoint of checkpoints) {
        const executions = runEffects.filter(([, path]) => path === checkpoint.step_path).map(([, , attempt]) => Number(attempt));
        if (executions.length === 0) continue; // a composite's checkpoint: it has no side effect of its own
        expect(Math.max(...executions), `${context}: ${checkpoint.step_path} ran after its checkpoint`).toBe(checkpoint.attempt);
        expect(executions.filter((a) => a === checkpoint.attempt).length, context).toBe(1);
      }
    }
  } finally {
    await store.close();
    expect(await second.stop()).toBe(0);
  }
  return outcome;
}

/**
 * The crash suite for a list of seeds: one test per trial, then a check that the kills
 * really landed mid-run. Trials are split over two files so vitest runs them on both cores.
 */
export function crashSuite(seeds: readonly number[], nodes: TrialNodes = RESTART_ON_SQLITE): void {
  let temp: ReturnType<typeof tempDir>;
  let expected: unknown;
  const outcomes: TrialOutcome[] = [];
  beforeAll(async () => {
    temp = tempDir();
    expected = await referenceOutput();
  });
  afterAll(() => temp.remove());

  const how = nodes.takeover ? "another node takes the runs over, reconnect to it" : "restart, reconnect";
  describe(`kill -9 at a random moment, ${how} (I1, I5)`, () => {
    it.each(seeds)("seed %i: nothing received is lost, every run finishes once, no completed step reruns", async (seed) => {
      outcomes.push(await crashTrial(seed, temp.dir, expected, 3, nodes));
    });

    it("the kills landed mid-run: runs were resumed from checkpoints, partial steps superseded", () => {
      const resumed = outcomes.reduce((n, o) => n + o.resumedRuns, 0);
      const restored = outcomes.reduce((n, o) => n + o.restoredSteps, 0);
      const superseded = outcomes.reduce((n, o) => n + o.supersededEvents, 0);
      console.log(`${outcomes.length} trials: ${resumed} runs resumed, ${restored} steps restored, ${superseded} events superseded`);
      expect(outcomes).toHaveLength(seeds.length);
      expect(resumed).toBeGreaterThanOrEqual(seeds.length);
      expect(restored).toBeGreaterThan(0);
      expect(superseded).toBeGreaterThan(0);
    });
  });
}
