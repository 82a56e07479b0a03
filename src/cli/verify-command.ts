import { Command, Option } from "commander";
import { Errors } from "../errors.ts";
import { seededRandom } from "../ops/seeded-random.ts";
import { cleanUpTrials, failed, runTrial, type TrialReport, type VerifyOptions } from "../ops/verify.ts";
import { CONTENT_CREATION_WORKFLOW_ID } from "../workflows/content-creation.ts";
import { loadWorkflows } from "./load-workflows.ts";

function count(name: string, min: number, max: number): (value: string) => number {
  return (value) => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) throw Errors.invalidArgument(`${name} must be a whole number from ${min} to ${max}; got "${value}".`);
    return parsed;
  };
}

const COLUMNS = ["kills", "received", "lost", "duplicated", "outOfOrder", "changed", "unfinished"] as const;
const HEADINGS: Record<(typeof COLUMNS)[number], string> = {
  kills: "SIGKILLs",
  received: "received",
  lost: "lost",
  duplicated: "duplicated",
  outOfOrder: "out of order",
  changed: "changed",
  unfinished: "runs not finished",
};

function line(label: string, report: Pick<TrialReport, (typeof COLUMNS)[number]>): string {
  return `${label.padEnd(10)}${COLUMNS.map((column) => String(report[column]).padStart(HEADINGS[column].length + 2)).join("")}`;
}

/** `flowd verify`: the durability guarantees, checked by the user on their machine, with their workflows. */
export function verifyCommand(): Command {
  return new Command("verify")
    .description(
      "Check flowd's durability yourself: start a server on a scratch database, watch runs through the public WebSocket protocol, SIGKILL the server at random moments, restart it, reconnect every client from its last index, and count what was lost, duplicated, out of order, changed, or never finished. Exit 1 on any.",
    )
    .addOption(new Option("--trials <n>", "trials, each on a fresh database").default(5).argParser(count("--trials", 1, 1000)))
    .addOption(new Option("--runs <k>", "runs started and watched per trial").default(8).argParser(count("--runs", 1, 200)))
    .addOption(new Option("--kills <n>", "SIGKILLs per trial, at random moments").default(2).argParser(count("--kills", 0, 100)))
    .addOption(new Option("--workflows <module>", "your workflows module (default: the built-in workflows)"))
    .addOption(new Option("--workflow <id>", `the workflow to run (default: ${CONTENT_CREATION_WORKFLOW_ID}, or the module's first)`))
    .addOption(new Option("--message <text>", "the runs' input message").default("verify"))
    .addOption(new Option("--seed <n>", "seed of the kill moments, to repeat a trial").argParser(count("--seed", 0, 2 ** 31)))
    .addOption(new Option("--server <command>", "check another server speaking the protocol: a command (with arguments) that takes --port <p> --db <file>"))
    .addOption(new Option("--json", "print the reports as JSON"))
    .action(
      async (flags: { trials: number; runs: number; kills: number; workflows?: string; workflow?: string; message: string; seed?: number; server?: string; json?: boolean }) => {
        let workflowId = flags.workflow ?? CONTENT_CREATION_WORKFLOW_ID;
        if (flags.workflows !== undefined && flags.workflow === undefined) {
          const first = (await loadWorkflows(flags.workflows))[0];
          if (!first) throw Errors.invalidArgument(`${flags.workflows} exports no workflow: pass a module whose default export is a workflow or a list of them.`);
          workflowId = first.id;
        }
        const [command, ...args] = flags.server !== undefined ? flags.server.split(/\s+/).filter((part) => part !== "") : [process.execPath, process.argv[1]!, "serve"];
        if (flags.server === undefined && flags.workflows !== undefined) args.push("--workflows", flags.workflows);
        const seed = flags.seed ?? Math.floor(Math.random() * 2 ** 31);
        const tty = process.stderr.isTTY === true;
        const options: VerifyOptions = {
          trials: flags.trials,
          runs: flags.runs,
          kills: flags.kills,
          workflowId,
          message: flags.message,
          server: {
            command: command!,
            args,
            env: {
              FLOWD_LOG_LEVEL: "warn",
              // The built-in demo model paces its tokens for people to watch; here, fast.
              FLOWD_DEMO_PACE_MS: process.env.FLOWD_DEMO_PACE_MS ?? "5",
              // The scratch server is the clients' own: on this machine, with no authentication to meet,
              // and (for the built-in workflows) the offline model rather than a paid API, trial after trial.
              HOST: "127.0.0.1",
              FLOWD_SECURITY_KEY: "",
              FLOWD_JWT_SECRET: "",
              FLOWD_JWT_PUBLIC_KEY: "",
              ...(flags.workflows === undefined ? { OPENAI_API_KEY: "" } : {}),
            },
          },
          finishTimeoutMs: 120_000,
          random: seededRandom(seed),
          progress: ({ trial, phase, received }) => {
            if (!tty) return;
            const done = Math.round(((trial - 1) / flags.trials) * 20);
            process.stderr.write(`\r\x1b[2K[${"#".repeat(done)}${"-".repeat(20 - done)}] trial ${trial}/${flags.trials}: ${phase}; ${received} events received`);
          },
        };
        const out = (text: string): void => void process.stdout.write(`${text}\n`);
        if (!flags.json) {
          out(`flowd verify: ${flags.trials} trials × ${flags.runs} runs of ${workflowId}, ${flags.kills} SIGKILLs each (seed ${seed})`);
          out(line("trial", Object.fromEntries(COLUMNS.map((column) => [column, HEADINGS[column]])) as unknown as TrialReport));
        }
        // Ctrl-C: the trial's server and scratch database go with it.
        for (const signal of ["SIGINT", "SIGTERM"] as const) {
          process.once(signal, () => {
            cleanUpTrials();
            process.exit(130);
          });
        }
        const reports: TrialReport[] = [];
        // Where the first trial's kills fall; then over how long the runs took the trial before.
        let expectedMs = 1000;
        for (let trial = 1; trial <= flags.trials; trial++) {
          const report = await runTrial(trial, options, expectedMs);
          expectedMs = Math.max(100, report.runMs);
          reports.push(report);
          if (tty) process.stderr.write("\r\x1b[2K");
          if (!flags.json) out(line(`${trial}${failed(report) ? " ✗" : ""}`, report));
          else if (!tty) process.stderr.write(`trial ${trial}/${flags.trials} done\n`);
        }
        const total = Object.fromEntries(COLUMNS.map((column) => [column, reports.reduce((sum, report) => sum + report[column], 0)])) as Pick<TrialReport, (typeof COLUMNS)[number]>;
        // A kill planned after every run had finished does not happen: said, so that a pass is not taken for more than it is.
        const planned = flags.trials * flags.kills;
        if (flags.json) out(JSON.stringify({ seed, workflow: workflowId, trials: reports, total }, null, 2));
        else {
          out(line("total", total));
          if (total.kills < planned) out(`${planned - total.kills} of ${planned} SIGKILLs did not happen: every run had finished before their moment.`);
          out(failed(total) ? `FAILED: see the trials marked ✗ (repeat them with --seed ${seed}).` : "OK: nothing lost, duplicated, out of order or changed, and every run finished.");
        }
        if (failed(total)) process.exitCode = 1;
      },
    );
}
