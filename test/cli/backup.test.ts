import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { backupSqlite } from "../../src/cli/maintenance-commands.ts";
import { REPO_ROOT, runFlowd, startServerProcess } from "../../testkit/server-process.ts";
import { freshDatabaseEachTest, waitFor } from "../helpers/server.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

/** `flowd backup` (DESIGN §13): a consistent copy of the live file while the server writes at full speed. */
describe("flowd backup", () => {
  const files = freshDatabaseEachTest();

  it("copies the live database while a run streams at full speed: a sound file, one snapshot, that serves as a flowd database", async () => {
    const server = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
    const count = (path: string): number => {
      const db = new Database(path, { readonly: true });
      try {
        return (db.prepare("SELECT count(*) AS n FROM events").get() as { n: number }).n;
      } finally {
        db.close();
      }
    };
    const copy = join(files.dir, "copy.db");
    let runId = "";
    let before = 0;
    let after = 0;
    try {
      const answer = await fetch(`${server.url}/workflows/ticker/runs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ background: true, additional_data: { count: 5_000_000, burst: 200, pad: 200 } }),
      });
      runId = ((await answer.json()) as { run_id: string }).run_id;
      await waitFor("the run to have stored some events", () => (count(files.db) > 20_000 ? true : undefined), 30_000);
      before = count(files.db);
      const backup = runFlowd(["backup", copy, "--db", files.db]);
      expect(await backup.exited, backup.output()).toBe(0);
      after = count(files.db);
      expect(backup.output()).toMatch(new RegExp(`copy\\.db: [\\d.]+ MB, 1 runs and \\d+ events`));
      // Still running: the copy was taken beside it.
      expect(after).toBeGreaterThan(before);
    } finally {
      await server.stop();
    }

    const db = new Database(copy, { readonly: true });
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      // One snapshot: the run's row and its events agree, with no gap.
      const row = db.prepare("SELECT last_event_index, status FROM runs WHERE run_id = ?").get(runId) as { last_event_index: number; status: string };
      const events = db.prepare("SELECT count(*) AS n, min(event_index) AS first, max(event_index) AS last FROM events WHERE run_id = ?").get(runId) as { n: number; first: number; last: number };
      expect(events).toEqual({ n: row.last_event_index + 1, first: 0, last: row.last_event_index });
      // Every event committed before the backup began, and none after it ended.
      expect(events.n).toBeGreaterThanOrEqual(before);
      expect(events.n).toBeLessThanOrEqual(after);
    } finally {
      db.close();
    }

    // It serves: the run, interrupted in the copy, is resumed there, and its events read.
    const restored = await startServerProcess(["--workflows", FIXTURES, "--db", copy]);
    try {
      expect((await fetch(`${restored.url}/health`)).status).toBe(200);
      const page = (await (await fetch(`${restored.url}/runs/${runId}/events?after=-1&limit=5`, { headers: { accept: "application/json" } })).json()) as { events: { event_index: number }[] };
      expect(page.events.map((event) => event.event_index)).toEqual([0, 1, 2, 3, 4]);
      await fetch(`${restored.url}/workflows/ticker/runs/${runId}/cancel`, { method: "POST" });
    } finally {
      await restored.stop();
    }
  }, 120_000);

  it("says how far it is on a large file, refuses to overwrite, and points PostgreSQL users to pg_dump", async () => {
    const source = new Database(files.db);
    source.exec("CREATE TABLE filler (x BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) INSERT INTO filler SELECT randomblob(4096) FROM n");
    source.close();
    const lines: [number, number][] = [];
    await backupSqlite(files.db, join(files.dir, "progress.db"), (done, total) => lines.push([done, total]), 0);
    expect(lines.length).toBeGreaterThanOrEqual(5);
    expect(lines.at(-1)![0]).toBe(lines.at(-1)![1]);
    for (let i = 1; i < lines.length; i++) expect(lines[i]![0]).toBeGreaterThanOrEqual(lines[i - 1]![0]);

    // A write between every step that does not grow the file (an UPDATE in place): SQLite starts the copy
    // over each time with as much left as before; the backup sees no progress and copies the rest in one step.
    const writer = new Database(files.db);
    writer.exec("CREATE TABLE counter (n INTEGER); INSERT INTO counter VALUES (0)");
    const bump = writer.prepare("UPDATE counter SET n = n + 1");
    let writing = true;
    const writes = (async () => {
      while (writing) {
        bump.run();
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    try {
      await backupSqlite(files.db, join(files.dir, "busy.db"), () => {}, 0);
    } finally {
      writing = false;
      await writes;
      writer.close();
    }
    const busy = new Database(join(files.dir, "busy.db"), { readonly: true });
    expect(busy.pragma("integrity_check", { simple: true })).toBe("ok");
    expect((busy.prepare("SELECT count(*) AS n FROM filler").get() as { n: number }).n).toBe(3000);
    busy.close();

    const again = runFlowd(["backup", join(files.dir, "progress.db"), "--db", files.db]);
    expect(await again.exited).toBe(1);
    expect(again.output()).toContain("exists already");
    const pg = runFlowd(["backup", join(files.dir, "x.db"), "--db", "postgres://user@127.0.0.1:1/db"]);
    expect(await pg.exited).toBe(1);
    expect(pg.output()).toContain("pg_dump");
    const missing = runFlowd(["backup", join(files.dir, "y.db"), "--db", join(files.dir, "none.db")]);
    expect(await missing.exited).toBe(1);
    expect(missing.output()).toContain("There is no database");
    const nowhere = runFlowd(["backup", join(files.dir, "no-such-folder", "z.db"), "--db", files.db]);
    expect(await nowhere.exited).toBe(1);
    expect(nowhere.output()).toContain("does not exist: create it");
  });
});
