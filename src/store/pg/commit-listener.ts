import pg from "pg";
import { CommittedEvent, type RunEventName } from "../../protocol/run-events.ts";
import { EVENT_COLUMNS } from "../batch-plan.ts";

/** The channel a commit is announced on: one NOTIFY per run per batch, sent by PostgreSQL when (and only if) the batch commits. */
export const COMMIT_CHANNEL = "flowd_commits";

/** The channel on which a node asks the others to look at a run again (a signal kept, a cancel asked, a run handed over): its id. */
export const WAKE_CHANNEL = "flowd_wakes";

/**
 * What a node hears of another node's commit: the run, the index of its last event in
 * that batch, and, when they were small enough to ride along, the events themselves.
 */
export interface CommitNotice {
  runId: string;
  lastIndex: number;
  /** The batch's events of the run (`<event>\t<frame>` lines), or null: read them from the log. */
  inline: string | null;
}

/**
 * Parses a notification's payload (`<last index>:<run id>`, then, if the events came
 * along, a line per event), or null for one that is not flowd's.
 */
export function parseCommitNotice(payload: string | undefined): CommitNotice | null {
  if (!payload) return null;
  const colon = payload.indexOf(":");
  const lastIndex = Number(payload.slice(0, colon));
  if (colon < 1 || !Number.isInteger(lastIndex)) return null;
  const newline = payload.indexOf("\n", colon);
  if (newline < 0) return { runId: payload.slice(colon + 1), lastIndex, inline: null };
  return { runId: payload.slice(colon + 1, newline), lastIndex, inline: payload.slice(newline + 1) };
}

/** A notice's events, as committed (the last one at `lastIndex`); null if it carries none. */
export function inlineEvents(notice: CommitNotice): CommittedEvent[] | null {
  if (notice.inline === null) return null;
  const lines = notice.inline.split("\n");
  const first = notice.lastIndex - lines.length + 1;
  return lines.map((line, i) => {
    const tab = line.indexOf("\t");
    return new CommittedEvent(notice.runId, first + i, line.slice(0, tab) as RunEventName, line.slice(tab + 1));
  });
}

/** Largest notice PostgreSQL sends is 8000 bytes; a run's events ride along only well under it. */
const INLINE_NOTICE_BYTES = 7000;

/**
 * What follows a run's notice for events `rows` (EVENT_COLUMNS values each): a line per
 * event (event name, tab, frame; a JSON frame holds no raw line break), or "" if they do
 * not fit in `budget` bytes, which then shrinks by what they take.
 */
export function inlineTail(rows: readonly unknown[], budget: { bytes: number }): string {
  let tail = "";
  for (let i = 0; i < rows.length; i += EVENT_COLUMNS) {
    tail += `\n${rows[i + 2] as string}\t${rows[i + 4] as string}`;
    // A char takes at most 3 bytes in UTF-8: count exactly only when that bound is over.
    if (tail.length > INLINE_NOTICE_BYTES || tail.length > budget.bytes) return "";
  }
  const bytes = tail.length * 3 <= Math.min(INLINE_NOTICE_BYTES, budget.bytes) ? tail.length * 3 : Buffer.byteLength(tail);
  if (bytes > INLINE_NOTICE_BYTES || bytes > budget.bytes) return "";
  budget.bytes -= bytes;
  return tail;
}

/**
 * Hears every node's commits on one dedicated connection (LISTEN), and hands each notice
 * to `onCommit`. The connection is opened again after it drops; `onReconnected` is called
 * then, since notices sent meanwhile are lost and followers must read what they missed.
 */
export class CommitListener {
  private client: pg.Client | null = null;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly onCommit: (notice: CommitNotice) => void,
    private readonly onReconnected: () => void = () => {},
    private readonly onError: (error: unknown) => void = () => {},
    private readonly onWake: (runId: string) => void = () => {},
  ) {}

  /** Resolves once it listens. */
  async start(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url });
    client.on("notification", (message) => {
      if (message.channel === WAKE_CHANNEL) {
        if (message.payload) this.onWake(message.payload);
        return;
      }
      const notice = message.channel === COMMIT_CHANNEL ? parseCommitNotice(message.payload) : null;
      if (notice) this.onCommit(notice);
    });
    client.on("error", (error) => {
      this.onError(error);
      void this.reconnect();
    });
    await client.connect();
    await client.query(`LISTEN ${COMMIT_CHANNEL}; LISTEN ${WAKE_CHANNEL}`);
    this.client = client;
  }

  private async reconnect(): Promise<void> {
    const old = this.client;
    this.client = null;
    await old?.end().catch(() => {});
    for (let delay = 100; !this.closed; delay = Math.min(delay * 2, 5000)) {
      try {
        await this.start();
        this.onReconnected();
        return;
      } catch (error) {
        this.onError(error);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.client?.end().catch(() => {});
    this.client = null;
  }
}
