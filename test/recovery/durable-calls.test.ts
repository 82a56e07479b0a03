import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { range, tempDir } from "../helpers/server.ts";
import { TestClient, indicesOf, type Frame } from "../helpers/ws-client.ts";
import { REPO_ROOT, startServerProcess } from "../../testkit/server-process.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

let temp: ReturnType<typeof tempDir>;
beforeAll(() => {
  temp = tempDir();
});
afterAll(() => temp.remove());

describe("input.step: a durable call runs once across kill -9", () => {
  it("a side effect made in input.step is not repeated when the step runs again after a crash, and the call returns the stored result", async () => {
    const db = join(temp.dir, "memoized.db");
    const effectsFile = join(temp.dir, "charges.txt");
    const releaseFile = join(temp.dir, "release");
    const first = await startServerProcess(["--workflows", FIXTURES, "--db", db]);
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "memoized", additional_data: { effectsFile, releaseFile } });
    const before: Frame[] = [];
    // Both calls are stored (and sent) before the step waits for the release file.
    while (before.filter((frame) => frame.event === "SubStepCompleted").length < 2) before.push(await client.next());
    const runId = String(before[0]?.run_id);
    first.child.kill("SIGKILL");
    expect(await first.exited).toBe("SIGKILL");

    const second = await startServerProcess(["--workflows", FIXTURES, "--db", db]);
    try {
      writeFileSync(releaseFile, "");
      const { client: again } = await TestClient.connect(second.wsUrl);
      again.send({ action: "reconnect", run_id: runId, last_event_index: before.at(-1)?.event_index });
      // A run that finished before the reconnect is replayed from index 0: keep what came after the crash.
      const last = Number(before.at(-1)?.event_index);
      const after = (await again.untilTerminal()).filter((frame) => typeof frame.event_index === "number" && frame.event_index > last);
      await again.close();
      // The step ran again from its top; both calls returned their stored results without running or recording again.
      expect(after.map((frame) => frame.event)).toEqual(["WorkflowResumed", "StepStarted", "StepCompleted", "WorkflowCompleted"]);
      const frames = [...before, ...after];
      expect(indicesOf(frames)).toEqual(range(frames.length));
      const calls = frames.filter((frame) => frame.event === "SubStepCompleted");
      expect(calls.map((frame) => [frame.sub_step_name, frame.sub_step_key])).toEqual([
        ["charge-card", "0~0"],
        ["stamp", "0~1"],
      ]);
      expect(after.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: { receipt: calls[0]?.content, stamp: calls[1]?.content } });
      // Made JSON-safe before it was stored: the first attempt got what a replay gets.
      expect(calls[1]?.content).not.toHaveProperty("missing");
    } finally {
      await second.stop();
    }
    const charges = existsSync(effectsFile) ? readFileSync(effectsFile, "utf8").trim().split("\n") : [];
    expect(charges).toEqual([`${runId} charged`]);
  });
});
