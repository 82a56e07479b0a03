/** Workflows for the benchmarks: they emit events as fast as the engine takes them, or at a set rate. */
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

export default [emit, paced, threeSteps];
