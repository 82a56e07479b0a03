import type pg from "pg";
import type { OwnershipHooks, RunOwnership } from "../store.ts";
import type { Fencing } from "./pg-batch-writer.ts";
import type { RunLeases } from "./run-leases.ts";
import { WAKE_CHANNEL } from "./commit-listener.ts";

/**
 * Run ownership on PostgreSQL: this node's leases (RunLeases), renewed every third of
 * the lease, the epoch each is held at (what PgBatchWriter fences appends with), and the
 * scan for runs whose node died or handed them over.
 */
export class PgOwnership implements RunOwnership, Fencing {
  readonly shared = true;
  private readonly epochs = new Map<string, number>();
  /** Claims under way, so that two at once for one run take one lease (not one each, the first then fenced out). */
  private readonly claiming = new Map<string, Promise<boolean>>();
  /** Runs given up once what was appended for them is committed (unless claimed again first). */
  private readonly releasing = new Set<string>();
  /** Resolves once everything appended so far is committed (the log's). */
  flushed: () => Promise<void> = () => Promise.resolve();
  /** Runs this node was told a cancel was asked for (told once). */
  private readonly cancelsSeen = new Set<string>();
  private hooks: OwnershipHooks | null = null;
  private renewTimer: NodeJS.Timeout | undefined;
  private scanTimer: NodeJS.Timeout | undefined;
  /** A scan set for the moment the next lease of another node lapses: a dead node's runs are taken at once, not at the next interval. */
  private lapseTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private renewing = false;
  private scanning = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly leases: RunLeases,
    private readonly onRegained: (runId: string) => void,
    private readonly onError: (error: unknown, what: string) => void,
  ) {}

  get nodeId(): string {
    return this.leases.nodeId;
  }

  get leaseMs(): number {
    return this.leases.leaseMs;
  }

  epochOf(runId: string): number | undefined {
    return this.epochs.get(runId);
  }

  /** A run this node creates is its own from the start (epoch 1, set in the insert). */
  created(runId: string): void {
    this.epochs.set(runId, 1);
  }

  claim(runId: string): Promise<boolean> {
    this.releasing.delete(runId);
    if (this.epochs.has(runId)) return Promise.resolve(true);
    let claim = this.claiming.get(runId);
    if (!claim) {
      claim = this.leases.acquire(runId).then(
        (epoch) => {
          this.claiming.delete(runId);
          if (epoch === null) return false;
          this.epochs.set(runId, epoch);
          this.cancelsSeen.delete(runId);
          this.onRegained(runId);
          return true;
        },
        (error: unknown) => {
          this.claiming.delete(runId);
          throw error;
        },
      );
      this.claiming.set(runId, claim);
    }
    return claim;
  }

  release(runId: string): void {
    if (!this.epochs.has(runId) || this.releasing.has(runId)) return;
    // What was appended for it must commit under this node's lease first.
    this.releasing.add(runId);
    void this.flushed().then(() => {
      const epoch = this.epochs.get(runId);
      if (!this.releasing.delete(runId) || epoch === undefined) return;
      this.epochs.delete(runId);
      this.cancelsSeen.delete(runId);
      this.leases.release(runId, epoch).catch((error: unknown) => this.onError(error, "releasing a run's lease"));
    });
  }

  holds(runId: string): boolean {
    return this.epochs.has(runId) && !this.releasing.has(runId);
  }

  /** Another node (or this one) asked to look at the run again. */
  woken(runId: string): void {
    this.hooks?.onWake(runId);
  }

  /** Asks every node (this one included) to look at the run again. */
  wake(runId: string): void {
    this.pool.query("SELECT pg_notify($1, $2)", [WAKE_CHANNEL, runId]).catch((error: unknown) => this.onError(error, "announcing a run to the other nodes"));
  }

  /** Renews this node's leases from now on (from the store's opening: recovery may take longer than a lease). */
  startRenewing(): void {
    this.renewTimer ??= setInterval(() => void this.renew(), Math.max(50, Math.floor(this.leaseMs / 3)));
  }

  /** The run was taken over by another node (a refused commit said so): this node no longer holds it. */
  lost(runId: string): void {
    this.epochs.delete(runId);
    this.releasing.delete(runId);
  }

  watch(hooks: OwnershipHooks): void {
    this.hooks = hooks;
    this.startRenewing();
    this.scanTimer = setInterval(() => void this.scan(), Math.max(50, Math.floor(this.leaseMs / 2)));
    void this.scan();
  }

  private async renew(): Promise<void> {
    if (this.renewing || this.epochs.size === 0) return;
    this.renewing = true;
    try {
      const renewed = new Map(this.epochs);
      const { lost, cancelRequested } = await this.leases.renew(renewed);
      for (const runId of lost) {
        // Released (or taken again) while the renewal ran: not lost.
        if (this.epochs.get(runId) !== renewed.get(runId)) continue;
        this.epochs.delete(runId);
        this.hooks?.onLost(runId);
      }
      for (const runId of cancelRequested) {
        if (this.cancelsSeen.has(runId)) continue;
        this.cancelsSeen.add(runId);
        this.hooks?.onCancelRequested(runId);
      }
    } catch (error) {
      this.onError(error, "renewing this node's leases");
    } finally {
      this.renewing = false;
    }
  }

  private async scan(): Promise<void> {
    if (this.scanning || !this.hooks) return;
    this.scanning = true;
    try {
      for (const runId of await this.leases.orphans()) {
        if (!this.epochs.has(runId)) this.hooks.onOrphan(runId);
      }
      const next = await this.leases.nextLapse();
      clearTimeout(this.lapseTimer);
      if (next !== null && !this.closed) {
        // Just past it; a lease renewed meanwhile only makes this scan find nothing.
        this.lapseTimer = setTimeout(() => void this.scan(), Math.max(0, next - Date.now()) + 20);
      }
    } catch (error) {
      this.onError(error, "looking for runs whose node stopped");
    } finally {
      this.scanning = false;
    }
  }

  /** Stops renewing; with `handOver`, gives every held run up at once for another node to take. */
  async close(handOver: boolean): Promise<void> {
    this.closed = true;
    clearInterval(this.renewTimer);
    clearInterval(this.scanTimer);
    clearTimeout(this.lapseTimer);
    if (!handOver) return;
    await this.flushed();
    const held = [...this.epochs];
    this.epochs.clear();
    this.releasing.clear();
    await Promise.all(held.map(([runId, epoch]) => this.leases.release(runId, epoch).catch((error: unknown) => this.onError(error, "handing a run over"))));
    await Promise.all(held.map(([runId]) => this.pool.query("SELECT pg_notify($1, $2)", [WAKE_CHANNEL, runId]).catch(() => {})));
  }
}
