import type { StepRequirement } from "../protocol/hitl.ts";
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

  /** `onDue` is called once for each wait whose deadline passes while it is open. */
  constructor(private readonly onDue: (runId: string, key: string, record: WaitRecord) => void) {}

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

  /** The run's oldest open wait for a person. */
  humanWait(runId: string): [string, Extract<WaitRecord, { kind: "human" }>] | undefined {
    for (const [key, record] of this.of(runId)) {
      if (record.kind === "human") return [key, record];
    }
    return undefined;
  }

  /** Forgets the run's waits (it ended). */
  dropRun(runId: string): void {
    this.byRun.delete(runId);
  }

  /** Open waits in all. */
  get size(): number {
    let count = 0;
    for (const waits of this.byRun.values()) count += waits.size;
    return count;
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
      if (this.byRun.get(runId)?.get(key) !== record) continue;
      this.onDue(runId, key, record);
    }
    const next = this.heap[0];
    if (next) this.arm(next.at);
  };
}
