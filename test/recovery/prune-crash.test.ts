import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { REPO_ROOT, runFlowd, startServerProcess } from "../../testkit/server-process.ts";
import { freshDatabaseEachTest, startServer, waitFor } from "../helpers/server.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

/** Pruning on the SQLite file: a SIGKILL in the middle of it, and the space it frees. */

describe("a prune interrupted by SIGKILL", () => {
  const files = freshDatabaseEachTest();

  it("leaves every run whole or marked pruned, a sound file, and is finished after the restart", async () => {
    const env = { FLOWD_RETENTION: "1s" };
    const first = await startServerProcess(["--workflows", FIXTURES, "--db", files.db], { env: { FLOWD_RETENTION: "1h" } });
    const post = async (url: string, body: unknown) =>
      (await (await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })).json()) as { run_id: string };
    const big = (await post(`${first.url}/workflows/ticker/runs`, { background: true, additional_data: { count: 60_000, burst: 500 } })).run_id;
    const small = (await post(`${first.url}/workflows/ticker/runs`, { background: true, additional_data: { count: 10 } })).run_id;
    const reader = () => new Database(files.db, { readonly: true });
    await waitFor("the big run to finish", () => {
      const db = reader();
      try {
        return (db.prepare("SELECT status FROM runs WHERE run_id = ?").get(big) as { status: string }).status === "completed" ? true : undefined;
      } finally {
        db.close();
      }
    }, 60_000);
    await first.stop();

    // Retention 1 s from now on: the prune starts at once; kill the server while it deletes.
    const second = await startServerProcess(["--workflows", FIXTURES, "--db", files.db], { env });
    const eventsOf = (db: Database.Database, runId: string): number => (db.prepare("SELECT count(*) AS n FROM events WHERE run_id = ?").get(runId) as { n: number }).n;
    await waitFor("the prune to be under way", () => {
      const db = reader();
      try {
        const left = eventsOf(db, big);
        return left > 0 && left < 60_004 ? true : undefined;
      } finally {
        db.close();
      }
    }, 20_000, );
    second.child.kill("SIGKILL");
    await second.exited;

    const db = new Database(files.db);
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      for (const runId of [big, small]) {
        const row = db.prepare("SELECT pruned_at, last_event_index FROM runs WHERE run_id = ?").get(runId) as { pruned_at: number | null; last_event_index: number };
        const stored = eventsOf(db, runId);
        // Whole, or marked pruned: never some of its events gone without the mark.
        if (row.pruned_at === null) expect(stored, runId).toBe(row.last_event_index + 1);
      }
      expect((db.prepare("SELECT pruned_at FROM runs WHERE run_id = ?").get(big) as { pruned_at: number | null }).pruned_at).not.toBeNull();
    } finally {
      db.close();
    }

    const third = await startServerProcess(["--workflows", FIXTURES, "--db", files.db], { env });
    try {
      await waitFor("the prune to be finished", () => {
        const check = reader();
        try {
          return eventsOf(check, big) === 0 && eventsOf(check, small) === 0 ? true : undefined;
        } finally {
          check.close();
        }
      }, 20_000);
    } finally {
      await third.stop();
    }
  }, 120_000);
});

describe("a delete interrupted by SIGKILL", () => {
  const files = freshDatabaseEachTest();

  it("leaves the run marked, its events read as gone, and is finished after the restart: row, events and keys", async () => {
    const first = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
    const started = await fetch(`${first.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": "delete-me" },
      body: JSON.stringify({ background: true, additional_data: { count: 40_000, burst: 500 } }),
    });
    const big = ((await started.json()) as { run_id: string }).run_id;
    const reader = () => new Database(files.db, { readonly: true });
    const query = <T>(sql: string, ...params: unknown[]): T | undefined => {
      const db = reader();
      try {
        return db.prepare(sql).get(...params) as T | undefined;
      } finally {
        db.close();
      }
    };
    const eventsLeft = () => query<{ n: number }>("SELECT count(*) AS n FROM events WHERE run_id = ?", big)!.n;
    await waitFor("the run to finish", () => (query<{ status: string }>("SELECT status FROM runs WHERE run_id = ?", big)?.status === "completed" ? true : undefined), 60_000);

    expect(query<{ n: number }>("SELECT count(*) AS n FROM idempotency_keys WHERE run_id = ?", big)!.n).toBe(1);
    // The delete goes a few hundred events at a time: kill the server while it deletes.
    const deleting = fetch(`${first.url}/runs/${big}`, { method: "DELETE" }).catch(() => null);
    await waitFor("the delete to be under way", () => {
      const left = eventsLeft();
      return left > 0 && left < 40_004 ? true : undefined;
    }, 20_000);
    first.child.kill("SIGKILL");
    await first.exited;
    expect(await deleting).toBeNull();

    const db = new Database(files.db);
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      expect(db.prepare("SELECT removing, pruned_at IS NOT NULL AS marked FROM runs WHERE run_id = ?").get(big)).toEqual({ removing: "run", marked: 1 });
    } finally {
      db.close();
    }

    const second = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
    try {
      await waitFor("the delete to be finished", () => (query("SELECT 1 FROM runs WHERE run_id = ?", big) === undefined ? true : undefined), 20_000);
      expect(eventsLeft()).toBe(0);
      expect(query<{ n: number }>("SELECT count(*) AS n FROM idempotency_keys WHERE run_id = ?", big)!.n).toBe(0);
      expect((await fetch(`${second.url}/runs/${big}`)).status).toBe(404);
    } finally {
      await second.stop();
    }
  }, 120_000);
});

describe("space", () => {
  const files = freshDatabaseEachTest();

  it("a new file has incremental vacuum on; flowd vacuum turns it on for an older file, saying the sizes", async () => {
    const t = await startServer({ dbPath: files.db });
    const started = await fetch(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ background: true, additional_data: { count: 20_000, burst: 500, pad: 200 } }),
    });
    const runId = ((await started.json()) as { run_id: string }).run_id;
    await waitFor("the run to finish", async () => (((await (await fetch(`${t.url}/runs/${runId}`)).json()) as { status: string }).status === "completed" ? true : undefined), 30_000);
    await fetch(`${t.url}/runs/${runId}`, { method: "DELETE" });
    await t.close();
    const db = new Database(files.db);
    expect(db.pragma("auto_vacuum", { simple: true })).toBe(2);
    // An old file, as made before this version: no incremental vacuum.
    db.pragma("auto_vacuum = NONE");
    db.exec("VACUUM");
    expect(db.pragma("auto_vacuum", { simple: true })).toBe(0);
    db.close();

    const missing = runFlowd(["vacuum", "--db", `${files.db}.typo`]);
    expect(await missing.exited).toBe(1);
    expect(missing.output()).toContain("There is no database at");
    const vacuum = runFlowd(["vacuum", "--db", files.db]);
    expect(await vacuum.exited).toBe(0);
    expect(vacuum.output()).toMatch(/MB → .* MB; incremental vacuum is now on/);
    const after = new Database(files.db, { readonly: true });
    expect(after.pragma("auto_vacuum", { simple: true })).toBe(2);
    after.close();
  });
});
