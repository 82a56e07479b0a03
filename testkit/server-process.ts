import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The repository root, where `bin/flowd.js` lives. */
export const REPO_ROOT = fileURLToPath(new URL("../", import.meta.url));
const FLOWD_BIN = fileURLToPath(new URL("../bin/flowd.js", import.meta.url));

/** A `flowd` command run as a real child process. */
export interface FlowdProcess {
  child: ChildProcess;
  /** Everything written to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code (or the signal name) once the process ends. */
  exited: Promise<number | string>;
}

/** Runs `flowd <args>` as a child process. */
export function runFlowd(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): FlowdProcess {
  return runNode([FLOWD_BIN, ...args], options);
}

const spawned = new Set<ChildProcess>();

/** Kills every child a test spawned and did not stop (a failed or timed-out test leaves none behind). */
export function killLeftoverChildren(): void {
  for (const child of spawned) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  spawned.clear();
}

/** Runs `node <args>` as a child process, capturing its output. */
export function runNode(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): FlowdProcess {
  const child = spawn(process.execPath, args, {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, FLOWD_LOG_LEVEL: "info", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  spawned.add(child);
  child.on("exit", () => spawned.delete(child));
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((resolve) => {
    child.on("exit", (code, signal) => resolve(code ?? signal ?? -1));
  });
  return { child, output: () => output, exited };
}

/** A flowd server running as a child process. */
export interface ServerProcess extends FlowdProcess {
  port: number;
  url: string;
  wsUrl: string;
  /** Sends SIGTERM and waits for the exit. */
  stop(): Promise<number | string>;
}

/**
 * Starts `flowd serve --port 0 …` (or, with `nodeArgs`, any node program that serves flowd)
 * and waits for its "flowd listening" log line.
 */
export async function startServerProcess(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number; nodeArgs?: string[] } = {},
): Promise<ServerProcess> {
  const proc = options.nodeArgs ? runNode(options.nodeArgs, options) : runFlowd(["serve", "--port", "0", ...args], options);
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`flowd did not start within ${options.timeoutMs ?? 15_000} ms:\n${proc.output()}`)),
      options.timeoutMs ?? 15_000,
    );
    const onData = (): void => {
      const match = /"port":(\d+)[^\n]*"msg":"flowd listening"/.exec(proc.output());
      if (match) {
        clearTimeout(timer);
        proc.child.stdout?.off("data", onData);
        resolve(Number(match[1]));
      }
    };
    proc.child.stdout?.on("data", onData);
    void proc.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`flowd exited (${code}) before listening:\n${proc.output()}`));
    });
  });
  return {
    ...proc,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/workflows/ws`,
    stop: async () => {
      if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill("SIGTERM");
      return proc.exited;
    },
  };
}
