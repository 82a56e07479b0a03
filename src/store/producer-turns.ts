/** How long producers may run in a turn before they let the event loop serve sockets. */
const PRODUCER_SLICE_MS = 1;

/**
 * How long one producer runs before the next waiting one gets the rest of the slice.
 * Producers take turns in streaks rather than event by event: a batch then holds long
 * runs of few runs' events, and its commit touches few places in the events index.
 */
const PRODUCER_QUANTUM_MS = 0.25;

/**
 * While anyone waits for a commit (a live follower), the slice also ends once this many
 * writes are queued: committing and delivering them takes a couple of milliseconds, after
 * which the event loop serves sockets again (a burst of starts gets its first events sooner).
 */
const WATCHED_SLICE_EVENTS = 300;

/**
 * While runs are being started (one was created in the last STARTING_WINDOW_MS), a slice
 * ends at this many writes instead. A burst of starts then waits behind commits of a few
 * dozen events rather than of WATCHED_SLICE_EVENTS (with their delivery), so each
 * start's first event leaves sooner; once the burst is over, slices grow back.
 */
const STARTING_SLICE_EVENTS = 32;
const STARTING_WINDOW_MS = 1;

/** What pacing producers needs from the event log whose commits end their slices. */
export interface TurnHost {
  /** Writes queued for the next commit. */
  pendingCount(): number;
  /** Whether someone waits for what is queued (a live follower, a new run's id is out). */
  commitDue(now: number): boolean;
  /** Commits what is queued if it is due (else makes sure it commits soon). */
  commitIfDue(): void;
  /** Makes sure a turn of the log (`ProducerTurns.newTurn`) runs after the event loop's next I/O. */
  scheduleTurn(): void;
}

/**
 * Paces producers that never await I/O (a generator yielding in a loop). Producers
 * share a slice of each turn of the event loop (PRODUCER_SLICE_MS, fewer events while
 * anyone waits for a commit), then wait for the next turn, after the event loop has
 * served sockets: without it such a producer would starve every client, and its events
 * would pile up faster than they are sent. Within the slice they take streaks of
 * PRODUCER_QUANTUM_MS each, in the order they came to wait, one at a time.
 *
 * A slice ends with a commit of what it produced, so the slice and the group commit
 * are paced together: the log calls `newTurn` after committing at each turn.
 */
export class ProducerTurns {
  /**
   * When producers first asked to go on since the last turn (null: not yet). The slice
   * starts there, not when the turn did: a producer woken by I/O after the loop sat idle
   * (a paced or streaming one) has used none of it, and emits at once.
   */
  private sliceStartedAt: number | null = null;
  /** The slice of this turn is used up: producers wait for the next turn. */
  private sliceOver = false;
  /** When the last run was created (performance.now()): slices stay short while runs are being started. */
  private lastRunCreatedAt = -Infinity;
  /** Producers waiting for the slice, in order; each is resumed alone. */
  private readonly waiting: { producer: string; resume: () => void }[] = [];
  /** The producer whose streak it is (null: the next to ask takes it). */
  private current: string | null = null;
  private quantumStartedAt = 0;

  constructor(private readonly host: TurnHost) {}

  /** A run was created: slices stay short for a while, as more starts may be arriving. */
  runCreated(now: number): void {
    this.lastRunCreatedAt = now;
  }

  /** A new turn of the event loop (after the log's commit): a fresh slice, and the longest-waiting producer goes on. */
  newTurn(now: number): void {
    this.sliceStartedAt = null;
    this.sliceOver = false;
    this.current = null;
    this.handOver(now);
  }

  /** Called by `producer` (its run id) before each event: null to go on, or a promise to await first. */
  yieldTurn(producer: string): Promise<void> | null {
    const now = performance.now();
    if (this.sliceStartedAt === null) {
      this.sliceStartedAt = now;
      // The next turn ends this slice, however the producers go on.
      this.host.scheduleTurn();
    }
    if (!this.sliceOver && (now - this.sliceStartedAt >= PRODUCER_SLICE_MS || this.sliceFull(now))) {
      // Commit what the slice produced now, so requests served before the next turn (a
      // burst of starts) commit in small batches of their own.
      this.sliceOver = true;
      this.current = null;
      this.host.commitIfDue();
    }
    if (this.sliceOver) return this.wait(producer);
    if (this.current === null) {
      this.current = producer;
      this.quantumStartedAt = now;
    }
    // Another producer's streak: wait for its end.
    if (this.current !== producer) return this.wait(producer);
    if (now - this.quantumStartedAt < PRODUCER_QUANTUM_MS) return null;
    if (this.waiting.length === 0) {
      // Nobody else waits: a fresh streak.
      this.quantumStartedAt = now;
      return null;
    }
    // The streak is over and others wait: the longest-waiting one gets the rest of the slice.
    const wait = this.wait(producer);
    this.handOver(now);
    return wait;
  }

  /** Resumes the longest-waiting producer, whose streak starts now. */
  private handOver(now: number): void {
    const next = this.waiting.shift();
    if (!next) return;
    this.current = next.producer;
    this.quantumStartedAt = now;
    next.resume();
    // Whoever waits after it gets the next turn at the latest, whatever this one does.
    if (this.waiting.length > 0) this.host.scheduleTurn();
  }

  /** Whether the slice has queued as many writes as someone waiting for a commit should wait behind. */
  private sliceFull(now: number): boolean {
    const limit = now - this.lastRunCreatedAt < STARTING_WINDOW_MS ? STARTING_SLICE_EVENTS : WATCHED_SLICE_EVENTS;
    return this.host.pendingCount() >= limit && this.host.commitDue(now);
  }

  private wait(producer: string): Promise<void> {
    this.host.scheduleTurn();
    return new Promise((resume) => this.waiting.push({ producer, resume }));
  }
}
