import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openDb } from "../../src/store/db.ts";
import { EventLog } from "../../src/store/event-log.ts";
import { range, storedIndices, tempDir, waitFor } from "../helpers/server.ts";

let temp: ReturnType<typeof tempDir>;
beforeEach(() => {
  temp = tempDir();
});
afterEach(() => {
  temp.remove();
});

/** Appends `count` events of about 1 KB to a new run, committing every 500. */
function fill(log: EventLog, runId: string, count: number): void {
  log.createRun({ runId, workflowId: "wf", workflowName: "Workflow", sessionId: "s", userId: null, input: "", additionalData: null });
  for (let i = 0; i < count; i++) {
    log.append(runId, { event: "WorkflowStarted", input: "x".repeat(1000) });
    if (i % 500 === 499) log.flushNow();
  }
  log.flushNow();
}

describe("checkpointing the WAL in the background", () => {
  it("copies committed pages into the database file while the writer never checkpoints by itself", async () => {
    const path = join(temp.dir, "flowd.db");
    const errors: Error[] = [];
    const db = openDb(path, { checkpointInBackground: (error) => errors.push(error) });
    // The writer would checkpoint by itself only past 40,000 pages (160 MB).
    expect(db.sqlite.pragma("wal_autocheckpoint", { simple: true })).toBe(40_000);
    const log = new EventLog(db, (error) => errors.push(error as Error));
    const before = statSync(path).size;
    fill(log, "r", 10_000); // about 12 MB of WAL
    // Only the checkpointer moves pages from the WAL into the database file.
    await waitFor("the database file to take the committed pages", () => (statSync(path).size > before + 8_000_000 ? true : undefined), 5_000);
    expect(storedIndices(db.sqlite, "r")).toEqual(range(10_000));
    db.close();
    // Closed last, the writer's connection removed the WAL: the checkpointer had closed first.
    expect(existsSync(`${path}-wal`)).toBe(false);
    expect(errors).toEqual([]);
    const reopened = openDb(path, { readonly: true });
    expect(storedIndices(reopened.sqlite, "r")).toEqual(range(10_000));
    reopened.close();
  });

  it("is off unless asked for: the writer checkpoints by itself every 4,000 pages", () => {
    const db = openDb(join(temp.dir, "plain.db"));
    expect(db.sqlite.pragma("wal_autocheckpoint", { simple: true })).toBe(4000);
    db.close();
  });
});
