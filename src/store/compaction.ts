import { CommittedEvent } from "../protocol/run-events.ts";

/** A stored RunContent event, or a RunContentCompacted one that a fold under way may extend: its index and frame. */
export interface DeltaRow {
  index: number;
  payload: string;
}

/** What compacting a run of deltas stores: one frame at `first` in place of the events `first`..`last`. */
export interface Fold {
  first: number;
  last: number;
  frame: string;
}

/** The event kinds a fold reads. */
export const FOLDED_EVENTS = ["RunContent", "RunContentCompacted"] as const;

/**
 * How a finished run's RunContent deltas fold: each unbroken sequence of indices whose
 * deltas come from one stream (the same agent run, or the same step's own stream) becomes
 * one RunContentCompacted event at its first index, with the whole text and
 * `compacted_to_index`; every other event keeps its index. Sequences of one are left.
 *
 * A compaction goes a window of rows at a time, each its own transaction: a window that
 * ends inside a sequence folds what it has, and the next window, starting at `tail` (the
 * last sequence's first index), extends that RunContentCompacted event with the rest.
 * Every state in between is a log a reader can read.
 */
export function planFolds(rows: readonly DeltaRow[]): { folds: Fold[]; tail: number | null } {
  const folds: Fold[] = [];
  /** The sequence being read: its first event (parsed), its texts, its last index. */
  let group: { first: Record<string, unknown>; firstIndex: number; lastIndex: number; stream: string; texts: string[]; grew: boolean } | null = null;
  const close = (): void => {
    if (group && group.grew) {
      const { event: _event, content: _content, ...rest } = group.first;
      const last = group.lastIndex;
      folds.push({ first: group.firstIndex, last, frame: JSON.stringify({ event: "RunContentCompacted", content: group.texts.join(""), ...rest, compacted_to_index: last }) });
    }
    group = null;
  };
  for (const row of rows) {
    const parsed = JSON.parse(row.payload) as Record<string, unknown>;
    const stream = typeof parsed.agent_run_id === "string" ? `agent:${parsed.agent_run_id}` : `step:${String(parsed.step_path)}`;
    const lastIndex = parsed.event === "RunContentCompacted" ? (parsed.compacted_to_index as number) : row.index;
    if (group && group.stream === stream && group.lastIndex === row.index - 1) {
      group.texts.push(parsed.content as string);
      group.lastIndex = lastIndex;
      group.grew = true;
      continue;
    }
    close();
    group = { first: parsed, firstIndex: row.index, lastIndex, stream, texts: [parsed.content as string], grew: false };
  }
  const tail = (group as { firstIndex: number } | null)?.firstIndex ?? null;
  close();
  return { folds, tail };
}

/**
 * The notice a reader gets in place of indices that no longer exist, `from`..`to`, at `to`
 * (what it resumes after): their text is in the RunContentCompacted event at `into`.
 */
export function gapNotice(runId: string, from: number, to: number, into: number | null): CommittedEvent {
  return new CommittedEvent(runId, to, "gap", JSON.stringify({ event: "gap", run_id: runId, from_index: from, to_index: to, reason: "compacted", compacted_into: into }));
}

/** The last index a RunContentCompacted event stands for, from its frame; null for any other event. */
export function foldEnd(event: CommittedEvent): number | null {
  if (event.event !== "RunContentCompacted") return null;
  return (JSON.parse(event.frame) as { compacted_to_index: number }).compacted_to_index;
}

/**
 * A range of a run's events as read after `afterIndex`, with a gap notice wherever indices
 * are missing because compaction folded them (a reader never mistakes that hole for a
 * loss). `before` is the RunContentCompacted event at or before `afterIndex` whose fold
 * reaches past it, if the range starts inside one. `unexplained`: a hole no fold accounts
 * for, which only a prune under way makes (the caller says RUN_EXPIRED).
 */
export function withGaps(runId: string, afterIndex: number, events: readonly CommittedEvent[], before: CommittedEvent | null): { events: CommittedEvent[]; unexplained: boolean } {
  const out: CommittedEvent[] = [];
  let expected = afterIndex + 1;
  let previous = before;
  let unexplained = false;
  for (const event of events) {
    if (event.index > expected) {
      const end = previous ? foldEnd(previous) : null;
      if (end === event.index - 1) out.push(gapNotice(runId, expected, event.index - 1, previous!.index));
      else unexplained = true;
    }
    out.push(event);
    previous = event;
    expected = event.index + 1;
  }
  return { events: out, unexplained };
}
