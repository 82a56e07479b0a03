import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "./helpers/server.ts";
import { REPO_ROOT, runFlowd, runNode, startServerProcess, type ServerProcess } from "../testkit/server-process.ts";
import { waitFor } from "./helpers/server.ts";
import { TestClient } from "./helpers/ws-client.ts";

let temp: ReturnType<typeof tempDir>;
beforeEach(() => {
  temp = tempDir();
});
afterEach(() => {
  temp.remove();
});

async function runGreeter(server: ServerProcess): Promise<void> {
  const { client } = await TestClient.connect(server.wsUrl);
  client.send({ action: "start-workflow", workflow_id: "greeter", message: "hi there" });
  const frames = await client.untilTerminal();
  await client.close();
  expect(frames.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: { count: 8, stream: "Hello, HI THERE" } });
  expect(frames.some((f) => f.event === "CustomEvent" && f.name === "progress")).toBe(true);
}

describe("the README's runnable examples", () => {
  it("npx flowd serve --workflows ./examples/greeter.ts serves the greeter", async () => {
    const server = await startServerProcess(["--workflows", "./examples/greeter.ts", "--db", join(temp.dir, "a.db")]);
    try {
      await runGreeter(server);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it("examples/serve.ts serves the greeter from code with serve()", async () => {
    const tsxCli = join(REPO_ROOT, "node_modules/tsx/dist/cli.mjs");
    const server = await startServerProcess([], {
      nodeArgs: [tsxCli, "examples/serve.ts"],
      env: { PORT: "0", FLOWD_DB: join(temp.dir, "b.db") },
    });
    try {
      await runGreeter(server);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it("examples/reconnect.ts watches a run, disconnects, and catches up with no gap or duplicate", async () => {
    const server = await startServerProcess(["--db", join(temp.dir, "c.db")], { env: { FLOWD_DEMO_PACE_MS: "60" } });
    try {
      const tsxCli = join(REPO_ROOT, "node_modules/tsx/dist/cli.mjs");
      const client = runNode([tsxCli, "examples/reconnect.ts"], { env: { FLOWD_URL: server.wsUrl } });
      expect(await client.exited).toBe(0);
      const output = client.output();
      expect(output).toContain("[20] event_index=19");
      expect(output).toMatch(/catch_up: [1-9]\d* missed events/);
      expect(output).toContain("subscribed: status=running");
      expect(output).toMatch(/Run finished: WorkflowCompleted; \d+ events, no gaps, no duplicates/);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it("examples/approval.ts: an agent drafts, a person approves from the CLI, the run sleeps, then a signal ends its wait", async () => {
    const server = await startServerProcess(["--workflows", "./examples/approval.ts", "--db", join(temp.dir, "d.db")], {
      env: { FLOWD_DEMO_PACE_MS: "1" },
    });
    const flowd = async (args: string[]): Promise<string> => {
      const proc = runFlowd([...args, "--url", server.url]);
      expect(await proc.exited, proc.output()).toBe(0);
      return proc.output();
    };
    const status = async (runId: string): Promise<Record<string, unknown>> =>
      (await (await fetch(`${server.url}/runs/${runId}`)).json()) as Record<string, unknown>;
    try {
      const started = await fetch(`${server.url}/workflows/approval/runs`, {
        method: "POST",
        body: new URLSearchParams({ message: "our launch", background: "true" }),
      });
      const runId = String(((await started.json()) as Record<string, unknown>).run_id);
      await waitFor("the run to pause for approval", async () => ((await status(runId)).status === "paused" ? true : undefined), 30_000);
      expect(await flowd(["runs", "continue", runId, "--confirm"])).toContain("continued; it is now waiting");
      await waitFor("the run to wait for the reply", async () => {
        const run = await status(runId);
        return (run.waiting_for as { kind?: string } | null)?.kind === "signal" ? true : undefined;
      }, 15_000);
      expect(await flowd(["runs", "signal", runId, "reply", "--data", '{"text": "Looks good"}'])).toContain("ended run");
      const done = await waitFor("the run to complete", async () => {
        const run = await status(runId);
        return run.status === "completed" ? run : undefined;
      });
      expect(done.content).toBe("reply: Looks good");
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});
