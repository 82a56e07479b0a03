import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { createClient, FlowdError, type FlowdClient, type WorkflowSummary } from "../client/index.ts";
import { RunPage } from "./run-page.tsx";
import { RunsPage } from "./runs-page.tsx";
import "./style.css";

/** The key or token the person typed, kept for this tab only. */
const TOKEN_KEY = "flowd-token";

function route(): { page: "runs" } | { page: "run"; runId: string } {
  const match = /^#\/runs\/(.+)$/.exec(location.hash);
  if (!match) return { page: "runs" };
  try {
    return { page: "run", runId: decodeURIComponent(match[1]!) };
  } catch {
    return { page: "run", runId: match[1]! };
  }
}

function clientFor(token: string | null): FlowdClient {
  return createClient({ url: location.origin, ...(token ? { token } : {}) });
}

/** Asks for the server's key; nothing else loads until it works. */
function KeyPrompt({ failed, onKey }: { failed: boolean; onKey: (key: string) => void }) {
  const [key, setKey] = useState("");
  return (
    <form
      class="panel key-prompt"
      onSubmit={(e) => {
        e.preventDefault();
        onKey(key);
      }}
    >
      <h2>This server needs a key</h2>
      <p>Enter its FLOWD_SECURITY_KEY (kept for this tab only).</p>
      {failed ? <p class="problem">That key was refused.</p> : null}
      <input type="password" name="key" autoFocus value={key} onInput={(e) => setKey(e.currentTarget.value)} />
      <button type="submit">Open</button>
    </form>
  );
}

function App() {
  const [token, setToken] = useState<string | null>(sessionStorage.getItem(TOKEN_KEY));
  const [client, setClient] = useState<FlowdClient>(() => clientFor(token));
  const [workflows, setWorkflows] = useState<WorkflowSummary[] | null>(null);
  const [auth, setAuth] = useState<"unknown" | "needed" | "refused" | "ok">("unknown");
  const [problem, setProblem] = useState<string | null>(null);
  const [where, setWhere] = useState(route());

  useEffect(() => {
    const onHash = (): void => setWhere(route());
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);

  useEffect(() => {
    let stopped = false;
    client.workflows.list().then(
      (list) => {
        if (stopped) return;
        setWorkflows(list);
        setAuth("ok");
        setProblem(null);
      },
      (error: unknown) => {
        if (stopped) return;
        if (error instanceof FlowdError && (error.code === "AUTH_REQUIRED" || error.code === "AUTH_FAILED")) {
          if (token) sessionStorage.removeItem(TOKEN_KEY);
          setAuth(token ? "refused" : "needed");
        } else {
          setProblem(error instanceof FlowdError ? `${error.code}: ${error.message}` : String(error));
        }
      },
    );
    return () => {
      stopped = true;
    };
  }, [client]);

  let body;
  if (auth === "needed" || auth === "refused") {
    body = (
      <KeyPrompt
        failed={auth === "refused"}
        onKey={(key) => {
          sessionStorage.setItem(TOKEN_KEY, key);
          setToken(key);
          setClient(clientFor(key));
        }}
      />
    );
  } else if (problem) {
    body = <p class="problem">{problem}</p>;
  } else if (!workflows) {
    body = <p class="muted">Loading…</p>;
  } else if (where.page === "run") {
    body = <RunPage key={where.runId} client={client} runId={where.runId} />;
  } else {
    body = <RunsPage client={client} workflows={workflows} />;
  }
  return (
    <>
      <header class="top">
        <a href="#/" class="brand">
          flowd
        </a>
        <span class="muted">inspector</span>
        <a href="/docs" class="docs-link">
          HTTP API
        </a>
      </header>
      <main>{body}</main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
