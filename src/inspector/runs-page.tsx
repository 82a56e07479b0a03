import { useEffect, useState } from "preact/hooks";
import { FlowdError, type FlowdClient, type RunJson, type RunStatus, type WorkflowSummary } from "../client/index.ts";

const STATUSES: RunStatus[] = ["pending", "running", "waiting", "paused", "completed", "error", "cancelled"];

function time(ms: number): string {
  return new Date(ms).toLocaleString();
}

/** Every run, newest first, filtered by workflow and status; new runs and status changes appear as they happen. */
export function RunsPage({ client, workflows }: { client: FlowdClient; workflows: WorkflowSummary[] }) {
  const [workflowId, setWorkflowId] = useState("");
  const [status, setStatus] = useState<RunStatus | "">("");
  const [runs, setRuns] = useState<RunJson[] | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [startWorkflow, setStartWorkflow] = useState(workflows[0]?.id ?? "");
  const [message, setMessage] = useState("");

  useEffect(() => {
    let stopped = false;
    const refresh = async (): Promise<void> => {
      try {
        const list = await client.runs.list({ ...(workflowId ? { workflowId } : {}), ...(status ? { status } : {}), limit: 100 });
        if (!stopped) {
          setRuns(list);
          setProblem(null);
        }
      } catch (error) {
        if (!stopped) setProblem(error instanceof FlowdError ? `${error.code}: ${error.message}` : String(error));
      }
    };
    void refresh();
    const timer = setInterval(() => void refresh(), 1000);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [client, workflowId, status]);

  return (
    <div class="runs-page">
      <section class="panel start-form">
        <h3>Start a run</h3>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void client.start(startWorkflow, message).then(
              (run) => (location.hash = `#/runs/${encodeURIComponent(run.run_id)}`),
              (error: unknown) => setProblem(error instanceof FlowdError ? `${error.code}: ${error.message}` : String(error)),
            );
          }}
        >
          <select name="workflow" value={startWorkflow} onChange={(e) => setStartWorkflow(e.currentTarget.value)}>
            {workflows.map((workflow) => (
              <option key={workflow.id} value={workflow.id}>
                {workflow.name} ({workflow.id})
              </option>
            ))}
          </select>
          <input name="message" placeholder="Message" value={message} onInput={(e) => setMessage(e.currentTarget.value)} />
          <button type="submit">Start</button>
        </form>
      </section>
      <section class="panel">
        <div class="filters">
          <label>
            Workflow{" "}
            <select name="filter-workflow" value={workflowId} onChange={(e) => setWorkflowId(e.currentTarget.value)}>
              <option value="">all</option>
              {workflows.map((workflow) => (
                <option key={workflow.id} value={workflow.id}>
                  {workflow.id}
                </option>
              ))}
            </select>
          </label>
          <label>
            Status{" "}
            <select name="filter-status" value={status} onChange={(e) => setStatus(e.currentTarget.value as RunStatus | "")}>
              <option value="">all</option>
              {STATUSES.map((value) => (
                <option key={value} value={value}>
                  {value}
                </option>
              ))}
            </select>
          </label>
        </div>
        {problem ? <p class="problem">{problem}</p> : null}
        {runs === null ? (
          <p class="muted">Loading…</p>
        ) : runs.length === 0 ? (
          <p class="muted">No runs.</p>
        ) : (
          <table class="runs">
            <thead>
              <tr>
                <th>Run</th>
                <th>Workflow</th>
                <th>Status</th>
                <th>Events</th>
                <th>Started</th>
              </tr>
            </thead>
            <tbody>
              {runs.map((run) => (
                <tr key={run.run_id} data-run={run.run_id} data-status={run.status}>
                  <td>
                    <a href={`#/runs/${encodeURIComponent(run.run_id)}`}>
                      <code>{run.run_id}</code>
                    </a>
                  </td>
                  <td>{run.workflow_id}</td>
                  <td>
                    <span class={`status ${run.status}`}>{run.status}</span>
                  </td>
                  <td>{run.event_count}</td>
                  <td>{time(run.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </div>
  );
}
