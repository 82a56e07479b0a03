import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { range, storedIndices, tempDir } from "../helpers/server.ts";
import { REPO_ROOT, runFlowd, startServerProcess } from "../../testkit/server-process.ts";
import { TestClient, indicesOf } from "../helpers/ws-client.ts";

let temp: ReturnType<typeof tempDir>;
beforeEach(() => {
  temp = tempDir();
});
afterEach(() => {
  temp.remove();
});

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

describe("flowd serve (a real child process)", () => {
  it("creates ./data/flowd.db with its folder on first start, serves /health, and runs the built-in workflow", async () => {
    const server = await startServerProcess([], { cwd: temp.dir, env: { FLOWD_DEMO_PACE_MS: "1" } });
    try {
      expect(existsSync(join(temp.dir, "data", "flowd.db"))).toBe(true);
      expect(server.output()).toContain("offline demo model in use");
      const health = await fetch(`${server.url}/health`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: "ok" });

      const { client } = await TestClient.connect(server.wsUrl);
      client.send({ action: "start-workflow", workflow_id: "content-creation-workflow", message: "AI agents" });
      const frames = await client.untilTerminal();
      await client.close();
      expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
      expect(frames.length).toBeGreaterThan(60);
      expect(frames.filter((f) => f.event === "StepCompleted").map((f) => f.step_name)).toEqual([
        "Research Step",
        "Content Planning Step",
      ]);

      // The file is readable by another process while the server runs, as with the sqlite3 shell.
      const reader = new Database(join(temp.dir, "data", "flowd.db"), { readonly: true });
      expect(storedIndices(reader, frames[0]?.run_id as string)).toEqual(indicesOf(frames));
      reader.close();
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it("serves the workflows of a --workflows TypeScript module, on --db", async () => {
    const db = join(temp.dir, "custom.db");
    const server = await startServerProcess(["--workflows", FIXTURES, "--db", db]);
    try {
      const { client } = await TestClient.connect(server.wsUrl);
      client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 3 } });
      const frames = await client.untilTerminal();
      expect(indicesOf(frames)).toEqual(range(7));
      const error = await client.request({ action: "start-workflow", workflow_id: "content-creation-workflow-2" });
      expect(error).toMatchObject({ event: "error", code: "WORKFLOW_NOT_FOUND" });
      expect(error.error).toContain("ticker");
      await client.close();
      expect(existsSync(db)).toBe(true);
    } finally {
      await server.stop();
    }
  });

  it("refuses to start on a duplicate workflow id, naming both workflows", async () => {
    const module = join(temp.dir, "dupes.ts");
    const definition = join(REPO_ROOT, "src/workflows/definition.ts");
    writeFileSync(
      module,
      `import { Step, Workflow } from ${JSON.stringify(definition)};
       const step = Step({ name: "s", executor: () => 1 });
       export default [
         Workflow({ id: "same", name: "First One", steps: [step] }),
         Workflow({ id: "same", name: "Second One", steps: [step] }),
       ];`,
    );
    const proc = runFlowd(["serve", "--port", "0", "--db", join(temp.dir, "x.db"), "--workflows", module]);
    expect(await proc.exited).toBe(1);
    expect(proc.output()).toContain('Duplicate workflow id "same"');
    expect(proc.output()).toContain("First One");
    expect(proc.output()).toContain("Second One");
  });

  it("explains a bad port or a missing workflows module and exits 1", async () => {
    const badPort = runFlowd(["serve", "--port", "eighty", "--db", join(temp.dir, "x.db")]);
    expect(await badPort.exited).toBe(1);
    expect(badPort.output()).toContain("--port / PORT must be a whole number from 0 to 65535");

    const missing = runFlowd(["serve", "--port", "0", "--workflows", "./nope.ts"], { cwd: temp.dir });
    expect(await missing.exited).toBe(1);
    expect(missing.output()).toContain('Workflows module "./nope.ts" does not exist');
  });

  it("flowd migrate creates and migrates the database, then exits", async () => {
    const db = join(temp.dir, "m", "flowd.db");
    const proc = runFlowd(["migrate", "--db", db]);
    expect(await proc.exited).toBe(0);
    const reader = new Database(db, { readonly: true });
    const tables = reader.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all();
    expect(tables).toEqual(expect.arrayContaining([{ name: "events" }, { name: "runs" }]));
    reader.close();
  });
});
