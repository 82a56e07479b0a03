import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "../helpers/server.ts";
import { crashTrial, referenceOutput, type TrialOutcome } from "./crash-trials.ts";

// Trials are split over two files so vitest runs them on both cores.
const SEEDS = [201, 202, 203, 204, 205, 206, 207, 208, 209, 210];

let temp: ReturnType<typeof tempDir>;
let expected: unknown;
beforeAll(async () => {
  temp = tempDir();
  expected = await referenceOutput();
});
const outcomes: TrialOutcome[] = [];
afterAll(() => temp.remove());

describe("kill -9 at a random moment, restart, reconnect (I1, I5)", () => {
  it.each(SEEDS)("seed %i: nothing received is lost, every run finishes once, no completed step reruns", async (seed) => {
    outcomes.push(await crashTrial(seed, temp.dir, expected));
  });

  it("the kills landed mid-run: runs were resumed from checkpoints, partial steps superseded", () => {
    const resumed = outcomes.reduce((n, o) => n + o.resumedRuns, 0);
    const restored = outcomes.reduce((n, o) => n + o.restoredSteps, 0);
    const superseded = outcomes.reduce((n, o) => n + o.supersededEvents, 0);
    console.log(`${outcomes.length} trials: ${resumed} runs resumed, ${restored} steps restored, ${superseded} events superseded`);
    expect(outcomes).toHaveLength(SEEDS.length);
    expect(resumed).toBeGreaterThanOrEqual(SEEDS.length);
    expect(restored).toBeGreaterThan(0);
    expect(superseded).toBeGreaterThan(0);
  });
});
