// An agent drafts a note, a person approves it from the CLI, the run sleeps, then waits
// for a reply signal. Serve with: npx flowd serve --workflows ./examples/approval.ts
// Then, in another terminal:
//   curl -X POST localhost:7777/workflows/approval/runs -d message="our launch" -d background=true
//   npx flowd runs list --status paused          # the run waits for "send"'s confirmation
//   npx flowd runs continue <run_id> --confirm   # approve; --reject cancels the run
//   npx flowd runs signal <run_id> reply --data '{"text": "Looks good"}'
import { Agent, Step, Workflow } from "flowd";
import { z } from "zod";

const Reply = z.object({ text: z.string() });

export default Workflow({
  id: "approval",
  name: "Draft, approve, follow up",
  steps: [
    Step({ name: "draft", agent: Agent({ name: "Writer", instructions: "You are a writer. Draft a short announcement." }) }),
    Step({
      name: "send",
      requiresConfirmation: true,
      confirmationMessage: "Send this draft?",
      onReject: "cancel",
      // A person approves (or rejects) before this runs; it runs once, even across a restart.
      executor: (input) => input.step("send", () => ({ sent: String(input.previousOutput).slice(0, 80), at: new Date().toISOString() })),
    }),
    Step({
      name: "follow-up",
      executor: async (input) => {
        const { followUpMs } = (input.additionalData ?? {}) as { followUpMs?: number };
        // A durable timer: after a restart the run still wakes at the original time.
        await input.sleep(followUpMs ?? 2000);
        const reply = await input.waitForSignal("reply", { timeoutMs: 24 * 3600 * 1000, schema: Reply });
        return reply.timedOut ? "no reply within a day" : `reply: ${reply.payload.text}`;
      },
    }),
  ],
});
