import { Command, Option } from "commander";
import { resolveConfig } from "../config.ts";
import { FlowdError, errorMessage } from "../errors.ts";
import { serve } from "../serve.ts";
import { openDb } from "../store/db.ts";
import { loadWorkflows } from "./load-workflows.ts";
import { backupCommand, pruneCommand, vacuumCommand } from "./maintenance-commands.ts";
import { runsCommand } from "./runs-commands.ts";
import { verifyCommand } from "./verify-command.ts";

/** Prints the error the CLI way: stderr and exit 1, or a JSON object on stdout with --json. */
function fail(error: unknown): never {
  const code = error instanceof FlowdError ? error.code : "INTERNAL";
  if (process.argv.includes("--json")) {
    process.stdout.write(`${JSON.stringify({ error: errorMessage(error), code })}\n`);
  } else {
    process.stderr.write(`flowd: ${errorMessage(error)} [${code}]\n`);
  }
  process.exit(1);
}

// A reader that stops early (`flowd runs events <id> | head`) closes the pipe: that ends
// the command quietly, as it does for any Unix tool, instead of with a stack trace.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

const program = new Command()
  .name("flowd")
  .description("A durable workflow run server: runs survive restarts, clients catch up on what they missed.")
  .showHelpAfterError();

program
  .command("serve")
  .description("Start the server (HTTP and the workflow WebSocket on one port).")
  .addOption(new Option("--port <port>", "port to listen on (env PORT, default 7777; 0 picks a free one)"))
  .addOption(new Option("--host <host>", "address to listen on (env HOST, default 127.0.0.1)"))
  .addOption(new Option("--db <path>", "SQLite database file (env FLOWD_DB, default ./data/flowd.db)"))
  .addOption(new Option("--workflows <module>", "a .ts/.js module whose default export is a workflow or a list of them"))
  .action(async (flags: { port?: string; host?: string; db?: string; workflows?: string }) => {
    try {
      const workflows = flags.workflows ? await loadWorkflows(flags.workflows) : undefined;
      const server = await serve({ port: flags.port, host: flags.host, db: flags.db, ...(workflows ? { workflows } : {}) });
      let stopping = false;
      const stop = (signal: NodeJS.Signals): void => {
        if (stopping) {
          server.logger.warn({ signal }, "second signal: exiting now");
          process.exit(1);
        }
        stopping = true;
        server.logger.info({ signal }, "shutting down");
        server.close().then(
          () => process.exit(0),
          (error: unknown) => {
            server.logger.error({ err: error }, "shutdown failed");
            process.exit(1);
          },
        );
      };
      process.on("SIGTERM", stop);
      process.on("SIGINT", stop);
    } catch (error) {
      fail(error);
    }
  });

program
  .command("migrate")
  .description("Create the database file if needed and apply pending migrations, then exit.")
  .addOption(new Option("--db <path>", "SQLite database file (env FLOWD_DB, default ./data/flowd.db)"))
  .action((flags: { db?: string }) => {
    try {
      const config = resolveConfig({ db: flags.db });
      openDb(config.dbPath).close();
      process.stdout.write(`Database ${config.dbPath} is up to date.\n`);
    } catch (error) {
      fail(error);
    }
  });

program.addCommand(runsCommand());
program.addCommand(pruneCommand());
program.addCommand(vacuumCommand());
program.addCommand(backupCommand());
program.addCommand(verifyCommand());

try {
  await program.parseAsync(process.argv);
} catch (error) {
  fail(error);
}
