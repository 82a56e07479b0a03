// examples/reconnect.ts — watch a run, walk away, come back, and catch up on exactly what
// was missed. Run it against a server (`npm start`) with `npx tsx examples/reconnect.ts`
// (FLOWD_URL=ws://host:port/workflows/ws for another server).
import WebSocket from "ws";

const url = process.env.FLOWD_URL ?? "ws://127.0.0.1:7777/workflows/ws";
const workflowId = process.env.FLOWD_WORKFLOW ?? "content-creation-workflow";

type Frame = { event: string; event_index?: number; run_id?: string; [field: string]: unknown };
const TERMINAL = new Set(["WorkflowCompleted", "WorkflowError", "WorkflowCancelled"]);

/** Opens a socket and hands each frame to `onFrame` until it returns "stop". */
function session(first: object, onFrame: (frame: Frame) => "stop" | void): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    socket.on("error", reject);
    socket.on("open", () => socket.send(JSON.stringify(first)));
    socket.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      if (onFrame(frame) === "stop") {
        socket.close();
        resolve();
      }
    });
  });
}

const seen: number[] = [];
let runId = "";

// 1. Start a run and read its first 20 events.
await session({ action: "start-workflow", workflow_id: workflowId, message: "durable workflows" }, (frame) => {
  if (typeof frame.event_index !== "number") return;
  runId = frame.run_id ?? runId;
  seen.push(frame.event_index);
  console.log(`  [${seen.length}] event_index=${frame.event_index}, event=${frame.event}`);
  if (seen.length === 20) return "stop";
});

// 2. Walk away: the run goes on without us.
console.log(`Disconnected from run ${runId}; waiting 3 s…`);
await new Promise((resolve) => setTimeout(resolve, 3000));

// 3. Come back with the last index we saw: catch_up, the missed events, subscribed, then live.
const last = seen[seen.length - 1] ?? -1;
let outcome = "";
await session({ action: "reconnect", run_id: runId, last_event_index: last }, (frame) => {
  if (frame.event === "catch_up") console.log(`catch_up: ${String(frame.missed_events)} missed events`);
  else if (frame.event === "subscribed") console.log(`subscribed: status=${String(frame.status)}`);
  else if (frame.event === "replay") console.log(`replay: the run already ended; all ${String(frame.total_events)} events follow`);
  else if (frame.event === "error") throw new Error(`flowd: ${String(frame.error)}`);
  if (typeof frame.event_index !== "number") return;
  // A replay of a finished run starts again at 0: keep only what is new to us.
  if (frame.event_index > (seen[seen.length - 1] ?? -1)) seen.push(frame.event_index);
  if (TERMINAL.has(frame.event)) {
    outcome = frame.event;
    return "stop";
  }
});

const gapless = seen.every((index, i) => index === i);
console.log(`Run finished: ${outcome}; ${seen.length} events, ${gapless ? "no gaps, no duplicates" : "GAPS OR DUPLICATES"}`);
process.exit(gapless && outcome !== "" ? 0 : 1);
