import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FlowdError } from "../../src/errors.ts";
import type { EventBatch } from "../../src/protocol/run-events.ts";
import type { PendingWrite } from "../../src/store/batch-plan.ts";
import { CommitListener } from "../../src/store/pg/commit-listener.ts";
import { migratePostgres } from "../../src/store/pg/migrate.ts";
import { PgBatchWriter } from "../../src/store/pg/pg-batch-writer.ts";
import { PgFollowers } from "../../src/store/pg/pg-followers.ts";
import { newRunRow } from "../../src/store/event-log.ts";
import type { RunRow } from "../../src/store/schema.ts";
import { startPostgres, testPool, type TestPostgres } from "../../testkit/postgres.ts";
import { seededRandom } from "../recovery/crash-trials.ts";

let postgres: TestPostgres;
let writerPool: pg.Pool;
let readerPool: pg.Pool;
let listener: CommitListener;
let followers: PgFollowers;

beforeAll(async () => {
  postgres = await startPostgres();
  const url = await postgres.createDatabase("flowd_followers_test");
  await migratePostgres(url);
  // The writing node and the following node each have their own connections.
  writerPool = testPool(url, 2);
  readerPool = testPool(url, 4);
  followers = new PgFollowers(readerPool);
  listener = new CommitListener(url, (notice) => followers.onCommit(notice), () => followers.reread());
  await listener.start();
}, 60_000);
afterAll(async () => {
  await listener?.close();
  await writerPool?.end();
  await readerPool?.end();
  await postgres?.stop();
});

function runRow(runId: string): RunRow {
  return newRunRow({ runId, workflowId: "wf", workflowName: "wf", sessionId: "s", userId: null, input: "", additionalData: null }, Date.now());
}

const loc = { step_name: "s", step_index: 0, step_path: "0" };
const content = (runId: string, i: number): PendingWrite => ({ kind: "event", runId, body: { event: "RunContent", ...loc, content: `c${i}` }, checkpoint: undefined, consumesSignal: undefined });

/** Collects what a follower gets. */
function collector(): { indices: number[]; done: Promise<FlowdError | null>; follower: Parameters<PgFollowers["follow"]>[2] } {
  const indices: number[] = [];
  let settle!: (value: FlowdError | null) => void;
  const done = new Promise<FlowdError | null>((resolve) => (settle = resolve));
  return {
    indices,
    done,
    follower: {
      events: (batch: EventBatch) => indices.push(...batch.events.map((e) => e.index)),
      ended: () => settle(null),
      failed: (error) => settle(error),
    },
  };
}

describe("following a run on PostgreSQL: catch-up then live, with commits on another node (I3)", () => {
  for (const seed of [7001, 7002, 7003]) {
    it(`seed ${seed}: followers joining at random moments, from random indices, each get every later index once, in order`, async () => {
      const random = seededRandom(seed);
      const runId = `run-${seed}`;
      const writer = new PgBatchWriter(writerPool);
      await writer.commit([{ kind: "run", runId, row: runRow(runId), idempotency: undefined }, { kind: "event", runId, body: { event: "WorkflowStarted", input: "" }, checkpoint: undefined, consumesSignal: undefined }]);
      let next = 1;
      const joined: { from: number; got: ReturnType<typeof collector> }[] = [];
      for (let batch = 0; batch < 60; batch++) {
        const size = 1 + Math.floor(random() * 40);
        await writer.commit(Array.from({ length: size }, () => content(runId, next++)));
        if (random() < 0.15) {
          const from = random() < 0.5 ? -1 : Math.floor(random() * next);
          const got = collector();
          followers.follow(runId, from, got.follower);
          joined.push({ from, got });
        }
        if (random() < 0.3) await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 5)));
      }
      await writer.commit([{ kind: "event", runId, body: { event: "WorkflowCompleted", content: null, duration_ms: 1 }, checkpoint: undefined, consumesSignal: undefined }]);
      const last = next;
      // One more that joins after the end, from the start.
      const late = collector();
      followers.follow(runId, -1, late.follower);
      joined.push({ from: -1, got: late });
      expect(joined.length).toBeGreaterThan(2);
      for (const { from, got } of joined) {
        expect(await got.done).toBeNull();
        expect(got.indices).toEqual(Array.from({ length: last - from }, (_, i) => from + 1 + i));
      }
      expect(followers.count).toBe(0);
    });
  }

  it("from the last index of a finished run: ended at once with nothing; an unknown run: RUN_NOT_FOUND", async () => {
    const writer = new PgBatchWriter(writerPool);
    await writer.commit([
      { kind: "run", runId: "short", row: runRow("short"), idempotency: undefined },
      { kind: "event", runId: "short", body: { event: "WorkflowStarted", input: "" }, checkpoint: undefined, consumesSignal: undefined },
      { kind: "event", runId: "short", body: { event: "WorkflowCompleted", content: null, duration_ms: 1 }, checkpoint: undefined, consumesSignal: undefined },
    ]);
    const atEnd = collector();
    followers.follow("short", 1, atEnd.follower);
    expect(await atEnd.done).toBeNull();
    expect(atEnd.indices).toEqual([]);
    const unknown = collector();
    followers.follow("nobody", -1, unknown.follower);
    expect(await unknown.done).toMatchObject({ code: "RUN_NOT_FOUND" });
  });
});
