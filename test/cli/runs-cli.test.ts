import { spawn } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { range, tempDir, waitFor } from "../helpers/server.ts";
import { REPO_ROOT, runFlowd, startServerProcess, type ServerProcess } from "../../testkit/server-process.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");


let temp: ReturnType<typeof tempDir>;
let db: string;
let server: ServerProcess;
const runs: Record<string, string> = {};

async function flowd(args: string[], env: Record<string, string> = {}): Promise<{ code: number | string; out: string }> {
  const proc = runFlowd(args, { env });
  const code = await proc.exited;
  return { code, out: proc.output() };
}

async function startRun(workflowId: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const response = await fetch(`${server.url}/workflows/${workflowId}/runs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return (await response.json()) as Record<string, unknown>;
}

beforeAll(async () => {
  temp = tempDir();
  db = join(temp.dir, "flowd.db");
  server = await startServerProcess(["--workflows", FIXTURES, "--db", db]);
  runs.ok = (await startRun("steps-flow", { message: "hi", stream: false })).run_id as string;
  runs.failed = (await startRun("failing-flow", { stream: false })).run_id as string;
});
afterAll(async () => {
  await server.stop();
  temp.remove();
});

describe("flowd runs (read-only, on the file the server is writing)", () => {
  it("runs list prints a table of runs, newest first; --json and --status filter", async () => {
    const table = await flowd(["runs", "list", "--db", db]);
    expect(table.code).toBe(0);
    const lines = table.out.trim().split("\n");
    expect(lines[0]).toMatch(/^RUN ID\s+WORKFLOW\s+STATUS\s+EVENTS/);
    expect(lines[1]).toContain(runs.failed);
    expect(lines[1]).toContain("error");
    expect(lines[2]).toContain(runs.ok);

    const json = await flowd(["runs", "list", "--db", db, "--json", "--status", "error"]);
    expect(JSON.parse(json.out)).toEqual([expect.objectContaining({ run_id: runs.failed, status: "error" })]);

    const bad = await flowd(["runs", "list", "--db", db, "--status", "sleeping"]);
    expect(bad.code).toBe(1);
    expect(bad.out).toContain("sleeping");
  });

  it("runs show prints the run and its step timings", async () => {
    const shown = await flowd(["runs", "show", runs.failed!, "--db", db]);
    expect(shown.code).toBe(0);
    expect(shown.out).toContain(`run        ${runs.failed}`);
    expect(shown.out).toContain('status     error — Step "explode" failed: disk on fire');
    expect(shown.out).toMatch(/1\s+explode\s+error/);
    const json = JSON.parse((await flowd(["runs", "show", runs.ok!, "--db", db, "--json"])).out) as { steps: unknown[] };
    expect(json).toMatchObject({ run_id: runs.ok, status: "completed", content: "hi!|hi!?" });
    expect(json.steps).toHaveLength(3);
  });

  it("runs events prints events in order; --after and --json give the stored frames", async () => {
    const text = await flowd(["runs", "events", runs.ok!, "--db", db]);
    expect(text.out.trim().split("\n")).toHaveLength(10);
    const json = await flowd(["runs", "events", runs.ok!, "--db", db, "--json", "--after", "6"]);
    const frames = json.out.trim().split("\n").map((line) => JSON.parse(line) as { event_index: number });
    expect(frames.map((f) => f.event_index)).toEqual([7, 8, 9]);
    const reader = new Database(db, { readonly: true });
    const stored = reader.prepare("SELECT payload FROM events WHERE run_id = ? AND event_index = 7").get(runs.ok) as { payload: string };
    reader.close();
    expect(json.out.split("\n")[0]).toBe(stored.payload);
  });

  it("runs events piped into head -1 ends quietly with exit code 0", async () => {
    const long = (await startRun("ticker", { stream: false, additional_data: { count: 3_000 } })).run_id as string;
    // A real shell pipe: once head exits, flowd's next write fails with EPIPE.
    const command = `"${process.execPath}" bin/flowd.js runs events ${long} --db "${db}" | head -1; echo "flowd exited \${PIPESTATUS[0]}"`;
    const shell = spawn("bash", ["-c", command], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    shell.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    shell.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
    await new Promise((resolve) => shell.on("close", resolve));
    const lines = out.trim().split("\n");
    expect(lines[0]).toContain("WorkflowStarted");
    expect(lines.slice(1)).toEqual(["flowd exited 0"]);
  });

  it("an unknown run or a missing file exits 1 with a message that says so", async () => {
    const unknown = await flowd(["runs", "show", "ghost", "--db", db]);
    expect(unknown.code).toBe(1);
    expect(unknown.out).toContain("Run ghost not found");
    const json = await flowd(["runs", "show", "ghost", "--db", db, "--json"]);
    expect(JSON.parse(json.out)).toMatchObject({ code: "RUN_NOT_FOUND" });
    const missing = await flowd(["runs", "list", "--db", join(temp.dir, "nope.db")]);
    expect(missing.code).toBe(1);
    expect(missing.out).toContain("Cannot open database file");
  });

  it("a PostgreSQL URL it cannot reach, for the CLI or a server, exits 1 naming the URL without its password", async () => {
    const url = "postgres://flowd:s3cret@127.0.0.1:1/flowd";
    for (const args of [["runs", "list", "--db", url], ["serve", "--port", "0", "--db", url]]) {
      const result = await flowd(args);
      expect(result.code, args[0]).toBe(1);
      expect(result.out, args[0]).toContain("Cannot use the PostgreSQL database at postgres://flowd:…@127.0.0.1:1/flowd");
      expect(result.out, args[0]).toContain("ECONNREFUSED");
      expect(result.out, args[0]).not.toContain("s3cret");
    }
  });
});

describe("flowd runs (through the server)", () => {
  it("runs cancel cancels a running run", async () => {
    const run = await startRun("ticker", { background: true, additional_data: { count: 1000, delayMs: 5 } });
    const result = await flowd(["runs", "cancel", run.run_id as string, "--url", server.url]);
    expect(result.code).toBe(0);
    expect(result.out).toContain("Cancel requested");
    const reader = new Database(db, { readonly: true });
    await waitFor("the run to be cancelled", () => {
      const row = reader.prepare("SELECT status FROM runs WHERE run_id = ?").get(run.run_id) as { status: string };
      return row.status === "cancelled" ? true : undefined;
    });
    reader.close();
    const unreachable = await flowd(["runs", "cancel", "x", "--url", "http://127.0.0.1:9"]);
    expect(unreachable.code).toBe(1);
    expect(unreachable.out).toContain("Cannot reach the flowd server at http://127.0.0.1:9");
  });
});

describe("flowd runs continue, signal, and list of runs that wait", () => {
  it("lists paused and waiting runs with what they wait for, continues one with --confirm, and signals another", async () => {
    const paused = (await startRun("approval", { message: "memo", background: true })).run_id as string;
    const waiting = (await startRun("signalled", { background: true })).run_id as string;
    const reader = new Database(db, { readonly: true });
    const statusOf = (runId: string) => (reader.prepare("SELECT status FROM runs WHERE run_id = ?").get(runId) as { status: string }).status;
    await waitFor("both runs to wait", () => (statusOf(paused) === "paused" && statusOf(waiting) === "waiting" ? true : undefined));

    const list = await flowd(["runs", "list", "--db", db, "--status", "paused"]);
    expect(list.code).toBe(0);
    expect(list.out).toContain("WAITING FOR");
    expect(list.out.split("\n").find((line) => line.includes(paused))).toContain('confirmation of "send"');
    const waits = await flowd(["runs", "list", "--db", db, "--status", "waiting"]);
    expect(waits.out.split("\n").find((line) => line.includes(waiting))).toContain('signal "approved"');

    const both = await flowd(["runs", "continue", paused, "--confirm", "--reject", "--url", server.url]);
    expect(both.code).toBe(1);
    expect(both.out).toContain("Give exactly one of");
    const done = await flowd(["runs", "continue", paused, "--confirm", "--url", server.url]);
    expect(done.code).toBe(0);
    expect(done.out).toContain(`Run ${paused} continued; it is now completed.`);
    const again = await flowd(["runs", "continue", paused, "--confirm", "--url", server.url]);
    expect(again.code).toBe(1);
    expect(again.out).toContain("not paused");

    const badData = await flowd(["runs", "signal", waiting, "approved", "--data", "{by", "--url", server.url]);
    expect(badData.code).toBe(1);
    expect(badData.out).toContain("--data must be JSON");
    const wrong = await flowd(["runs", "signal", waiting, "approved", "--data", '{"by": 1}', "--url", server.url]);
    expect(wrong.code).toBe(1);
    expect(wrong.out).toContain("was not accepted");
    const signalled = await flowd(["runs", "signal", waiting, "approved", "--data", '{"by": "cli"}', "--url", server.url]);
    expect(signalled.code).toBe(0);
    expect(signalled.out).toContain(`Signal "approved" ended run ${waiting}'s wait.`);
    await waitFor("the signalled run to complete", () => (statusOf(waiting) === "completed" ? true : undefined));
    reader.close();
  });
});

describe("flowd runs events --follow", () => {
  it("follows a run across a server restart, resuming after the last index it printed", async () => {
    const dbFollow = join(temp.dir, "follow.db");
    let first = await startServerProcess(["--workflows", FIXTURES, "--db", dbFollow]);
    const port = first.port;
    const response = await fetch(`${first.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ background: true, additional_data: { count: 120, delayMs: 15 } }),
    });
    const runId = ((await response.json()) as { run_id: string }).run_id;

    const follower = runFlowd(["runs", "events", runId, "--follow", "--json", "--url", first.url]);
    await waitFor("some events to be printed", () => (follower.output().split("\n").length > 20 ? true : undefined));
    first.child.kill("SIGKILL");
    expect(await first.exited).toBe("SIGKILL");
    await sleep(300);
    first = await startServerProcess(["--workflows", FIXTURES, "--db", dbFollow, "--port", String(port)]);
    try {
      expect(await follower.exited).toBe(0);
      const output = follower.output();
      const frames = output
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as { event_index: number; event: string });
      expect(frames.map((f) => f.event_index)).toEqual(range(frames.length));
      expect(frames.some((f) => f.event === "WorkflowResumed")).toBe(true);
      expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
      expect(output).toContain("reconnecting in");
      expect(output).toContain(`run ended with WorkflowCompleted after ${frames.length} events followed`);
    } finally {
      await first.stop();
    }
  });

  it("starts after --after and exits 1 for an unknown run without retrying", async () => {
    const done = await flowd(["runs", "events", runs.ok!, "--follow", "--json", "--after", "7", "--url", server.url]);
    expect(done.code).toBe(0);
    expect(done.out.split("\n").filter((l) => l.startsWith("{")).map((l) => (JSON.parse(l) as { event_index: number }).event_index)).toEqual([8, 9]);
    const ghost = await flowd(["runs", "events", "ghost", "--follow", "--url", server.url]);
    expect(ghost.code).toBe(1);
    expect(ghost.out).toContain("Run ghost not found");
  });
});
