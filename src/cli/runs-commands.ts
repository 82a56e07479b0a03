import { Command, Option } from "commander";
import { resolveClientConfig } from "../config.ts";
import { Errors } from "../errors.ts";
import { toRunJson, type RunJson } from "../protocol/run-json.ts";
import { RUN_STATUSES, type RunStatus } from "../protocol/run-status.ts";
import { openDb, type Db } from "../store/db.ts";
import { EventReader } from "../store/event-reader.ts";
import { RunStore } from "../store/run-store.ts";
import { callServer } from "./api-client.ts";
import { followRun } from "./follow.ts";
import { duration, eventLine, table, time } from "./format.ts";

const dbOption = () => new Option("--db <path>", "SQLite database file (env FLOWD_DB, default ./data/flowd.db)");
const urlOption = () => new Option("--url <url>", "server URL (default http://HOST:PORT from the environment, else http://127.0.0.1:7777)");
const jsonOption = () => new Option("--json", "print JSON instead of text");

function wholeNumber(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw Errors.invalidArgument(`${name} must be a whole number of at least ${min}; got "${value}".`);
    return n;
  };
}

/** Opens the file read-only: safe while a server writes to it. */
function withDb<T>(dbFlag: string | undefined, use: (db: Db) => T): T {
  const db = openDb(resolveClientConfig({ db: dbFlag }).dbPath, { readonly: true });
  try {
    return use(db);
  } finally {
    db.close();
  }
}

function findRun(db: Db, runId: string): RunJson {
  const run = new RunStore(db).get(runId);
  if (!run) throw Errors.runNotFound(runId, db.path);
  return toRunJson(run);
}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** `flowd runs …`: list, show, events (with --follow), cancel. */
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
    .action((flags: { db?: string; workflow?: string; status?: RunStatus; session?: string; limit: number; json?: boolean }) => {
      const rows = withDb(flags.db, (db) =>
        new RunStore(db).list({
          ...(flags.workflow ? { workflowId: flags.workflow } : {}),
          ...(flags.status ? { status: flags.status } : {}),
          ...(flags.session ? { sessionId: flags.session } : {}),
          limit: flags.limit,
        }),
      ).map(toRunJson);
      if (flags.json) return print(JSON.stringify(rows, null, 2));
      if (rows.length === 0) return print("No runs.");
      print(
        table(
          ["RUN ID", "WORKFLOW", "STATUS", "EVENTS", "CREATED (UTC)", "DURATION"],
          rows.map((r) => [
            r.run_id,
            r.workflow_id,
            r.status,
            String(r.event_count),
            time(r.created_at),
            duration(r.started_at === null ? null : (r.finished_at ?? Date.now()) - r.started_at),
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
    .action((runId: string, flags: { db?: string; json?: boolean }) => {
      const { run, steps } = withDb(flags.db, (db) => ({
        run: findRun(db, runId),
        steps: new EventReader(db.sqlite).stepTimings(runId),
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
    .addOption(new Option("--json", "print each event as its JSON frame, one per line"))
    .action(async (runId: string, flags: { after: number; follow?: boolean; db?: string; url?: string; json?: boolean }) => {
      const printFrame = (frame: Record<string, unknown>) => print(flags.json ? JSON.stringify(frame) : eventLine(frame));
      if (!flags.follow) {
        withDb(flags.db, (db) => {
          findRun(db, runId);
          for (const event of new EventReader(db.sqlite).readAfter(runId, flags.after)) {
            if (flags.json) print(event.frame);
            else printFrame(JSON.parse(event.frame) as Record<string, unknown>);
          }
        });
        return;
      }
      const interactive = process.stderr.isTTY === true;
      const result = await followRun({
        config: resolveClientConfig({ url: flags.url }),
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
    .addOption(jsonOption())
    .action(async (runId: string, flags: { url?: string; json?: boolean }) => {
      const config = resolveClientConfig({ url: flags.url });
      const run = (await callServer(config, "GET", `/runs/${encodeURIComponent(runId)}`)) as RunJson;
      const path = `/workflows/${encodeURIComponent(run.workflow_id)}/runs/${encodeURIComponent(runId)}/cancel`;
      const answer = await callServer(config, "POST", path);
      print(flags.json ? JSON.stringify(answer, null, 2) : `Cancel requested for run ${runId}; it ends at its next step or content boundary (at once if no process is running it).`);
    });

  return runs;
}

