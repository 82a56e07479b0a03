import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { Errors } from "../../errors.ts";
import { STEP_TIMINGS_SQL, type StepTiming } from "../event-reader.ts";
import type { StoreHooks } from "../sqlite-store.ts";
import type { NewRun, ReadOnlyStore, Store } from "../store.ts";
import { CommitListener } from "./commit-listener.ts";
import { migratePostgres } from "./migrate.ts";
import { PgBatchWriter } from "./pg-batch-writer.ts";
import { PgEventLog } from "./pg-event-log.ts";
import { PgFollowers } from "./pg-followers.ts";
import { PgOwnership } from "./pg-ownership.ts";
import { PgResumeStateReader } from "./pg-resume-state.ts";
import { PgRetention } from "./pg-retention.ts";
import { readPgPage } from "./pg-page-read.ts";
import { PgRunStore } from "./pg-run-store.ts";
import { redactedUrl } from "./redacted-url.ts";
import { RunLeases } from "./run-leases.ts";

/** Events per page when the CLI reads a run's log. */
const READ_PAGE = 1000;

/** Connections per node: commits take one at a time, reads (catch-ups, run lookups) the rest. */
const POOL_SIZE = 10;


/** This node's id among the nodes on one database: host, process, and a random part (a restarted process is a new node). */
function newNodeId(): string {
  return `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
}

function newPool(url: string, onError: (error: unknown) => void, leaseMs?: number): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: POOL_SIZE,
    // A node stalled inside a commit (paused, cut off) holds its runs' row locks: the
    // database ends its session after a lease, so that another node can take them over.
    ...(leaseMs === undefined ? {} : { options: `-c idle_in_transaction_session_timeout=${leaseMs}` }),
  });
  // An idle connection's error (the server restarted, a network cut) must not crash the node.
  pool.on("error", onError);
  return pool;
}

/** The server's store on PostgreSQL: one node among any number on the same database. */
export async function openPgStore(url: string, leaseMs: number, hooks: StoreHooks): Promise<Store> {
  await migratePostgres(url);
  const pool = newPool(url, (error) => hooks.onBackgroundError(error, "an idle PostgreSQL connection failed"), leaseMs);
  const orm = drizzle(pool);
  const leases = new RunLeases(pool, newNodeId(), leaseMs);
  let log: PgEventLog | null = null;
  const ownership = new PgOwnership(pool, leases, (runId) => log?.regained(runId), (error, what) => hooks.onBackgroundError(error, what));
  const followers = new PgFollowers(pool, hooks.onListenerError);
  const eventLog = new PgEventLog(
    pool,
    new PgBatchWriter(pool, Date.now, ownership),
    followers,
    hooks.onAppendError,
    (runId, error) => {
      ownership.lost(runId);
      hooks.onLost(runId, error);
    },
    hooks.onCommitted,
  );
  log = eventLog;
  ownership.flushed = () => eventLog.flushed();
  let listening = true;
  const listener = new CommitListener(
    url,
    (notice) => followers.onCommit(notice),
    () => {
      listening = true;
      followers.reread();
    },
    (error) => {
      listening = false;
      hooks.onBackgroundError(error, "the LISTEN connection failed; reconnecting");
    },
    (runId) => ownership.woken(runId),
  );
  try {
    await listener.start();
  } catch (error) {
    await pool.end().catch(() => {});
    throw Errors.cannotReachPostgres(redactedUrl(url), error);
  }
  ownership.startRenewing();
  // A run created here is this node's from its first commit.
  const createRun = eventLog.createRun.bind(eventLog);
  eventLog.createRun = (run: NewRun) => {
    ownership.created(run.runId);
    return createRun(run);
  };
  return {
    location: redactedUrl(url),
    log: eventLog,
    runs: new PgRunStore(orm),
    resume: new PgResumeStateReader(pool, orm),
    ownership,
    retention: new PgRetention(pool, orm),
    storageBytes: async () => {
      const { rows } = await pool.query<{ bytes: string }>("SELECT pg_database_size(current_database()) AS bytes");
      return { database: Number(rows[0]!.bytes), wal: null };
    },
    storageProblem: () => eventLog.storageFault ?? (listening ? null : Errors.databaseUnreadable(new Error("the LISTEN connection to PostgreSQL is down; reconnecting"))),
    get runsStoppedByStorage() {
      return eventLog.runsStoppedByStorage;
    },
    close: async () => {
      // Graceful: every run this node held is handed over at once, not after its lease.
      await ownership.close(true);
      await listener.close();
      await pool.end();
    },
  };
}

/** PostgreSQL opened for reading (the CLI). */
export async function openPgReadOnly(url: string): Promise<ReadOnlyStore> {
  const pool = newPool(url, () => {});
  const runs = new PgRunStore(drizzle(pool));
  try {
    await pool.query("SELECT 1 FROM runs LIMIT 0");
  } catch (error) {
    await pool.end().catch(() => {});
    throw Errors.cannotReachPostgres(redactedUrl(url), error);
  }
  return {
    location: redactedUrl(url),
    runs,
    reads: {
      readAfter: async function* (runId, afterIndex) {
        // The pages the server's catch-up reads, one after another.
        for (let page = await readPgPage(pool, runId, afterIndex, READ_PAGE); page; page = await readPgPage(pool, runId, page.batch.last.index, READ_PAGE)) {
          yield* page.batch.events;
          if (!page.full) return;
        }
      },
      stepTimings: async (runId) =>
        (
          await pool.query<StepTiming>(
            STEP_TIMINGS_SQL.replace("?", "$1"),
            [runId],
          )
        ).rows,
    },
    close: () => pool.end(),
  };
}
