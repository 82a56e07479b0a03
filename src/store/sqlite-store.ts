import { statSync } from "node:fs";
import { Errors, type FlowdError } from "../errors.ts";
import { openDb } from "./db.ts";
import { EventLog } from "./event-log.ts";
import { EventReader } from "./event-reader.ts";
import { ResumeStateReader } from "./resume-state.ts";
import { SqliteRetention } from "./retention.ts";
import { RunStore } from "./run-store.ts";
import type { CommitObserver, ReadOnlyStore, RunOwnership, Store } from "./store.ts";

/** What the server's store reports back. */
export interface StoreHooks {
  /** An event of the run could not be stored: the engine stops the run. */
  onAppendError(error: unknown, runId: string): void;
  /** A live listener threw. */
  onListenerError(error: unknown, runId: string): void;
  /** Something beside a run's writes failed: the WAL checkpointer (SQLite), a lease renewal or the LISTEN connection (PostgreSQL). */
  onBackgroundError(error: unknown, what: string): void;
  /** Another node took the run over after this node's lease lapsed (PostgreSQL): its writes here were refused. */
  onLost(runId: string, error: FlowdError): void;
  /** A batch was committed (metrics). */
  onCommitted?: CommitObserver;
}

/** A file's size in bytes; 0 if it is not there (a WAL between checkpoints' truncations). */
function fileSize(path: string): number {
  return statSync(path, { throwIfNoEntry: false })?.size ?? 0;
}

/** One process owns the whole file (ServerLock): every run is its own. */
const SOLE_OWNER: RunOwnership = {
  shared: false,
  claim: () => Promise.resolve(true),
  release: () => {},
  holds: () => true,
  wake: () => {},
  watch: () => {},
};

/** The server's store on one SQLite file, held with the server lock. */
export function openSqliteStore(path: string, sync: "FULL" | "NORMAL", hooks: StoreHooks): Store {
  const db = openDb(path, { exclusive: true, sync, checkpointInBackground: (error) => hooks.onBackgroundError(error, "the WAL checkpointer failed; commits checkpoint by themselves") });
  const log = new EventLog(db, hooks.onAppendError, hooks.onListenerError, hooks.onCommitted);
  const lock = db.lock;
  return {
    location: path,
    log,
    runs: new RunStore(db),
    retention: new SqliteRetention(db),
    resume: new ResumeStateReader(db),
    ownership: SOLE_OWNER,
    storageProblem: (): FlowdError | null => {
      try {
        const lost = lock?.lost() ?? null;
        if (lost) return lost;
        // A failed commit is reported until a write goes through again: a probe, or a later commit.
        if (log.storageFault && lock?.probeWrite()) log.storageFault = null;
        return log.storageFault;
      } catch (error) {
        return Errors.databaseUnreadable(error);
      }
    },
    storageBytes: async () => ({ database: fileSize(path), wal: fileSize(`${path}-wal`) }),
    get runsStoppedByStorage() {
      return log.runsStoppedByStorage;
    },
    close: async () => db.close(),
  };
}

/** A SQLite file opened read-only: safe while a server writes to it. */
export function openSqliteReadOnly(path: string): ReadOnlyStore {
  const db = openDb(path, { readonly: true });
  const reader = new EventReader(db.sqlite);
  return {
    location: path,
    runs: new RunStore(db),
    reads: {
      readAfter: async function* (runId, afterIndex) {
        yield* reader.readAfter(runId, afterIndex);
      },
      stepTimings: async (runId) => reader.stepTimings(runId),
    },
    close: async () => db.close(),
  };
}
