import type pg from "pg";
import { Errors } from "../../errors.ts";
import { CommittedEvent, EventBatch, type RunEventName } from "../../protocol/run-events.ts";
import { foldEnd, withGaps } from "../compaction.ts";
import { PAGE_MAX_CHARS, type LogPage } from "../event-reader.ts";

/** Events read in a page's first step, before their size is known. */
const PAGE_FIRST_STEP = 32;

/**
 * At most `limit` of the run's events after `afterIndex`, and about `maxChars` of them
 * (always at least one), as EventReader.readPage reads them on SQLite: in steps, each
 * sized by the events read so far, so that large events cannot make one page hold
 * megabytes. Null if there are none.
 */
export async function readPgPage(pool: pg.Pool, runId: string, afterIndex: number, limit: number, maxChars = PAGE_MAX_CHARS): Promise<LogPage | null> {
  const events: CommittedEvent[] = [];
  let chars = 0;
  let after = afterIndex;
  let step = Math.min(limit, PAGE_FIRST_STEP);
  while (step > 0) {
    const { rows } = await pool.query<{ event_index: number; event: RunEventName; payload: string }>({
      name: "flowd-read-page",
      text: "SELECT event_index, event, payload FROM events WHERE run_id = $1 AND event_index > $2 ORDER BY event_index LIMIT $3",
      values: [runId, after, step],
    });
    for (const row of rows) {
      events.push(new CommittedEvent(runId, row.event_index, row.event, row.payload));
      chars += row.payload.length;
      if (chars >= maxChars) break;
    }
    if (rows.length < step || chars >= maxChars) break;
    after = events[events.length - 1]!.index;
    step = Math.min(limit - events.length, Math.ceil((maxChars - chars) / (chars / events.length)));
  }
  const checkKept = async (): Promise<void> => {
    const { rows } = await pool.query<{ pruned_at: string | null }>({ name: "flowd-pruned-at", text: "SELECT pruned_at FROM runs WHERE run_id = $1", values: [runId] });
    const prunedAt = rows[0]?.pruned_at ?? null;
    if (prunedAt !== null) throw Errors.runExpired(runId, Number(prunedAt));
  };
  // Nothing, or not the next index: a prune deletes a run's events oldest first (see EventReader.readPage).
  if (events[0]?.index !== afterIndex + 1) await checkKept();
  if (events.length === 0) return null;
  // Starting inside a fold: the compacted event that holds its text names it in the gap notice.
  let before: CommittedEvent | null = null;
  if (events[0]!.index > afterIndex + 1) {
    const { rows } = await pool.query<{ event_index: number; event: RunEventName; payload: string }>({
      name: "flowd-fold-before",
      text: "SELECT event_index, event, payload FROM events WHERE run_id = $1 AND event_index <= $2 AND event = 'RunContentCompacted' ORDER BY event_index DESC LIMIT 1",
      values: [runId, afterIndex],
    });
    const row = rows[0];
    if (row) {
      const fold = new CommittedEvent(runId, row.event_index, row.event, row.payload);
      if ((foldEnd(fold) ?? -1) > afterIndex) before = fold;
    }
  }
  const explained = withGaps(runId, afterIndex, events, before);
  // A hole no fold accounts for: a prune overtook this read between its statements.
  if (explained.unexplained) await checkKept();
  return { batch: new EventBatch(explained.events), full: events.length === limit || chars >= maxChars };
}
