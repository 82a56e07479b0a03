import { spawn } from "node:child_process";
import { chmodSync, linkSync, readFileSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { freshDatabaseEachTest, waitFor } from "../helpers/server.ts";
import { REPO_ROOT, runFlowd, startServerProcess } from "../../testkit/server-process.ts";
import { TestClient } from "../helpers/ws-client.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");
const FLOWD_BIN = join(REPO_ROOT, "bin/flowd.js");

const files = freshDatabaseEachTest();

function serverArgs(path = files.db): string[] {
  return ["--workflows", FIXTURES, "--db", path];
}

/** The kernel's state letter of a process (Z for a zombie), or null once it is gone. */
function processState(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] ?? null;
  } catch {
    return null;
  }
}

describe("one server per database, whatever the path", () => {
  it("refuses a second server that opens the same file through a symlink or a hard link", async () => {
    const first = await startServerProcess(serverArgs());
    try {
      const symlinked = join(files.dir, "via-symlink.db");
      symlinkSync(files.db, symlinked);
      const hardLinked = join(files.dir, "via-hard-link.db");
      linkSync(files.db, hardLinked);
      for (const path of [files.db, symlinked, hardLinked]) {
        const second = runFlowd(["serve", "--port", "0", ...serverArgs(path)]);
        expect(await second.exited).toBe(1);
        expect(second.output()).toContain(`Another flowd process (pid ${first.child.pid}) is serving`);
        expect(second.output()).toContain("DATABASE_LOCKED");
      }
      expect((await fetch(`${first.url}/health`)).status).toBe(200);
    } finally {
      expect(await first.stop()).toBe(0);
    }
    // A graceful stop gives the database up: the next server starts at once.
    const next = await startServerProcess(serverArgs(join(files.dir, "via-hard-link.db")));
    await next.stop();
  });

  it("takes over at once from a killed server that is still a zombie", async () => {
    // The server's parent execs into `sleep`, which never reaps it: killed, it stays a zombie.
    const parent = spawn("sh", ["-c", `"${process.execPath}" "${FLOWD_BIN}" serve --port 0 ${serverArgs().join(" ")} & exec sleep 60`], {
      cwd: REPO_ROOT,
      env: { ...process.env, FLOWD_LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "inherit"],
      detached: true,
    });
    try {
      let output = "";
      parent.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
      const pid = await waitFor("the server to listen", () => {
        const match = /"pid":(\d+)[^\n]*"msg":"flowd listening"/.exec(output);
        return match ? Number(match[1]) : undefined;
      });
      process.kill(pid, "SIGKILL");
      await waitFor("the killed server to be a zombie", () => (processState(pid) === "Z" ? true : undefined));

      const next = await startServerProcess(serverArgs());
      try {
        expect((await fetch(`${next.url}/health`)).status).toBe(200);
      } finally {
        await next.stop();
      }
    } finally {
      process.kill(-parent.pid!, "SIGKILL");
    }
  });
});

describe("an owner on another host or in another container", () => {
  it("is waited for while its heartbeat is fresh, and taken over once it has been silent 15 s", async () => {
    expect(await runFlowd(["migrate", "--db", files.db]).exited).toBe(0);
    const other = new Database(files.db);
    const claim = other.prepare(
      `INSERT OR REPLACE INTO server_lock (slot, hostname, pid, process_start, pid_namespace, acquired_at, checked_at)
       VALUES (1, 'other-host', 1, '1', 'pid:[1]', ?, ?)`,
    );
    claim.run(Date.now(), Date.now() - 2_000);
    const refused = runFlowd(["serve", "--port", "0", ...serverArgs()]);
    expect(await refused.exited).toBe(1);
    expect(refused.output()).toContain('on host "other-host"');
    expect(refused.output()).toContain("DATABASE_LOCKED");

    claim.run(Date.now() - 60_000, Date.now() - 16_000);
    other.close();
    const next = await startServerProcess(serverArgs());
    try {
      expect((await fetch(`${next.url}/health`)).status).toBe(200);
    } finally {
      await next.stop();
    }
  });
});

describe("a database the server cannot write", () => {
  it("fails start-up with DATABASE_READ_ONLY and exit code 1", async () => {
    const migrate = runFlowd(["migrate", "--db", files.db]);
    expect(await migrate.exited).toBe(0);
    chmodSync(files.db, 0o444);
    chmodSync(files.dir, 0o555);
    try {
      // root writes whatever the permissions say: run the server as nobody there.
      const asNobody = process.getuid?.() === 0;
      const proc = asNobody
        ? spawnAs(65534, ["serve", "--port", "0", "--db", files.db])
        : runFlowd(["serve", "--port", "0", "--db", files.db]);
      expect(await proc.exited).toBe(1);
      expect(proc.output()).toContain("DATABASE_READ_ONLY");
      expect(proc.output()).toContain("needs write access");
    } finally {
      chmodSync(files.dir, 0o755);
      chmodSync(files.db, 0o644);
    }
  });
});

/** `flowd <args>` as another user (the caller is root). */
function spawnAs(uid: number, args: string[]): { exited: Promise<number | string>; output: () => string } {
  const child = spawn(process.execPath, [FLOWD_BIN, ...args], {
    cwd: REPO_ROOT,
    uid,
    gid: uid,
    env: { ...process.env, HOME: "/tmp" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal ?? -1)));
  return { exited, output: () => output };
}

describe("/health reports whether the server can store events", () => {
  it("answers 503 STORAGE_FAILED while another process holds the write lock, and ok once it lets go", async () => {
    const server = await startServerProcess(serverArgs());
    const other = new Database(files.db);
    try {
      expect((await fetch(`${server.url}/health`)).status).toBe(200);
      other.exec("BEGIN IMMEDIATE");
      // A start now waits for the lock (busy timeout), then its run cannot be stored.
      const start = await fetch(`${server.url}/workflows/ticker/runs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ background: true }),
      });
      expect(start.status).toBe(503);
      const unhealthy = await fetch(`${server.url}/health`);
      expect(unhealthy.status).toBe(503);
      const body = (await unhealthy.json()) as { status: string; code: string; detail: string };
      expect(body).toMatchObject({ status: "unavailable", code: "STORAGE_FAILED" });
      expect(body.detail).toContain("database is locked");
      other.exec("ROLLBACK");
      await waitFor("/health to recover", async () => ((await fetch(`${server.url}/health`)).status === 200 ? true : undefined));
      // (That start's run was never created: it stopped nothing.)
      // And runs are stored again.
      const { client } = await TestClient.connect(server.wsUrl);
      client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 3 } });
      expect((await client.untilTerminal()).at(-1)?.event).toBe("WorkflowCompleted");
      await client.close();
    } finally {
      other.close();
      await server.stop();
    }
  });

  it("stays 503 while runs that the refused writes stopped wait for a restart, which resumes them", async () => {
    const server = await startServerProcess(serverArgs());
    const other = new Database(files.db);
    let runId = "";
    try {
      const { client } = await TestClient.connect(server.wsUrl);
      client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 400, delayMs: 5 } });
      runId = (await client.next()).run_id as string;
      await client.take(5);
      other.exec("BEGIN IMMEDIATE");
      // Its next commit waits out the busy timeout, then fails: the run stops where it is.
      let frame = await client.next(15_000);
      while (frame.event !== "error") frame = await client.next(15_000);
      expect(frame).toMatchObject({ code: "STORAGE_FAILED", run_id: runId });
      other.exec("ROLLBACK");
      await sleep(1_100); // past the probe's once-a-second
      const response = await fetch(`${server.url}/health`);
      expect(response.status).toBe(503);
      const body = (await response.json()) as { code: string; detail: string };
      expect(body.code).toBe("STORAGE_FAILED");
      expect(body.detail).toContain("restart flowd to resume");
      client.socket.terminate();
    } finally {
      other.close();
      await server.stop();
    }
    const restarted = await startServerProcess(serverArgs());
    try {
      expect((await fetch(`${restarted.url}/health`)).status).toBe(200);
      const { client } = await TestClient.connect(restarted.wsUrl);
      client.send({ action: "reconnect", run_id: runId, last_event_index: null });
      const frames = await client.untilTerminal(20_000);
      expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
      await client.close();
    } finally {
      await restarted.stop();
    }
  });

  it("answers 503 LOCK_LOST once the database no longer names this server its owner", async () => {
    const server = await startServerProcess(serverArgs());
    try {
      const other = new Database(files.db);
      other.exec("DELETE FROM server_lock");
      other.close();
      const response = await fetch(`${server.url}/health`);
      expect(response.status).toBe(503);
      expect(await response.json()).toMatchObject({ code: "LOCK_LOST" });
    } finally {
      await server.stop();
    }
  });
});

describe("graceful restarts and the crash loop guard", () => {
  it("a step that ignores input.signal at shutdown does not count as a crash", async () => {
    const env = { FLOWD_MAX_RESUMES: "0" };
    const first = await startServerProcess(serverArgs(), { env });
    const { client } = await TestClient.connect(first.wsUrl);
    client.send({ action: "start-workflow", workflow_id: "stubborn", additional_data: { sleepMs: 60_000 } });
    const runId = (await client.next()).run_id as string;
    expect(await client.next()).toMatchObject({ event: "StepStarted" });
    expect(await first.stop()).toBe(0);

    // With FLOWD_MAX_RESUMES=0 any resume counted as after a crash would end the run with WorkflowError.
    const second = await startServerProcess(serverArgs(), { env });
    try {
      const reader = new Database(files.db, { readonly: true });
      const resumed = reader
        .prepare<[string], { payload: string }>("SELECT payload FROM events WHERE run_id = ? AND event = 'WorkflowResumed'")
        .get(runId);
      const status = (reader.prepare("SELECT status FROM runs WHERE run_id = ?").get(runId) as { status: string }).status;
      reader.close();
      expect(status).toBe("running");
      expect(JSON.parse(resumed!.payload)).toMatchObject({ after_crash: false });
    } finally {
      // The step sleeps through a graceful stop too; this server need not wait for it.
      second.child.kill("SIGKILL");
      await second.exited;
    }
  });
});
