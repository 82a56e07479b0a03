import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT, runFlowd } from "../../testkit/server-process.ts";

/** `flowd verify` (DESIGN §13): passes against flowd, and catches a server that loses events. */

const BROKEN = join(REPO_ROOT, "test/fixtures/broken-server.mjs");

interface Totals {
  received: number;
  lost: number;
  duplicated: number;
  outOfOrder: number;
  changed: number;
  unfinished: number;
}

describe("flowd verify", () => {
  it("passes against flowd: five trials of runs watched through SIGKILLs, nothing lost, duplicated, out of order or changed", async () => {
    const verify = runFlowd(["verify", "--trials", "5", "--runs", "3", "--kills", "2"]);
    expect(await verify.exited, verify.output()).toBe(0);
    const output = verify.output();
    expect(output).toMatch(/5 trials × 3 runs of content-creation-workflow, 2 SIGKILLs each/);
    const total = /total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/.exec(output);
    expect(total, output).not.toBeNull();
    const [kills, received, ...problems] = total!.slice(1).map(Number);
    // The server was killed mid-run (a kill planned after every run finished does not happen, and is said).
    expect(kills, output).toBeGreaterThanOrEqual(3);
    expect(received).toBeGreaterThan(1000);
    expect(problems).toEqual([0, 0, 0, 0, 0]);
    expect(output).toContain("OK: nothing lost");
  }, 180_000);

  it("fails, naming the exact loss, against a server that skips an index", async () => {
    const verify = runFlowd(["verify", "--trials", "1", "--runs", "2", "--kills", "0", "--json", "--server", `${process.execPath} ${BROKEN} --mode skip`]);
    expect(await verify.exited, verify.output()).toBe(1);
    const report = JSON.parse(verify.output().slice(verify.output().indexOf("{"))) as { total: Totals; trials: { runs: { lost: number }[] }[] };
    expect(report.total).toMatchObject({ lost: 2, duplicated: 0, outOfOrder: 0, changed: 0, unfinished: 0 });
    expect(report.trials[0]!.runs.map((run) => run.lost)).toEqual([1, 1]);
  }, 60_000);

  it("fails against a server that delivers events and then loses them in a SIGKILL", async () => {
    const verify = runFlowd(["verify", "--trials", "2", "--runs", "2", "--kills", "1", "--seed", "7", "--server", `${process.execPath} ${BROKEN} --mode lose`]);
    expect(await verify.exited, verify.output()).toBe(1);
    const total = /total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/.exec(verify.output());
    const [kills, , lost, duplicated, outOfOrder, changed] = total!.slice(1).map(Number);
    expect(kills).toBe(2);
    expect(changed, verify.output()).toBeGreaterThan(0);
    expect([lost, duplicated, outOfOrder]).toEqual([0, 0, 0]);
    expect(verify.output()).toMatch(/FAILED: see the trials marked ✗ \(repeat them with --seed 7\)/);
  }, 60_000);
});
