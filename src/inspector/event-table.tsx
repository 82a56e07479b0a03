import { useEffect, useRef, useState } from "preact/hooks";
import type { RunModel } from "./run-model.ts";

/** Rows are one line each, so what is on screen follows from the scroll position alone. */
const ROW_HEIGHT = 24;
/** Rows rendered above and below the visible ones, so a scroll does not show blank rows. */
const OVERSCAN = 20;

function summary(event: Record<string, unknown>): string {
  // The envelope and the step's location are in the row already, or the same on every row.
  const { event: _, event_index: __, run_id: ___, workflow_id: ____, workflow_name: _____, session_id: ______, created_at: _______, step_name: _s, step_index: _i, step_path: _p, agent_run_id: _a, ...fields } = event;
  const text = JSON.stringify(fields);
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

/**
 * Every event of the run with its index, rendering only the rows on screen: a run of
 * 100,000 events costs the page what 60 rows cost. Follows the end while the run streams,
 * unless the reader scrolled up.
 */
export function EventTable({ model, version }: { model: RunModel; version: number }) {
  const box = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(480);
  const following = useRef(true);
  /** Where the table last scrolled itself to (following the end): a scroll event at or below it is not the reader's. */
  const autoTop = useRef(0);

  useEffect(() => {
    const element = box.current;
    if (!element) return;
    setHeight(element.clientHeight);
    const observer = new ResizeObserver(() => setHeight(element.clientHeight));
    observer.observe(element);
    return () => observer.disconnect();
  }, []);

  useEffect(() => {
    const element = box.current;
    if (element && following.current) {
      element.scrollTop = element.scrollHeight;
      autoTop.current = element.scrollTop;
      setScrollTop(element.scrollTop);
    }
  }, [version]);

  const total = model.events.length;
  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(total, Math.ceil((scrollTop + height) / ROW_HEIGHT) + OVERSCAN);
  const rows = [];
  for (let i = first; i < last; i++) {
    const event = model.events[i]!;
    const superseded = model.isSuperseded(event.event_index);
    rows.push(
      <div
        class={`event-row${superseded ? " superseded" : ""}`}
        style={{ top: `${i * ROW_HEIGHT}px` }}
        data-index={event.event_index}
        key={event.event_index}
        title={superseded ? "Superseded: a later attempt replaced this partial output" : undefined}
      >
        <span class="index">{event.event_index}</span>
        <span class="name">{event.event}</span>
        <span class="path">{"step_path" in event ? event.step_path : ""}</span>
        <span class="fields">{summary(event as unknown as Record<string, unknown>)}</span>
      </div>,
    );
  }
  return (
    <div
      class="event-table"
      ref={box}
      data-rows={total}
      onScroll={(e) => {
        const element = e.currentTarget;
        // Its own scroll's event can come after more rows were added: only a scroll up is the reader leaving the end.
        const atEnd = element.scrollTop + element.clientHeight >= element.scrollHeight - ROW_HEIGHT;
        following.current = atEnd || (following.current && element.scrollTop >= autoTop.current - ROW_HEIGHT);
        setScrollTop(element.scrollTop);
      }}
    >
      <div class="event-spacer" style={{ height: `${total * ROW_HEIGHT}px` }}>
        {rows}
      </div>
    </div>
  );
}
