/**
 * Recovery benchmark: how long `flowd serve` takes to answer /health 200 on a database
 * holding finished runs and runs left `running` (all of which it resumes before it
 * answers), beside the same server starting on an empty database (the limit: process
 * start, module loading, migrations, listen).
 *
 *   npx tsx bench/recovery.ts [finishedRuns=1000] [eventsPerRun=20] [runningRuns=10]
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { seedDatabase } from "../testkit/seed-db.ts";

const FLOWD = fileURLToPath(new URL("../bin/flowd.js", import.meta.url));
const FIXTURES = fileURLToPath(new URL("../test/fixtures/workflows.ts", import.meta.url));
const [finished = 1000, eventsPerRun = 20, running = 10] = process.argv.slice(2).map(Number);
const PORT = 17_000 + Math.floor(Math.random() * 1000);

/** Milliseconds from spawning the server until /health answers 200. */
async function timeToHealthy(db: string): Promise<number> {
  const started = performance.now();
  const child = spawn(process.execPath, [FLOWD, "serve", "--port", String(PORT), "--db", db, "--workflows", FIXTURES], {
    env: { ...process.env, FLOWD_LOG_LEVEL: "warn" },
    stdio: "ignore",
  });
  try {
    for (let i = 0; i < 3000; i++) {
      try {
        const response = await fetch(`http://127.0.0.1:${PORT}/health`);
        if (response.status === 200) return performance.now() - started;
      } catch {
        // not listening yet
      }
      await sleep(2);
    }
    throw new Error("server never became healthy");
  } finally {
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
  }
}

const dir = mkdtempSync(join(tmpdir(), "flowd-bench-recovery-"));
try {
  const emptyMs: number[] = [];
  const seededMs: number[] = [];
  for (let round = 0; round < 3; round++) {
    emptyMs.push(await timeToHealthy(join(dir, `empty-${round}.db`)));
    const db = join(dir, `seeded-${round}.db`);
    seedDatabase(db, {
      finishedRuns: finished,
      eventsPerFinishedRun: eventsPerRun,
      runningRuns: running,
      eventsPerRunningRun: 7,
      runningWorkflowId: "ticker",
      runningAdditionalData: { count: 5 },
    });
    seededMs.push(await timeToHealthy(db));
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  const figure = Math.round(median(seededMs));
  const limit = Math.round(median(emptyMs));
  console.log(
    JSON.stringify({
      bench: "recovery",
      workload: `${finished} finished runs × ${eventsPerRun} events, ${running} running runs resumed`,
      figure,
      unit: "ms to healthy",
      limit,
      limit_is: "same server on an empty database",
      ratio: Math.round((figure / limit) * 100) / 100,
      target: 1000,
    }),
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
