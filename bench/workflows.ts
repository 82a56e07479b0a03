/** Workflows for the benchmarks: they emit events as fast as the engine takes them, or at a set rate. */
import { writeFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { Step, Workflow } from "../src/workflows/definition.ts";
import { setting } from "../testkit/additional-data.ts";


/** `emit`: `count` RunContent events of `bytes` characters, no sleeping (after an optional `startDelayMs`). */
export const emit = Workflow({
  id: "emit",
  steps: [
    Step({
      name: "emit",
      executor: async function* (input) {
        const count = setting(input, "count", 1000);
        const text = "x".repeat(setting(input, "bytes", 100));
        const startDelayMs = setting(input, "startDelayMs", 0);
        if (startDelayMs > 0) await sleep(startDelayMs, undefined, { signal: input.signal });
        for (let i = 0; i < count; i++) yield text;
        return count;
      },
    }),
  ],
});

/** `paced`: `rate` events per second for `seconds`; each carries the wall-clock time it was emitted (`t`, ms). */
export const paced = Workflow({
  id: "paced",
  steps: [
    Step({
      name: "paced",
      executor: async function* (input) {
        const rate = setting(input, "rate", 1000);
        const total = Math.round(rate * setting(input, "seconds", 2));
        const started = performance.now();
        let sent = 0;
        while (sent < total) {
          // Emit what the schedule says is due, then wait about a millisecond.
          const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate) + 1);
          for (; sent < due; sent++) yield JSON.stringify({ t: performance.timeOrigin + performance.now(), i: sent });
          await sleep(1);
        }
        return total;
      },
    }),
  ],
});

/** `three-steps`: three trivial steps, each handed the previous one's output (B15). */
export const threeSteps = Workflow({
  id: "three-steps",
  steps: [
    Step({ name: "one", executor: () => 1 }),
    Step({ name: "two", executor: (input) => Number(input.previousOutput) + 1 }),
    Step({ name: "three", executor: (input) => Number(input.previousOutput) + 1 }),
  ],
});

/** `nap`: sleeps until additional_data.wakeAt (epoch ms, a durable timer), then returns how late it woke, in ms (B10). */
export const nap = Workflow({
  id: "nap",
  steps: [
    Step({
      name: "nap",
      executor: async (input) => {
        const wakeAt = setting(input, "wakeAt", Date.now());
        await input.sleepUntil(wakeAt);
        return Date.now() - wakeAt;
      },
    }),
  ],
});

/** `approve`: a step a person confirms first (B11). */
export const approve = Workflow({
  id: "approve",
  steps: [Step({ name: "approve", requiresConfirmation: true, executor: () => "ok" })],
});

/** `await-signal`: waits for the signal "go" (B11). */
export const awaitSignal = Workflow({
  id: "await-signal",
  steps: [Step({ name: "wait", executor: async (input) => (await input.waitForSignal("go")).payload })],
});

export default [emit, paced, threeSteps, nap, approve, awaitSignal];

// Bench only (B10): in a server started with --expose-gc and FLOWD_BENCH_HEAP_FILE, SIGUSR2
// collects garbage and writes the JS heap in use to that file.
const heapFile = process.env.FLOWD_BENCH_HEAP_FILE;
if (heapFile) {
  process.on("SIGUSR2", () => {
    (globalThis as { gc?: () => void }).gc?.();
    writeFileSync(heapFile, String(process.memoryUsage().heapUsed));
  });
}
