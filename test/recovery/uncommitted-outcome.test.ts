import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tempDir, waitFor } from "../helpers/server.ts";
import { TestClient } from "../helpers/ws-client.ts";
import { REPO_ROOT, startServerProcess } from "../../testkit/server-process.ts";
import { seededRandom } from "./crash-trials.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");
const RUNS_PER_TRIAL = 24;
const SEEDS = Array.from({ length: 20 }, (_, i) => 301 + i);

let temp: ReturnType<typeof tempDir>;
beforeAll(() => {
  temp = tempDir();
});
afterAll(() => temp.remove());

/** What the trials saw, so the suite can check that kills really landed between steps. */
let valuesWritten = 0;
let runsResumed = 0;

/**
 * One trial of I8: `random-handoff` runs (a step draws a random value, the next writes it
 * to a file as its first act), SIGKILL at a seeded moment, restart, let every run finish.
 * A value written by a step must be its previous step's stored output: if the next step
 * had started before that output was committed, a kill could lose it, the resumed run
 * would draw another, and the file would hold a value nothing stored.
 */
async function trial(seed: number): Promise<void> {
  const random = seededRandom(seed);
  const db = join(temp.dir, `i8-${seed}.db`);
  const effectsFile = join(temp.dir, `i8-effects-${seed}.txt`);
  const delayMs = Math.floor(random() * 3);
  const killAfterMs = Math.floor(random() * 30);
  const context = `seed ${seed} (delay ${delayMs} ms, kill ${killAfterMs} ms after the first run started)`;

  const first = await startServerProcess(["--workflows", FIXTURES, "--db", db]);
  const { client } = await TestClient.connect(first.wsUrl);
  for (let i = 0; i < RUNS_PER_TRIAL; i++) {
    client.send({ action: "start-workflow", workflow_id: "random-handoff", message: "", additional_data: { delayMs, effectsFile } });
  }
  expect((await client.next()).event, context).toBe("WorkflowStarted");
  await sleep(killAfterMs);
  first.child.kill("SIGKILL");
  expect(await first.exited, context).toBe("SIGKILL");
  await client.closed;

  const second = await startServerProcess(["--workflows", FIXTURES, "--db", db]);
  const reader = new Database(db, { readonly: true });
  try {
    await waitFor(`every run of ${context} to finish`, () => {
      const { open } = reader.prepare("SELECT count(*) AS open FROM runs WHERE status NOT IN ('completed', 'error', 'cancelled')").get() as { open: number };
      return open === 0 ? true : undefined;
    }, 20_000);
    const statuses = reader.prepare("SELECT DISTINCT status FROM runs").all() as { status: string }[];
    expect(statuses.map((row) => row.status), context).toEqual(["completed"]);
    const lines = existsSync(effectsFile) ? readFileSync(effectsFile, "utf8").trim().split("\n").filter(Boolean) : [];
    const drawn = reader.prepare<[string, string], { output: string }>("SELECT output FROM step_checkpoints WHERE run_id = ? AND step_path = ?");
    for (const line of lines) {
      const [runId, usePath, value] = line.split(" ");
      const drawPath = String(Number(usePath) - 1);
      const stored = drawn.get(runId!, drawPath);
      expect(stored, `${context}: ${runId} step ${drawPath} has no stored output, yet step ${usePath} acted on it`).toBeDefined();
      expect(JSON.parse(stored!.output), `${context}: ${runId} step ${usePath} acted on an output that was never stored`).toBe(value);
    }
    valuesWritten += lines.length;
    const resumed = reader.prepare("SELECT count(DISTINCT run_id) AS n FROM events WHERE event = 'WorkflowResumed'").get() as { n: number };
    runsResumed += resumed.n;
  } finally {
    reader.close();
    expect(await second.stop()).toBe(0);
  }
}

describe("nothing runs on an uncommitted outcome (I8)", () => {
  it.each(SEEDS)("seed %i: after kill -9 and restart, every value a step acted on is its previous step's stored output", async (seed) => {
    await trial(seed);
  });

  it("the kills landed while runs were between steps", () => {
    console.log(`${SEEDS.length} trials: ${valuesWritten} values written, ${runsResumed} runs resumed`);
    expect(runsResumed).toBeGreaterThanOrEqual(SEEDS.length);
    expect(valuesWritten).toBeGreaterThan(SEEDS.length * RUNS_PER_TRIAL);
  });
});
