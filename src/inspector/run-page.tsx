import { useEffect, useMemo, useState } from "preact/hooks";
import { FlowdError, type FlowdClient, type RunJson } from "../client/index.ts";
import { ContinueForm } from "./continue-form.tsx";
import { EventTable } from "./event-table.tsx";
import { RunModel, type StreamView } from "./run-model.ts";

const FINISHED = new Set(["completed", "error", "cancelled"]);
/** How often the page renders what arrived. */
const RENDER_EVERY_MS = 100;

function duration(ms: number | null): string {
  if (ms === null) return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** Text longer than this shows its end only, until asked for all of it: a page holding megabytes of text stops being responsive. */
const SHOWN_CHARACTERS = 20_000;

function Stream({ model, stream }: { model: RunModel; stream: StreamView }) {
  const [all, setAll] = useState(false);
  const segments = model.segmentsOf(stream);
  const total = segments.reduce((sum, segment) => sum + segment.text.length, 0);
  let skip = all ? 0 : Math.max(0, total - SHOWN_CHARACTERS);
  const shown = [];
  for (const segment of segments) {
    if (skip >= segment.text.length) {
      skip -= segment.text.length;
      continue;
    }
    const text = skip > 0 ? segment.text.slice(skip) : segment.text;
    skip = 0;
    shown.push(
      segment.superseded ? (
        <del key={segment.first} class="superseded" title="Superseded: a later attempt replaced this partial output">
          {text}
        </del>
      ) : (
        <span key={segment.first}>{text}</span>
      ),
    );
  }
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
      {total > SHOWN_CHARACTERS && !all ? (
        <p class="muted">
          The last {SHOWN_CHARACTERS.toLocaleString()} of {total.toLocaleString()} characters.{" "}
          <button class="secondary" onClick={() => setAll(true)}>
            Show all
          </button>
        </p>
      ) : null}
      <pre class="stream-text">{shown}</pre>
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
    let timer: ReturnType<typeof setTimeout> | undefined;
    let renderedAt = 0;
    // Rendered at most every RENDER_EVERY_MS, however many events arrive meanwhile: live to the eye, cheap on the main thread.
    const render = (): void => {
      if (timer !== undefined) return;
      timer = setTimeout(() => {
        timer = undefined;
        renderedAt = performance.now();
        setVersion(model.version);
      }, Math.max(0, RENDER_EVERY_MS - (performance.now() - renderedAt)));
    };
    void (async () => {
      try {
        for await (const batch of watch.batches()) {
          for (const event of batch) model.apply(event);
          render();
        }
      } catch (error) {
        setProblem(error instanceof FlowdError ? `${error.code}: ${error.message}` : String(error));
      }
    })();
    return () => {
      watch.close();
      clearTimeout(timer);
    };
  }, [client, runId, model]);

  // The run's row: every second, and at once when the events say its state changed (paused, waiting, ended).
  const stateKey = `${model.terminal?.event ?? ""}:${model.pause?.event_index ?? ""}:${[...model.steps.values()].filter((step) => step.status === "waiting").length}`;
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setInterval> | undefined;
    const refresh = async (): Promise<void> => {
      try {
        const fresh = await client.runs.get(runId);
        if (stopped) return;
        setRun(fresh);
        // A finished run changes no more.
        if (FINISHED.has(fresh.status)) clearInterval(timer);
      } catch (error) {
        if (!stopped && error instanceof FlowdError && error.code === "RUN_NOT_FOUND") setProblem(`${error.code}: ${error.message}`);
      }
    };
    timer = setInterval(() => void refresh(), 1000);
    void refresh();
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
      {model.pause && run?.status === "paused" ? <ContinueForm key={model.pause.event_index} pause={model.pause} onAnswer={(requirements) => act("Continue", () => client.continue(runId, requirements))} /> : null}
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
