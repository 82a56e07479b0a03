import type { FlowdError } from "../errors.ts";
import type { CommittedEvent } from "../protocol/run-events.ts";
import type { RunEventBody } from "../protocol/run-events.ts";
import type { RunStatus } from "../protocol/run-status.ts";
import type { Checkpoint, IdempotentStart } from "./batch-plan.ts";
import type { LogPage, StepTiming } from "./event-reader.ts";
import type { RunFollower } from "./notifier.ts";
import type { RunRow } from "./schema.ts";

export type { Checkpoint, IdempotentStart, LogPage, RunFollower, RunRow, StepTiming };

/**
 * The one store interface: what the engine, the transports and the CLI know of the
 * database. Two implementations, chosen once by `openStore` (store/open-store.ts):
 * SQLite (one process, one file) and PostgreSQL (many nodes). Nothing outside
 * `src/store/` knows which one it talks to.
 */

/** What creating a run needs. */
export interface NewRun {
  runId: string;
  workflowId: string;
  workflowName: string;
  sessionId: string;
  userId: string | null;
  input: string;
  additionalData: unknown;
  /** The traceparent of the run's first span (see ops/tracing.ts), if it is traced. */
  traceParent?: string | null;
  /** Set for a start with an idempotency key: stored with the run's row. */
  idempotency?: IdempotentStart | undefined;
}

/**
 * The run event log. `append` is the only way events are written; appends are group
 * committed, and live followers are told only after the commit (I1, I2).
 */
export interface RunLog {
  /** Queues a new run's row for the next group commit (its first event usually joins it). */
  createRun(run: NewRun): RunRow;
  /** The run a start with this key created in the batch not yet committed. */
  pendingStart(workflowId: string, key: string): { run: RunRow; requestHash: string } | undefined;
  /** Queues one event (with the checkpoint stored in the same transaction, and the kept signal it consumes). */
  append(runId: string, body: RunEventBody, checkpoint?: Checkpoint, consumesSignal?: number): void;
  /** For producers that never await I/O: null to go on, or a promise to await first. */
  yieldTurn(producer: string): Promise<void> | null;
  /** Resolves once every event appended so far is committed (and delivered). */
  flushed(): Promise<void>;
  /** Resolves once everything `runId` appended so far is committed; rejects with the reason if it halted instead. */
  committed(runId: string): Promise<void>;
  /** Like `committed`, for what `runId` appended up to the append that `mark` (an `appendMark`) names. */
  committedSince(runId: string, mark: number): Promise<void>;
  /** Read right after an append: a mark that names it, for `committedSince`. */
  readonly appendMark: number;
  /** Events queued and not yet committed. */
  readonly pendingCount: number;
  /** Says that an unfinished run gets no more events from this process; its followers are told why. */
  halt(runId: string, reason: FlowdError): void;
  /** Ends a run halted here with `terminal` after all (a cancel); false if it had not halted. */
  endHalted(runId: string, terminal: RunEventBody): boolean;
  /** Every event after `afterIndex`, then every later one live, each once and in order (I3); then `ended` or `failed`. */
  follow(runId: string, afterIndex: number, follower: RunFollower): () => void;
  /** A page of the run's events after `afterIndex`, or null if there are none. */
  readPage(runId: string, afterIndex: number, limit: number): Promise<LogPage | null>;
}

/** Filters for listing runs. */
export interface RunFilter {
  workflowId?: string;
  sessionId?: string;
  status?: RunStatus;
  /** Only this user's runs. */
  userId?: string;
  limit?: number;
  offset?: number;
}

/** A signal kept in a run's mailbox. */
export interface StoredSignal {
  signalId: number;
  payload: unknown;
}

/** What a suspended run waits for, as its row shows it. */
export interface WaitColumns {
  status: "waiting" | "paused";
  waitKind: string;
  waitName: string | null;
  waitUntil: number | null;
}

/** Run rows: lookup and listing (what read-only users need too). */
export interface RunReads {
  /** The run row, or undefined for an unknown id. */
  get(runId: string): Promise<RunRow | undefined>;
  /** Newest first. */
  list(filter?: RunFilter): Promise<RunRow[]>;
  /** How many runs are paused (for a person) and waiting (for a timer or signal). */
  suspendedCounts(): Promise<{ paused: number; waiting: number }>;
}

/** An idempotency key to take for a run about to be created (see RunRecords.reserveIdempotencyKey). */
export interface KeyReservation {
  workflowId: string;
  key: string;
  requestHash: string;
  runId: string;
  now: number;
  /** A key taken before this (epoch ms) has expired and is taken over. */
  notBefore: number;
  /** A run whose hold on the key is taken over too: its row never came (its node died before committing it). */
  takeFrom?: string | undefined;
}

/** Run rows as the server changes them besides events: cancel requests, pauses, kept signals. */
export interface RunRecords extends RunReads {
  /** The run a start with this key created at or after `notBefore` (epoch ms), with what that start asked for. */
  idempotentStart(workflowId: string, key: string, notBefore: number): Promise<{ run: RunRow; requestHash: string } | undefined>;
  /**
   * Takes an idempotency key for the run `reservation.runId` before its id goes out, where
   * several nodes start runs (PostgreSQL): null once it holds the key, else the start that
   * holds it (whose run row may not be committed yet). Where one process writes the
   * database (SQLite) the key is stored with the run's row, and this holds nothing.
   */
  reserveIdempotencyKey(reservation: KeyReservation): Promise<{ runId: string; requestHash: string } | null>;
  /** Marks a run that a graceful shutdown stopped between steps: its resume is not a crash. */
  markPaused(runId: string): Promise<void>;
  /** Marks a run suspended again on waits its earlier execution opened. */
  markSuspended(runId: string, wait: WaitColumns): Promise<void>;
  /** Keeps a signal for the run's next wait for `name`; refused past `limit` kept signals. */
  keepSignal(runId: string, name: string, payload: unknown, limit: number): Promise<number>;
  /** The oldest kept signal named `name` for the run, skipping `taken` ones. */
  oldestSignal(runId: string, name: string, taken: ReadonlySet<number>): Promise<StoredSignal | undefined>;
  /** Records that a cancel was asked for, so it is honoured even if the process dies first (or another node runs it). */
  markCancelRequested(runId: string): Promise<void>;
}

/** Which finished runs are past their retention. */
export interface ExpiredFilter {
  /** Runs that finished before this (epoch ms). */
  finishedBefore: number;
  /** Only runs of this workflow. */
  workflowId?: string | undefined;
  /** Only runs of workflows other than these (those with a retention of their own). */
  exceptWorkflows?: readonly string[] | undefined;
  limit: number;
}

/** A finished run due for pruning. */
export interface ExpiredRun {
  runId: string;
  workflowId: string;
  finishedAt: number;
  /** How many events it has (its last index + 1). */
  events: number;
}

/**
 * Retention (DESIGN §10): finding finished runs past it, removing their events in small
 * transactions (the run row stays, with `pruned_at`), and deleting whole runs on request.
 */
export interface RunRetention {
  /** Finished runs not pruned yet, oldest finished first. */
  expired(filter: ExpiredFilter): Promise<ExpiredRun[]>;
  /** Runs whose removal (a prune, or a delete) is under way: one that a crash or a stop interrupted. */
  unfinishedPrunes(limit: number): Promise<string[]>;
  /**
   * One small transaction: marks the finished run pruned (from then on reading its events
   * answers RUN_EXPIRED) and deletes up to `maxEvents` of them, oldest first; with the last
   * ones, a run being deleted loses its row too. Null if the run is unknown, not finished,
   * or already pruned; else how many went, and whether none are left.
   */
  pruneStep(runId: string, maxEvents: number, now: number): Promise<{ deleted: number; done: boolean } | null>;
  /**
   * Marks a finished run for deletion (RUN_NOT_FOUND, RUN_NOT_FINISHED otherwise): its
   * events read as expired from then on, and prune steps remove them and then its row.
   */
  beginDelete(runId: string, now: number): Promise<void>;
  /** Finished runs neither pruned nor compacted that finished before `finishedBefore`, oldest first. */
  compactable(finishedBefore: number, limit: number): Promise<string[]>;
  /**
   * One small transaction of a compaction (see compaction.ts): folds the next `maxRows`
   * streamed deltas of the finished run from index `from` on; with the last ones, marks the run compacted.
   */
  compactStep(runId: string, from: number, maxRows: number, now: number): Promise<CompactStep>;
  /** Gives up to `maxPages` pages that pruning freed back to the file system (SQLite); a no-op on PostgreSQL. */
  reclaimSpace(maxPages: number): Promise<void>;
}

/** What a step of a compaction did: events removed, where the next step starts (null: done), the size of the fold it may extend. */
export interface CompactStep {
  removed: number;
  next: number | null;
  tailBytes: number;
}

/** Told of each commit: the events it stored, and how long it took (seconds). */
export type CommitObserver = (events: readonly CommittedEvent[], seconds: number) => void;

/** Tells an observer of a commit; what it throws never reaches the commit's waiters or followers. */
export function observe(observer: CommitObserver, events: readonly CommittedEvent[], seconds: number): void {
  try {
    observer(events, seconds);
  } catch {
    // Metrics are not worth a run.
  }
}

/** A stored checkpoint, as a resumed run reads it. */
export interface StoredCheckpoint {
  path: string;
  stepName: string | null;
  output: unknown;
}

/** A step that started in the latest attempt and never completed. */
export interface InterruptedStep {
  index: number;
  path: string;
  name: string;
}

/** What resuming a run needs to know from the database. */
export interface ResumeState {
  /** In the order they were written. */
  checkpoints: StoredCheckpoint[];
  /** In the order they started. */
  interruptedSteps: InterruptedStep[];
  /** For a run that goes on after a wait: the start events it already sent in this attempt (see `startKey`). */
  started: Set<string>;
}

/** A suspended run and its open waits (durable call key → what it waits for), oldest first. */
export interface SuspendedRun {
  runId: string;
  workflowId: string;
  cancelRequestedAt: number | null;
  waits: { key: string; record: unknown }[];
}

/** What resuming runs reads: checkpoints, interrupted steps, unfinished and suspended runs. */
export interface ResumeReads {
  /** Runs that wait (`waiting`, `paused`), with their open waits; only those in `runIds` if given. */
  suspendedRuns(runIds?: readonly string[]): Promise<SuspendedRun[]>;
  /** Waiting or paused runs that had a step running besides their wait when their process stopped. */
  interruptedWhileWaiting(): Promise<Set<string>>;
  /** The index of the step's latest StepStarted, or null. */
  latestStepStart(runId: string, stepPath: string): Promise<number | null>;
  /** Like `read`, for a run that goes on after a wait: with the start events it need not send again. */
  readForWake(runId: string): Promise<ResumeState>;
  /** Runs left `pending` or `running` by a previous process, oldest first. */
  unfinishedRuns(): Promise<RunRow[]>;
  /** The checkpoints and interrupted steps of one run. */
  read(runId: string): Promise<ResumeState>;
}

/** Reading a run's log without the writer (the CLI). */
export interface LogReads {
  /** The run's events after `afterIndex` (-1: from the start), in index order. */
  readAfter(runId: string, afterIndex: number): AsyncIterable<CommittedEvent>;
  /** How long each of the run's steps took, in the order they ended. */
  stepTimings(runId: string): Promise<StepTiming[]>;
}

/**
 * Which node executes a run. On SQLite one process owns the whole file (ServerLock), so
 * every claim succeeds. On PostgreSQL a claim is a lease the node renews; appends are
 * fenced by it, and a run whose node died is offered to the others once its lease lapses.
 */
export interface RunOwnership {
  /** Whether runs may be executed by other processes on this database (PostgreSQL). */
  readonly shared: boolean;
  /** Takes the run for this process: false if another live node holds it. */
  claim(runId: string): Promise<boolean>;
  /** Gives the run up (it ended, or this process stops): another node may take it at once. */
  release(runId: string): void;
  /** Whether this process holds the run. */
  holds(runId: string): boolean;
  /** Asks every node to look at the run again (a signal kept, a cancel asked, a run handed over): a no-op on SQLite. */
  wake(runId: string): void;
  /**
   * Calls `onLost` for a held run another node took over (this one was cut off past its
   * lease), `onOrphan` for an unfinished run whose node died or let it go, and
   * `onCancelRequested` for a held run that a cancel sent to another node asks to stop.
   */
  watch(hooks: OwnershipHooks): void;
}

/** What RunOwnership reports to the engine. */
export interface OwnershipHooks {
  onLost(runId: string): void;
  onOrphan(runId: string): void;
  onCancelRequested(runId: string): void;
  /** A wait of a run (another node's signal, continue or cancel) may have ended: look again. */
  onWake(runId: string): void;
}

/** An open flowd store, as the server uses it. */
export interface Store {
  /** Where it is: a file path, or the PostgreSQL URL without its password. */
  readonly location: string;
  readonly log: RunLog;
  readonly runs: RunRecords;
  readonly resume: ResumeReads;
  readonly ownership: RunOwnership;
  readonly retention: RunRetention;
  /** Why the server cannot store events now (for `/health`), or null while it can. */
  storageProblem(): FlowdError | null;
  /** Unfinished runs stopped because their events could not be stored. */
  readonly runsStoppedByStorage: number;
  /** Bytes the database takes: the SQLite file and its WAL, or PostgreSQL's database (no WAL figure). */
  storageBytes(): Promise<{ database: number; wal: number | null }>;
  close(): Promise<void>;
}

/** A store opened for reading only (the CLI, while a server writes). */
export interface ReadOnlyStore {
  readonly location: string;
  readonly runs: RunReads;
  readonly reads: LogReads;
  close(): Promise<void>;
}
