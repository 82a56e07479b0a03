/** Formatting for human-readable CLI output. */

/** A fixed-width text table; columns sized to their widest cell. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/** Epoch milliseconds as a readable UTC time, or "-". */
export function time(ms: number | null): string {
  return ms === null ? "-" : new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

/** A duration in ms as "1.23s" / "2m03s". */
export function duration(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return "-";
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)}s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes}m${String(Math.floor((ms % 60_000) / 1000)).padStart(2, "0")}s`;
}

/** Shortens text to one line of at most `max` characters. */
export function oneLine(text: string, max = 60): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/** One event frame as a line: index, time, type, step, and its gist. */
export function eventLine(frame: Record<string, unknown>): string {
  if (frame.event === "gap") return `    …  --:--:--  gap: indices ${String(frame.from_index)}–${String(frame.to_index)} no longer exist (compacted into the event before)`;
  const index = String(frame.event_index).padStart(5);
  const at = typeof frame.created_at === "number" ? new Date(frame.created_at * 1000).toISOString().slice(11, 19) : "--:--:--";
  const step = typeof frame.step_name === "string" ? ` [${frame.step_name}]` : "";
  const gist =
    typeof frame.content === "string"
      ? ` ${JSON.stringify(oneLine(frame.content))}`
      : typeof frame.error === "string"
        ? ` error: ${oneLine(frame.error)}`
        : "";
  return `${index}  ${at}  ${String(frame.event)}${step}${gist}`;
}

/** What a waiting or paused run waits for, in a few words ("signal approved until 12:00:01"), or "-". */
export function waitingFor(wait: { kind: string; name: string | null; until: number | null } | null): string {
  if (!wait) return "-";
  const what =
    wait.kind === "signal" ? `signal "${wait.name ?? ""}"` : wait.kind === "timer" ? "timer" : `${wait.kind.replace("_", " ")}${wait.name ? ` of "${wait.name}"` : ""}`;
  return wait.until === null ? what : `${what} until ${time(wait.until)}`;
}
