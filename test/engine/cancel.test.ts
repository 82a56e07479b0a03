import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { range, startServer, type TestServer } from "../helpers/server.ts";
import { TestClient, indicesOf } from "../helpers/ws-client.ts";

let t: TestServer;
beforeAll(async () => {
  t = await startServer();
});
afterAll(async () => {
  await t.close();
});

describe("cancel-workflow", () => {
  it("ends a running run with WorkflowCancelled at its next content boundary", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 1000, delayMs: 10 } });
    const first = await client.take(5);
    const runId = first[0]?.run_id as string;

    const { client: canceller } = await TestClient.connect(t.wsUrl);
    expect(await canceller.request({ action: "cancel-workflow", run_id: runId })).toMatchObject({
      event: "cancel_requested",
      run_id: runId,
    });
    const rest = await client.untilTerminal(5000);
    expect(rest.at(-1)?.event).toBe("WorkflowCancelled");
    const all = [...first, ...rest];
    expect(indicesOf(all)).toEqual(range(all.length));
    expect(all.filter((f) => f.event === "RunContent").length).toBeLessThan(100);

    const [row] = await t.query<{ status: string; cancel_requested_at: number | null; finished_at: number | null }>(
      "SELECT status, cancel_requested_at, finished_at FROM runs WHERE run_id = ?",
      runId,
    );
    expect(row!.status).toBe("cancelled");
    expect(row!.cancel_requested_at).not.toBeNull();
    expect(row!.finished_at).not.toBeNull();
    expect(await t.storedIndices(runId)).toEqual(range(all.length));

    // A finished run cannot be cancelled again.
    expect(await canceller.request({ action: "cancel-workflow", run_id: runId })).toMatchObject({
      event: "error",
      code: "RUN_FINISHED",
    });
    await client.close();
    await canceller.close();
  });
});
