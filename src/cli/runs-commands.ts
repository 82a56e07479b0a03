import { Command, Option } from "commander";
import { resolveClientConfig } from "../config.ts";
import { Errors } from "../errors.ts";
import { toRunJson, type RunJson } from "../protocol/run-json.ts";
import { RUN_STATUSES, type RunStatus } from "../protocol/run-status.ts";
import { openReadOnlyStore } from "../store/open-store.ts";
import type { ReadOnlyStore } from "../store/store.ts";
import { callServer, tokenOption } from "./api-client.ts";
import { followRun } from "./follow.ts";
import { duration, eventLine, table, time, waitingFor } from "./format.ts";

const dbOption = () => new Option("--db <path|url>", "SQLite database file or postgres:// URL (env FLOWD_DB, default ./data/flowd.db)");
const urlOption = () => new Option("--url <url>", "server URL (default http://HOST:PORT from the environment, else http://127.0.0.1:7777)");
const jsonOption = () => new Option("--json", "print JSON instead of text");

function wholeNumber(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw Errors.invalidArgument(`${name} must be a whole number of at least ${min}; got "${value}".`);
    return n;
  };
}

/** Opens the database read-only: safe while a server writes to it. */
async function withDb<T>(dbFlag: string | undefined, use: (db: ReadOnlyStore) => Promise<T>): Promise<T> {
  const db = await openReadOnlyStore(resolveClientConfig({ db: dbFlag }).dbPath);
  try {
    return await use(db);
  } finally {
    await db.close();
  }
}

async function findRun(db: ReadOnlyStore, runId: string): Promise<RunJson> {
  const run = await db.runs.get(runId);
  if (!run) throw Errors.runNotFound(runId, db.location);
  return toRunJson(run);
}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** `flowd runs …`: list, show, events (with --follow), cancel, delete, continue, signal. */
export function runsCommand(): Command {
  const runs = new Command("runs").description("Inspect and control runs.");

  runs
    .command("list")
    .description("List runs, newest first (reads the database; works while the server runs).")
    .addOption(dbOption())
    .addOption(new Option("--workflow <id>", "only runs of this workflow"))
    .addOption(new Option("--status <status>", "only runs in this status").choices(RUN_STATUSES))
    .addOption(new Option("--session <id>", "only runs of this session"))
    .addOption(new Option("--limit <n>", "how many").default(20).argParser(wholeNumber("--limit", 1)))
    .addOption(jsonOption())
    .action(async (flags: { db?: string; workflow?: string; status?: RunStatus; session?: string; limit: number; json?: boolean }) => {
      const rows = (
        await withDb(flags.db, (db) =>
          db.runs.list({
          ...(flags.workflow ? { workflowId: flags.workflow } : {}),
          ...(flags.status ? { status: flags.status } : {}),
          ...(flags.session ? { sessionId: flags.session } : {}),
          limit: flags.limit,
        }),
        )
      ).map(toRunJson);
      if (flags.json) return print(JSON.stringify(rows, null, 2));
      if (rows.length === 0) return print("No runs.");
      // Runs that wait say what for.
      const waits = rows.some((r) => r.waiting_for !== null);
      print(
        table(
          ["RUN ID", "WORKFLOW", "STATUS", "EVENTS", "CREATED (UTC)", "DURATION", ...(waits ? ["WAITING FOR"] : [])],
          rows.map((r) => [
            r.run_id,
            r.workflow_id,
            r.status,
            String(r.event_count),
            time(r.created_at),
            duration(r.started_at === null ? null : (r.finished_at ?? Date.now()) - r.started_at),
            ...(waits ? [waitingFor(r.waiting_for)] : []),
          ]),
        ),
      );
    });

  runs
    .command("show")
    .description("Show one run and how long each of its steps took.")
    .argument("<run_id>")
    .addOption(dbOption())
    .addOption(jsonOption())
    .action(async (runId: string, flags: { db?: string; json?: boolean }) => {
      const { run, steps } = await withDb(flags.db, async (db) => ({
        run: await findRun(db, runId),
        steps: await db.reads.stepTimings(runId),
      }));
      if (flags.json) return print(JSON.stringify({ ...run, steps }, null, 2));
      print(`run        ${run.run_id}`);
      print(`workflow   ${run.workflow_id} (${run.workflow_name})`);
      print(`status     ${run.status}${run.error ? ` — ${run.error}` : ""}`);
      print(`session    ${run.session_id}${run.user_id ? `, user ${run.user_id}` : ""}`);
      print(`events     ${run.event_count}, attempt ${run.attempt}`);
      print(`created    ${time(run.created_at)} UTC`);
      print(`started    ${time(run.started_at)}`);
      print(`finished   ${time(run.finished_at)}`);
      print(`input      ${JSON.stringify(run.input)}`);
      if (run.waiting_for) print(`waits for  ${waitingFor(run.waiting_for)}`);
      if (run.content !== null) print(`output     ${JSON.stringify(run.content)}`);
      if (steps.length > 0) {
        print("");
        print(table(["PATH", "STEP", "OUTCOME", "DURATION", "STARTED (UTC)"], steps.map((s) => [s.step_path, s.step_name, s.outcome, duration(s.duration_ms), s.started])));
      }
    });

  runs
    .command("events")
    .description("Print a run's events; with --follow, follow it live through the server, reconnecting by itself.")
    .argument("<run_id>")
    .addOption(new Option("--after <index>", "only events after this index").default(-1).argParser(wholeNumber("--after", -1)))
    .addOption(new Option("--follow", "follow the run live until it ends (talks to the server)"))
    .addOption(dbOption())
    .addOption(urlOption())
    .addOption(tokenOption())
    .addOption(new Option("--json", "print each event as its JSON frame, one per line"))
    .action(async (runId: string, flags: { after: number; follow?: boolean; db?: string; url?: string; token?: string; json?: boolean }) => {
      const printFrame = (frame: Record<string, unknown>) => print(flags.json ? JSON.stringify(frame) : eventLine(frame));
      if (!flags.follow) {
        await withDb(flags.db, async (db) => {
          await findRun(db, runId);
          for await (const event of db.reads.readAfter(runId, flags.after)) {
            if (flags.json) print(event.frame);
            else printFrame(JSON.parse(event.frame) as Record<string, unknown>);
          }
        });
        return;
      }
      const interactive = process.stderr.isTTY === true;
      const result = await followRun({
        config: resolveClientConfig({ url: flags.url, token: flags.token }),
        runId,
        after: flags.after,
        print: printFrame,
        notice: (line, transient) => {
          if (transient && !interactive) return;
          process.stderr.write(interactive ? `\r\x1b[2K${line}${transient ? "" : "\n"}` : `${line}\n`);
        },
      });
      process.stderr.write(`${interactive ? "\r\x1b[2K" : ""}run ended with ${result.terminalEvent} after ${result.events} events followed (last #${result.lastIndex})\n`);
    });

  runs
    .command("cancel")
    .description("Ask the server to cancel a run; it ends with WorkflowCancelled at its next boundary.")
    .argument("<run_id>")
    .addOption(urlOption())
    .addOption(tokenOption())
    .addOption(jsonOption())
    .action(async (runId: string, flags: { url?: string; token?: string; json?: boolean }) => {
      const config = resolveClientConfig({ url: flags.url, token: flags.token });
      const run = (await callServer(config, "GET", `/runs/${encodeURIComponent(runId)}`)) as RunJson;
      const path = `/workflows/${encodeURIComponent(run.workflow_id)}/runs/${encodeURIComponent(runId)}/cancel`;
      const answer = await callServer(config, "POST", path);
      print(flags.json ? JSON.stringify(answer, null, 2) : `Cancel requested for run ${runId}; it ends at its next step or content boundary (at once if no process is running it).`);
    });

  runs
    .command("delete")
    .description("Delete a finished run and everything stored of it (through the server).")
    .argument("<run_id>")
    .addOption(urlOption())
    .addOption(tokenOption())
    .addOption(jsonOption())
    .action(async (runId: string, flags: { url?: string; token?: string; json?: boolean }) => {
      const config = resolveClientConfig({ url: flags.url, token: flags.token });
      const answer = await callServer(config, "DELETE", `/runs/${encodeURIComponent(runId)}`);
      print(flags.json ? JSON.stringify(answer, null, 2) : `Deleted run ${runId} and everything stored of it.`);
    });

  runs
    .command("continue")
    .description("Answer a paused run's open requirement, and wait until it ends or waits again.")
    .argument("<run_id>")
    .addOption(new Option("--confirm", "approve the step (or tool call)"))
    .addOption(new Option("--reject", "reject it (the step's onReject decides what happens)"))
    .addOption(new Option("--input <json>", "the fields the step asks for, as a JSON object"))
    .addOption(new Option("--choose <route...>", "the route(s) a Router asks a person to pick"))
    .addOption(new Option("--decision <decision>", "after a step's retries ran out (onError: pause)").choices(["retry", "skip"]))
    .addOption(urlOption())
    .addOption(tokenOption())
    .addOption(jsonOption())
    .action(
      async (
        runId: string,
        flags: { confirm?: boolean; reject?: boolean; input?: string; choose?: string[]; decision?: string; url?: string; token?: string; json?: boolean },
      ) => {
        const given = [flags.confirm, flags.reject, flags.input, flags.choose, flags.decision].filter((flag) => flag !== undefined);
        if (given.length !== 1) {
          throw Errors.invalidArgument("Give exactly one of --confirm, --reject, --input '<json>', --choose <route> or --decision retry|skip.");
        }
        let answer: Record<string, unknown>;
        if (flags.input !== undefined) {
          let input: unknown;
          try {
            input = JSON.parse(flags.input);
          } catch (error) {
            throw Errors.invalidArgument(`--input must be a JSON object, like '{"amount": 10}' (${error instanceof Error ? error.message : String(error)}).`);
          }
          answer = { confirmed: true, user_input: input };
        } else if (flags.choose !== undefined) answer = { selected_choices: flags.choose };
        else if (flags.decision !== undefined) answer = { decision: flags.decision };
        else answer = { confirmed: flags.confirm === true };
        const config = resolveClientConfig({ url: flags.url, token: flags.token });
        const run = (await callServer(config, "GET", `/runs/${encodeURIComponent(runId)}`)) as RunJson;
        const path = `/workflows/${encodeURIComponent(run.workflow_id)}/runs/${encodeURIComponent(runId)}/continue`;
        const after = (await callServer(config, "POST", path, { step_requirements: [answer], stream: false })) as RunJson;
        if (flags.json) return print(JSON.stringify(after, null, 2));
        const now = after.waiting_for ? `${after.status}, waiting for ${waitingFor(after.waiting_for)}` : after.status;
        print(`Run ${runId} continued; it is now ${now}.`);
      },
    );

  runs
    .command("signal")
    .description("Send a signal to a run: it ends the run's wait for that name, or is kept for its next one.")
    .argument("<run_id>")
    .argument("<name>")
    .addOption(new Option("--data <json>", "the payload, as JSON (default null)"))
    .addOption(urlOption())
    .addOption(tokenOption())
    .addOption(jsonOption())
    .action(async (runId: string, name: string, flags: { data?: string; url?: string; token?: string; json?: boolean }) => {
      let payload: unknown = null;
      if (flags.data !== undefined) {
        try {
          payload = JSON.parse(flags.data);
        } catch (error) {
          throw Errors.invalidArgument(`--data must be JSON, like '{"by": "ann"}' (${error instanceof Error ? error.message : String(error)}).`);
        }
      }
      const config = resolveClientConfig({ url: flags.url, token: flags.token });
      const path = `/runs/${encodeURIComponent(runId)}/signals/${encodeURIComponent(name)}`;
      const answer = (await callServer(config, "POST", path, payload)) as { delivered: boolean };
      if (flags.json) return print(JSON.stringify(answer, null, 2));
      print(answer.delivered ? `Signal "${name}" ended run ${runId}'s wait.` : `Signal "${name}" kept for run ${runId}'s next wait for it.`);
    });

  return runs;
}

