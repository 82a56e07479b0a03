import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/** How often the worker copies committed pages from the WAL back into the database file. */
const CHECKPOINT_INTERVAL_MS = 100;

/**
 * Longest `stop` waits for the worker to close its connection (a checkpoint in progress
 * finishes first). Past it the writer closes anyway; the WAL then stays on disk until the
 * next start, which is harmless. Keeps a shutdown, run draining included, under 10 s.
 */
const STOP_TIMEOUT_MS = 2000;

// Plain CommonJS run with `eval`, so it is the same under the dist bundle and the tests.
// PASSIVE never waits for locks and never blocks the writer: it copies what it can.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driver);
const db = new Database(workerData.path, { fileMustExist: true });
const checkpoint = db.prepare("PRAGMA wal_checkpoint(PASSIVE)");
const timer = setInterval(() => checkpoint.run(), workerData.intervalMs);
parentPort.on("message", () => {
  clearInterval(timer);
  db.close();
  Atomics.store(workerData.closed, 0, 1);
  Atomics.notify(workerData.closed, 0);
  parentPort.close();
});
`;

/**
 * Checkpoints the WAL from a worker thread with its own connection, so the thread that
 * commits events never does: a checkpoint copies megabytes back into the database file,
 * and inline it held the event loop for milliseconds (the tail of B3's latency) and took
 * a sixth of the time of every event appended under load. Only commits are single
 * threaded (I3); a checkpoint changes no row anyone can see.
 */
export class WalCheckpointer {
  private readonly worker: Worker;
  /** Set to 1 by the worker once its connection is closed. */
  private readonly closed = new Int32Array(new SharedArrayBuffer(4));
  private exited = false;

  constructor(path: string, onError: (error: Error) => void) {
    const driver = createRequire(import.meta.url).resolve("better-sqlite3");
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { path, driver, intervalMs: CHECKPOINT_INTERVAL_MS, closed: this.closed },
    });
    // Checkpoints alone must not keep the process alive.
    this.worker.unref();
    this.worker.on("error", onError);
    this.worker.on("exit", () => (this.exited = true));
  }

  /**
   * Stops checkpointing and waits until the worker's connection is closed, so the caller
   * closes the last connection, which checkpoints the rest and removes the WAL file.
   * Synchronous, so a database closes in one call whatever holds it.
   */
  stop(): void {
    if (this.exited) return;
    this.worker.postMessage("stop");
    Atomics.wait(this.closed, 0, 0, STOP_TIMEOUT_MS);
  }
}
