import type pg from "pg";
import { Errors } from "../../errors.ts";
import { CommittedEvent, EventBatch, type RunEventName } from "../../protocol/run-events.ts";
import { withGaps } from "../compaction.ts";
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
  // Nothing, or not the next index: a prune deletes a run's events oldest first (see EventReader.readPage).
  if (events[0]?.index !== afterIndex + 1) {
    const { rows } = await pool.query<{ pruned_at: string | null }>({ name: "flowd-pruned-at", text: "SELECT pruned_at FROM runs WHERE run_id = $1", values: [runId] });
    const prunedAt = rows[0]?.pruned_at ?? null;
    if (prunedAt !== null) throw Errors.runExpired(runId, Number(prunedAt));
  }
  return events.length === 0 ? null : { batch: new EventBatch(withGaps(runId, afterIndex, events)), full: events.length === limit || chars >= maxChars };
}
