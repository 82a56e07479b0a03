import type { Database, Statement } from "better-sqlite3";
import { Errors } from "../errors.ts";
import { CommittedEvent, EventBatch, type RunEventName } from "../protocol/run-events.ts";
import { foldEnd, withGaps } from "./compaction.ts";

/** An event row as `[event_index, event, payload]`: rows as arrays, not objects, read faster (catch-up reads many). */
type EventRow = [index: number, event: RunEventName, payload: string];

/** A page read from the log: its events, and whether it ended because it was full (more may follow). */
export interface LogPage {
  batch: EventBatch;
  full: boolean;
}

/** A step's timing, as the `step_timings` view has it. */
export interface StepTiming {
  step_path: string;
  step_name: string;
  outcome: string;
  duration_ms: number;
  started: string;
}

/** A run's step timings in the order they ended (`?`: the run id); the same SQL on SQLite and PostgreSQL. */
export const STEP_TIMINGS_SQL = "SELECT step_path, step_name, outcome, duration_ms, started FROM step_timings WHERE run_id = ? ORDER BY event_index";

/** Characters of payload after which a page read from the log ends (~512 KB; always at least one event). */
export const PAGE_MAX_CHARS = 512 * 1024;
/** Events read in a page's first step, before their size is known. */
const PAGE_FIRST_STEP = 32;

/**
 * The read side of the run log: ranges of a run's events and its step timings, on any
 * connection, read-only ones included. The server's EventLog reads through one; the CLI
 * uses one on its own, without the writer.
 */
export class EventReader {
  private readonly selectAfter: Statement<[string, number], EventRow>;
  private readonly selectPage: Statement<[string, number, number], EventRow>;
  private readonly selectTimings: Statement<[string], StepTiming>;
  private readonly selectPruned: Statement<[string], { pruned_at: number | null }>;
  private readonly selectFoldBefore: Statement<[string, number], EventRow>;

  constructor(sqlite: Database) {
    this.selectAfter = sqlite
      .prepare<[string, number], EventRow>("SELECT event_index, event, payload FROM events WHERE run_id = ? AND event_index > ? ORDER BY event_index")
      .raw(true);
    this.selectPage = sqlite
      .prepare<[string, number, number], EventRow>(
        "SELECT event_index, event, payload FROM events WHERE run_id = ? AND event_index > ? ORDER BY event_index LIMIT ?",
      )
      .raw(true);
    this.selectTimings = sqlite.prepare<[string], StepTiming>(STEP_TIMINGS_SQL);
    this.selectPruned = sqlite.prepare<[string], { pruned_at: number | null }>("SELECT pruned_at FROM runs WHERE run_id = ?");
    this.selectFoldBefore = sqlite
      .prepare<[string, number], EventRow>(
        "SELECT event_index, event, payload FROM events WHERE run_id = ? AND event_index <= ? AND event = 'RunContentCompacted' ORDER BY event_index DESC LIMIT 1",
      )
      .raw(true);
  }

  /**
   * Throws RUN_EXPIRED if the run's events are being (or were) pruned. Called when a read
   * after `afterIndex` found nothing, or not the next index: a prune deletes a run's events
   * oldest first, so a reader behind it finds a hole, never a silent skip. (A hole in a run
   * not pruned is compaction's: the read says so with a gap notice, see withGaps.)
   */
  private checkKept(runId: string, afterIndex: number, first: number | undefined): void {
    if (first === afterIndex + 1) return;
    const prunedAt = this.selectPruned.get(runId)?.pruned_at ?? null;
    if (prunedAt !== null) throw Errors.runExpired(runId, prunedAt);
  }

  /** The compacted event whose fold `afterIndex` is inside of, if any. */
  private foldBefore(runId: string, afterIndex: number): CommittedEvent | null {
    const row = this.selectFoldBefore.get(runId, afterIndex);
    if (!row) return null;
    const event = new CommittedEvent(runId, row[0], row[1], row[2]);
    return (foldEnd(event) ?? -1) > afterIndex ? event : null;
  }

  /**
   * `events` read after `afterIndex`, with gap notices for folded indices (see withGaps);
   * `previous`: the event at `afterIndex` when the reader has it, else it is looked up.
   */
  private explained(runId: string, afterIndex: number, events: CommittedEvent[], previous?: CommittedEvent | null): CommittedEvent[] {
    const before = previous !== undefined ? previous : events[0] !== undefined && events[0].index > afterIndex + 1 ? this.foldBefore(runId, afterIndex) : null;
    const result = withGaps(runId, afterIndex, events, before);
    if (result.unexplained) this.checkKept(runId, afterIndex, undefined);
    return result.events;
  }

  /** The run's events after `afterIndex` (-1: from the start), in index order, read lazily. */
  *readAfter(runId: string, afterIndex: number): Generator<CommittedEvent> {
    let previous: CommittedEvent | null = null;
    for (const [index, event, payload] of this.selectAfter.iterate(runId, afterIndex)) {
      const read = new CommittedEvent(runId, index, event, payload);
      const expected = (previous?.index ?? afterIndex) + 1;
      // The next index, as almost always; else a fold (named by a gap notice) or a prune (RUN_EXPIRED).
      if (index === expected) yield read;
      else yield* this.explained(runId, expected - 1, [read], previous);
      previous = read;
    }
    if (previous === null) this.checkKept(runId, afterIndex, undefined);
  }

  /**
   * At most `limit` events after `afterIndex`, and about `maxChars` of them: one page of
   * a catch-up, or null if there are none. Pages are not kept for other subscribers at
   * the same place: kept even for one turn, they outlive V8's young generation, and a
   * stalled subscriber's catch-up then grows the server (bench/README.md, B8).
   */
  readPage(runId: string, afterIndex: number, limit: number, maxChars = PAGE_MAX_CHARS): LogPage | null {
    // Bounded in size as well as in count, so that large events cannot make one page (and
    // the write it becomes) hold megabytes: read in steps, each sized by the events read so
    // far, and end after the event that passes `maxChars`. (Whole steps with .all() read
    // much faster than row by row with .iterate().)
    const events: CommittedEvent[] = [];
    let chars = 0;
    let after = afterIndex;
    let step = Math.min(limit, PAGE_FIRST_STEP);
    while (step > 0) {
      const rows = this.selectPage.all(runId, after, step);
      for (const [index, event, payload] of rows) {
        events.push(new CommittedEvent(runId, index, event, payload));
        chars += payload.length;
        if (chars >= maxChars) break;
      }
      if (rows.length < step || chars >= maxChars) break;
      after = events[events.length - 1]!.index;
      const average = chars / events.length;
      step = Math.min(limit - events.length, Math.ceil((maxChars - chars) / average));
    }
    this.checkKept(runId, afterIndex, events[0]?.index);
    return events.length === 0 ? null : { batch: new EventBatch(this.explained(runId, afterIndex, events)), full: events.length === limit || chars >= maxChars };
  }

  /** How long each of the run's steps took, in the order they ended. */
  stepTimings(runId: string): StepTiming[] {
    return this.selectTimings.all(runId);
  }
}
