import { afterAll, beforeAll } from "vitest";
import { startPostgres, testPool, type TestPostgres } from "../../testkit/postgres.ts";
import { crashSuite, type StoredEvent, type TrialNodes } from "../recovery/crash-trials.ts";

/**
 * Lease of the trials' nodes: short, so that each trial's takeover comes quickly, yet long
 * enough that the surviving node, slowed by the rest of the suite on two cores, keeps it
 * (each time it lost and took a run again would count as one more crash resume).
 */
const LEASE_MS = 1000;

/**
 * The seeded crash trials of test/recovery/ across two nodes on PostgreSQL: the node
 * executing the runs is SIGKILLed, the other (serving from the start) takes them over
 * once their leases lapse, and every client reconnects to it.
 */
export function takeoverSuite(seeds: readonly number[]): void {
  let postgres: TestPostgres;
  beforeAll(async () => {
    postgres = await startPostgres();
  });
  afterAll(async () => {
    await postgres.stop();
  });
  const nodes: TrialNodes = {
    takeover: true,
    env: { FLOWD_LEASE_MS: String(LEASE_MS) },
    store: async (seed) => {
      const db = await postgres.createDatabase(`trial_${seed}`);
      const pool = testPool(db);
      return {
        db,
        events: async (runId) =>
          (await pool.query<StoredEvent>("SELECT event_index, event, payload FROM events WHERE run_id = $1 ORDER BY event_index", [runId])).rows,
        checkpoints: async (runId) =>
          (await pool.query<{ step_path: string; attempt: number }>("SELECT step_path, attempt FROM step_checkpoints WHERE run_id = $1 AND step_name IS NOT NULL", [runId])).rows,
        close: () => pool.end(),
      };
    },
  };
  crashSuite(seeds, nodes);
}
