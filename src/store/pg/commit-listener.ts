import pg from "pg";

/** The channel a commit is announced on: one NOTIFY per run per batch, sent by PostgreSQL when (and only if) the batch commits. */
export const COMMIT_CHANNEL = "flowd_commits";

/** The channel on which a node asks the others to look at a run again (a signal kept, a cancel asked, a run handed over): its id. */
export const WAKE_CHANNEL = "flowd_wakes";

/** What a node hears of another node's commit: the run, and the index of its last event in that batch. */
export interface CommitNotice {
  runId: string;
  lastIndex: number;
}

/** Parses a notification's payload (`<last index>:<run id>`), or null for one that is not flowd's. */
export function parseCommitNotice(payload: string | undefined): CommitNotice | null {
  if (!payload) return null;
  const colon = payload.indexOf(":");
  const lastIndex = Number(payload.slice(0, colon));
  if (colon < 1 || !Number.isInteger(lastIndex)) return null;
  return { runId: payload.slice(colon + 1), lastIndex };
}

/** The payload announcing that a run's events up to `lastIndex` are committed. */
export function commitNoticePayload(runId: string, lastIndex: number): string {
  return `${lastIndex}:${runId}`;
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
