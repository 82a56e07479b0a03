import { requirementKind, type StepRequirement } from "../protocol/hitl.ts";
import type { WaitColumns } from "../store/store.ts";
import type { StepLocation } from "../protocol/run-events.ts";

/**
 * A wait's start as stored (the checkpoint `<key>@wait`): enough to register it again
 * after a restart and to end it without the step that opened it.
 */
export type WaitRecord =
  | { kind: "timer"; loc: StepLocation; wakeAt: number }
  | { kind: "signal"; loc: StepLocation; name: string; timeoutAt: number | null; schema: StoredSchema | null }
  | {
      kind: "human";
      loc: StepLocation;
      requirement: StepRequirement;
      pauseKind: "step" | "executor";
      timeoutAt: number | null;
      /** The JSON Schema `user_input` must match, if the step asks for input. */
      schema: StoredSchema | null;
    };

/** A JSON Schema, as stored with a wait (a zod schema made storable). */
export type StoredSchema = Record<string, unknown>;

/** What a run row says while the run waits on `record` (the same as its WaitStarted or WorkflowPaused sets). */
export function waitColumns(record: WaitRecord): WaitColumns {
  switch (record.kind) {
    case "timer":
      return { status: "waiting", waitKind: "timer", waitName: null, waitUntil: record.wakeAt };
    case "signal":
      return { status: "waiting", waitKind: "signal", waitName: record.name, waitUntil: record.timeoutAt };
    case "human":
      return { status: "paused", waitKind: requirementKind(record.requirement), waitName: record.loc.step_name, waitUntil: record.timeoutAt };
  }
}

/** When a wait ends by itself, if ever. */
function deadline(record: WaitRecord): number | null {
  return record.kind === "timer" ? record.wakeAt : record.timeoutAt;
}

interface Deadline {
  at: number;
  runId: string;
  key: string;
  record: WaitRecord;
}

/** setTimeout's longest delay; a later deadline is looked at again then. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Every open wait of every suspended run, and the one timer that ends them: a binary heap
 * of deadlines, with one setTimeout for the earliest. A wait costs its record and a heap
 * entry; nothing of the run's execution is kept.
 */
export class WaitBoard {
  private readonly byRun = new Map<string, Map<string, WaitRecord>>();
  private readonly heap: Deadline[] = [];
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private closed = false;
  /** Heap entries whose wait has ended. */
  private stale = 0;

  /** `onDue` is called once for each wait whose deadline passes while it is open; `onError` when it throws. */
  constructor(
    private readonly onDue: (runId: string, key: string, record: WaitRecord) => void,
    private readonly onError: (runId: string, error: unknown) => void,
  ) {}

  /** Registers an open wait (again, harmlessly, if it is already registered). */
  open(runId: string, key: string, record: WaitRecord): void {
    let waits = this.byRun.get(runId);
    if (!waits) {
      waits = new Map();
      this.byRun.set(runId, waits);
    }
    if (waits.has(key)) return;
    waits.set(key, record);
    const at = deadline(record);
    if (at !== null) this.push({ at, runId, key, record });
  }

  /** Ends an open wait: its record, or undefined if it was not open (someone else ended it first). */
  take(runId: string, key: string): WaitRecord | undefined {
    const waits = this.byRun.get(runId);
    const record = waits?.get(key);
    if (!waits || !record) return undefined;
    waits.delete(key);
    if (waits.size === 0) this.byRun.delete(runId);
    if (deadline(record) !== null) this.forgot(1);
    return record;
  }

  /** Whether the run has an open wait. */
  has(runId: string): boolean {
    return this.byRun.has(runId);
  }

  /** The run's open waits, oldest first. */
  of(runId: string): ReadonlyMap<string, WaitRecord> {
    return this.byRun.get(runId) ?? new Map();
  }

  /** The run's oldest open wait for a signal named `name`. */
  signalWait(runId: string, name: string): [string, Extract<WaitRecord, { kind: "signal" }>] | undefined {
    for (const [key, record] of this.of(runId)) {
      if (record.kind === "signal" && record.name === name) return [key, record];
    }
    return undefined;
  }

  /** The run's open wait for a person whose step is among `stepIds` (the last named), else its oldest. */
  humanWait(runId: string, stepIds: readonly (string | undefined)[] = []): [string, Extract<WaitRecord, { kind: "human" }>] | undefined {
    let oldest: [string, Extract<WaitRecord, { kind: "human" }>] | undefined;
    let named: [string, Extract<WaitRecord, { kind: "human" }>] | undefined;
    let namedAt = -1;
    for (const [key, record] of this.of(runId)) {
      if (record.kind !== "human") continue;
      oldest ??= [key, record];
      const at = stepIds.lastIndexOf(record.requirement.step_id);
      if (at > namedAt) {
        named = [key, record];
        namedAt = at;
      }
    }
    return named ?? oldest;
  }

  /** Forgets the run's waits (it ended). */
  dropRun(runId: string): void {
    const waits = this.byRun.get(runId);
    if (!waits) return;
    this.byRun.delete(runId);
    this.forgot([...waits.values()].filter((record) => deadline(record) !== null).length);
  }

  /**
   * Heap entries of ended waits are skipped when due; once they are most of the heap (a day's
   * answered waits with a day's timeout), it is rebuilt from the open ones.
   */
  private forgot(count: number): void {
    this.stale += count;
    if (this.stale < 1024 || this.stale * 2 < this.heap.length) return;
    const open = this.heap.filter((entry) => this.byRun.get(entry.runId)?.get(entry.key) === entry.record);
    this.heap.length = 0;
    this.stale = 0;
    for (const entry of open) this.push(entry);
  }

  /** Suspended runs. */
  get runCount(): number {
    return this.byRun.size;
  }

  /** Stops the timer (server shutdown). */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private push(entry: Deadline): void {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.at <= entry.at) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = entry;
    if (entry.at < this.timerAt) this.arm(entry.at);
  }

  private pop(): Deadline | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child = right < heap.length && heap[right]!.at < heap[left]!.at ? right : left;
        if (heap[child]!.at >= last.at) break;
        heap[i] = heap[child]!;
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }

  private arm(at: number): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(this.fire, Math.min(MAX_TIMER_MS, Math.max(0, at - Date.now())));
  }

  private readonly fire = (): void => {
    this.timer = null;
    this.timerAt = Infinity;
    const now = Date.now();
    while (this.heap.length > 0 && this.heap[0]!.at <= now) {
      const { runId, key, record } = this.pop()!;
      // Ended meanwhile (a signal, a continue, a cancel), or opened again with another record.
      if (this.byRun.get(runId)?.get(key) !== record) {
        this.stale = Math.max(0, this.stale - 1);
        continue;
      }
      try {
        this.onDue(runId, key, record);
      } catch (error) {
        // One wait that cannot end must not stop the others.
        this.onError(runId, error);
      }
    }
    const next = this.heap[0];
    if (next) this.arm(next.at);
  };
}
