import { useEffect, useMemo, useState } from "preact/hooks";
import { FlowdError, type FlowdClient, type RunJson } from "../client/index.ts";
import { ContinueForm } from "./continue-form.tsx";
import { EventTable } from "./event-table.tsx";
import { RunModel, type StreamView } from "./run-model.ts";

const FINISHED = new Set(["completed", "error", "cancelled"]);

function duration(ms: number | null): string {
  if (ms === null) return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function Stream({ model, stream }: { model: RunModel; stream: StreamView }) {
  return (
    <article class="stream" data-step={stream.stepPath} data-stream={stream.key}>
      <h4>
        {stream.stepName}
        {stream.agent ? (
          <small>
            {" "}
            · {stream.agent.name} ({stream.agent.model})
          </small>
        ) : null}
        <small class={`badge ${stream.status}`}>{stream.status}</small>
      </h4>
      <pre class="stream-text">
        {stream.pieces.map((piece) =>
          model.isSuperseded(piece.index) ? (
            <del key={piece.index} class="superseded" title="Superseded: a later attempt replaced this partial output">
              {piece.text}
            </del>
          ) : (
            <span key={piece.index}>{piece.text}</span>
          ),
        )}
      </pre>
    </article>
  );
}

/** One run: live while it runs, resuming by itself after a lost connection or a restart (flowd/client's watch). */
export function RunPage({ client, runId }: { client: FlowdClient; runId: string }) {
  const model = useMemo(() => new RunModel(), [runId]);
  const [version, setVersion] = useState(0);
  const [run, setRun] = useState<RunJson | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [signalName, setSignalName] = useState("");
  const [signalPayload, setSignalPayload] = useState("{}");
  const [notice, setNotice] = useState<string | null>(null);

  useEffect(() => {
    const watch = client.watch(runId);
    let frame = 0;
    // Rendered at most once a frame, however many events arrive in it.
    const render = (): void => {
      if (frame) return;
      frame = requestAnimationFrame(() => {
        frame = 0;
        setVersion(model.version);
      });
    };
    void (async () => {
      try {
        for await (const event of watch) {
          model.apply(event);
          render();
        }
      } catch (error) {
        setProblem(error instanceof FlowdError ? `${error.code}: ${error.message}` : String(error));
      }
    })();
    return () => {
      watch.close();
      cancelAnimationFrame(frame);
    };
  }, [client, runId, model]);

  // The run's row: every second, and at once when the events say its state changed (paused, waiting, ended).
  const stateKey = `${model.terminal?.event ?? ""}:${model.pause?.event_index ?? ""}:${[...model.steps.values()].filter((step) => step.status === "waiting").length}`;
  useEffect(() => {
    let stopped = false;
    const refresh = async (): Promise<void> => {
      try {
        const fresh = await client.runs.get(runId);
        if (!stopped) setRun(fresh);
      } catch (error) {
        if (!stopped && error instanceof FlowdError && error.code === "RUN_NOT_FOUND") setProblem(`${error.code}: ${error.message}`);
      }
    };
    void refresh();
    const timer = setInterval(() => void refresh(), 1000);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [client, runId, stateKey]);

  const act = async (what: string, action: () => Promise<unknown>): Promise<void> => {
    setNotice(null);
    try {
      await action();
      setNotice(`${what}: done.`);
      setRun(await client.runs.get(runId));
    } catch (error) {
      setNotice(error instanceof FlowdError ? `${what} refused (${error.code}): ${error.message}` : `${what} failed: ${String(error)}`);
    }
  };

  const status = model.terminal ? (run && FINISHED.has(run.status) ? run.status : model.terminal.event.replace("Workflow", "").toLowerCase()) : (run?.status ?? "…");
  const steps = [...model.steps.values()];
  const streams = [...model.streams.values()];
  const calls = [...model.toolCalls.values()];
  const waitsForSignal = run?.status === "waiting" && run.waiting_for?.kind === "signal";
  return (
    <div class="run-page" data-run={runId} data-version={version}>
      <p>
        <a href="#/">← Runs</a>
      </p>
      <header class="run-header">
        <h2>
          {run?.workflow_name ?? "Run"} <code>{runId}</code>
        </h2>
        <span class={`status ${status}`} data-status={status}>
          {status}
        </span>
        {run && run.attempt > 1 ? <span class="badge">attempt {run.attempt}</span> : null}
        <span class="count" data-events={model.events.length}>
          {model.events.length} events
        </span>
        {run && !FINISHED.has(run.status) ? (
          <button class="danger" data-action="cancel" onClick={() => void act("Cancel", () => client.cancel(runId))}>
            Cancel
          </button>
        ) : null}
      </header>
      {problem ? <p class="problem">{problem}</p> : null}
      {notice ? <p class="notice">{notice}</p> : null}
      {run?.input ? (
        <p class="input">
          Input: <q>{run.input}</q>
        </p>
      ) : null}
      {model.pause && run?.status === "paused" ? <ContinueForm pause={model.pause} onAnswer={(requirements) => act("Continue", () => client.continue(runId, requirements))} /> : null}
      {waitsForSignal || run?.status === "waiting" ? (
        <section class="panel signal-form">
          <h3>Send a signal</h3>
          <form
            onSubmit={(e) => {
              e.preventDefault();
              let payload: unknown;
              try {
                payload = JSON.parse(signalPayload);
              } catch {
                setNotice("The payload is not JSON.");
                return;
              }
              void act("Signal", () => client.signal(runId, signalName || run?.waiting_for?.name || "", payload));
            }}
          >
            <label class="field">
              <span>Name</span>
              <input name="signal" value={signalName || run?.waiting_for?.name || ""} onInput={(e) => setSignalName(e.currentTarget.value)} />
            </label>
            <label class="field">
              <span>Payload (JSON)</span>
              <textarea name="payload" value={signalPayload} onInput={(e) => setSignalPayload(e.currentTarget.value)} />
            </label>
            <div class="actions">
              <button type="submit">Send</button>
            </div>
          </form>
        </section>
      ) : null}
      <div class="columns">
        <section class="panel steps">
          <h3>Steps</h3>
          <ul class="step-tree">
            {steps.map((step) => (
              <li key={step.path} class={`step ${step.status}`} style={{ paddingLeft: `${step.depth * 1.25}rem` }} data-path={step.path}>
                <span class="step-name">{step.name}</span> <span class={`badge ${step.status}`}>{step.status}</span> <span class="duration">{duration(step.durationMs)}</span>
                {step.detail ? <div class="detail">{step.detail}</div> : null}
              </li>
            ))}
          </ul>
          {model.terminal?.event === "WorkflowError" ? <p class="error-text">{model.terminal.error}</p> : null}
        </section>
        <section class="panel output">
          <h3>Output</h3>
          {streams.length === 0 ? <p class="muted">No streamed text yet.</p> : streams.map((stream) => <Stream key={stream.key} model={model} stream={stream} />)}
          {calls.length > 0 ? (
            <>
              <h3>Tool calls</h3>
              {calls.map((call) => (
                <details key={call.id} class="tool-call" data-tool={call.name}>
                  <summary>
                    <code>{call.name}</code> {call.error ? <span class="badge error">error</span> : call.durationMs === null ? <span class="badge running">running</span> : <span class="duration">{duration(call.durationMs)}</span>}
                  </summary>
                  <pre>args: {JSON.stringify(call.args, null, 2)}</pre>
                  {call.result !== undefined ? <pre>result: {JSON.stringify(call.result, null, 2)}</pre> : null}
                  {call.error ? <pre class="error-text">{call.error}</pre> : null}
                </details>
              ))}
            </>
          ) : null}
          {model.superseded.length > 0 ? (
            <p class="muted">
              Struck through: partial output of an attempt a later one replaced ({model.superseded.map((range) => `${range.from}–${range.to} by ${range.by} at ${range.at}`).join("; ")}).
            </p>
          ) : null}
        </section>
      </div>
      <section class="panel">
        <h3>Events</h3>
        <EventTable model={model} version={version} />
      </section>
    </div>
  );
}
