import { existsSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database from "better-sqlite3";
import { Command, Option } from "commander";
import { DURATION_FORMAT, parseDuration, resolveClientConfig, resolveConfig } from "../config.ts";
import { Errors } from "../errors.ts";
import { openDb } from "../store/db.ts";
import { callServer, tokenOption } from "./api-client.ts";
import { time } from "./format.ts";

/** Runs pruned per request: each request is a short piece of work for the server, and a progress line here. */
const RUNS_PER_REQUEST = 100;

interface PruneAnswer {
  dry_run: boolean;
  runs: { run_id: string; workflow_id: string; finished_at: number; events: number }[];
  events: number;
  more: boolean;
}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

function megabytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** `flowd prune`: through the server, which prunes between its commits. */
export function pruneCommand(): Command {
  return new Command("prune")
    .description("Delete the events of finished runs (their rows stay, marked pruned): those older than --older-than, or past their retention.")
    .addOption(new Option("--older-than <duration>", `finished more than this long ago: ${DURATION_FORMAT}`))
    .addOption(new Option("--workflow <id>", "only runs of this workflow"))
    .addOption(new Option("--dry-run", "list what would be pruned, delete nothing"))
    .addOption(new Option("--url <url>", "server URL (default http://HOST:PORT from the environment, else http://127.0.0.1:7777)"))
    .addOption(tokenOption())
    .addOption(new Option("--json", "print JSON instead of text"))
    .action(async (flags: { olderThan?: string; workflow?: string; dryRun?: boolean; url?: string; token?: string; json?: boolean }) => {
      if (flags.olderThan !== undefined && parseDuration(flags.olderThan) === null) {
        throw Errors.invalidArgument(`--older-than must be ${DURATION_FORMAT}; got "${flags.olderThan}".`);
      }
      const config = resolveClientConfig({ url: flags.url, token: flags.token });
      const body = { older_than: flags.olderThan, workflow_id: flags.workflow, dry_run: flags.dryRun ?? false, limit: flags.dryRun ? 1000 : RUNS_PER_REQUEST };
      const all: PruneAnswer["runs"] = [];
      let events = 0;
      let more = true;
      while (more) {
        const answer = (await callServer(config, "POST", "/runs/prune", body)) as PruneAnswer;
        all.push(...answer.runs);
        events += answer.events;
        // A dry run prunes nothing, so asking again would list the same runs.
        more = answer.more && !flags.dryRun;
        if (!flags.json && !flags.dryRun && (more || all.length > RUNS_PER_REQUEST)) {
          process.stderr.write(`pruned ${all.length} runs, ${events} events so far…\n`);
        }
        if (flags.dryRun && answer.more && !flags.json) print(`(more than ${answer.runs.length} runs match; showing the oldest)`);
      }
      if (flags.json) return print(JSON.stringify({ dry_run: flags.dryRun ?? false, runs: all, events }, null, 2));
      for (const run of all) print(`${flags.dryRun ? "would prune" : "pruned"} ${run.run_id}  ${run.workflow_id}  finished ${time(run.finished_at)}  ${run.events} events`);
      print(`${flags.dryRun ? "Would prune" : "Pruned"} ${all.length} runs, ${events} events.`);
    });
}

/** `flowd vacuum`: on the file, with no server running. */
export function vacuumCommand(): Command {
  return new Command("vacuum")
    .description("Rewrite a SQLite database to give back the space pruning freed, and turn on incremental vacuum for it (stop the server first).")
    .addOption(new Option("--db <path>", "SQLite database file (env FLOWD_DB, default ./data/flowd.db)"))
    .action((flags: { db?: string }) => {
      const config = resolveConfig({ db: flags.db });
      if (/^postgres(ql)?:\/\//i.test(config.dbPath)) throw Errors.invalidArgument("flowd vacuum is for a SQLite file: PostgreSQL's autovacuum reuses the space pruning frees.");
      if (!existsSync(config.dbPath)) throw Errors.invalidArgument(`There is no database at ${config.dbPath}: pass --db (or set FLOWD_DB) to the file the server uses.`);
      const size = (): number => statSync(config.dbPath).size + (statSync(`${config.dbPath}-wal`, { throwIfNoEntry: false })?.size ?? 0);
      // Exclusive: it refuses while a server holds the file, and no server starts while it works.
      const db = openDb(config.dbPath, { exclusive: true });
      try {
        const before = size();
        const mode = db.sqlite.pragma("auto_vacuum", { simple: true }) as number;
        db.sqlite.pragma("auto_vacuum = INCREMENTAL");
        db.sqlite.exec("VACUUM");
        db.sqlite.pragma("wal_checkpoint(TRUNCATE)");
        print(`${config.dbPath}: ${megabytes(before)} → ${megabytes(size())}; incremental vacuum ${mode === 2 ? "was already on" : "is now on"}.`);
      } finally {
        db.close();
      }
    });
}

/** Files below this size are copied without progress lines. */
const BACKUP_PROGRESS_FROM_BYTES = 64 * 1024 * 1024;
/** The most pages better-sqlite3 takes for a step: everything left. */
const ALL_PAGES = 0x7fffffff;

/** `flowd backup <file>`: a consistent copy of the live SQLite file, taken beside the server. */
export function backupCommand(): Command {
  return new Command("backup")
    .description("Copy the database while the server runs: a consistent snapshot that opens as a normal flowd database (SQLite; on PostgreSQL, use pg_dump).")
    .argument("<file>", "where to write the copy (a new file)")
    .addOption(new Option("--db <path>", "SQLite database file (env FLOWD_DB, default ./data/flowd.db)"))
    .action(async (file: string, flags: { db?: string }) => {
      const config = resolveConfig({ db: flags.db });
      if (/^postgres(ql)?:\/\//i.test(config.dbPath)) {
        throw Errors.invalidArgument(
          "flowd backup copies a SQLite file. On PostgreSQL, use pg_dump, which takes a consistent snapshot while flowd writes: " +
            "pg_dump --format=custom --file=flowd.dump \"$FLOWD_DB\" (and pg_restore --dbname=<new database> flowd.dump to bring it back).",
        );
      }
      if (!existsSync(config.dbPath)) throw Errors.invalidArgument(`There is no database at ${config.dbPath}: pass --db (or set FLOWD_DB) to the file the server uses.`);
      if (existsSync(file)) throw Errors.invalidArgument(`${file} exists already: give a new file name (a backup never overwrites).`);
      if (!existsSync(dirname(resolve(file)))) throw Errors.invalidArgument(`The folder of ${file} (${dirname(resolve(file))}) does not exist: create it, or give a path in an existing one.`);
      const started = performance.now();
      // Written under another name and renamed when whole: an interrupted backup leaves no file that looks like one.
      const partial = `${file}.partial`;
      rmSync(partial, { force: true });
      try {
        await backupSqlite(config.dbPath, partial, (done, total) => process.stderr.write(`backup: ${Math.floor((done / total) * 100)}% (${megabytes(done)} of ${megabytes(total)})…\n`));
        renameSync(partial, file);
      } catch (error) {
        rmSync(partial, { force: true });
        throw error;
      }
      const copied = statSync(file).size;
      const check = new Database(file, { readonly: true, fileMustExist: true });
      try {
        const runs = (check.prepare("SELECT count(*) AS n FROM runs").get() as { n: number }).n;
        const events = (check.prepare("SELECT count(*) AS n FROM events").get() as { n: number }).n;
        print(`${file}: ${megabytes(copied)}, ${runs} runs and ${events} events, in ${((performance.now() - started) / 1000).toFixed(1)} s. Serve it with --db ${file}.`);
      } finally {
        check.close();
      }
    });
}

/**
 * SQLite's online backup of a live file, through a read connection of its own: the server
 * goes on writing. A write during a step-wise copy makes SQLite start it over; then the rest
 * is copied in one step, which reads one snapshot and so always ends. The bytes copied.
 */
export async function backupSqlite(
  source: string,
  target: string,
  progress: (done: number, total: number) => void,
  progressFromBytes = BACKUP_PROGRESS_FROM_BYTES,
): Promise<number> {
  const db = new Database(source, { readonly: true, fileMustExist: true });
  try {
    const pageSize = db.pragma("page_size", { simple: true }) as number;
    let lastRemaining = Number.POSITIVE_INFINITY;
    let startedOver = false;
    let reported = -1;
    let copiedPages = 0;
    await db.backup(target, {
      progress: ({ totalPages, remainingPages }) => {
        // No step forward since the last call: a write made SQLite start over (the file may not have grown).
        if (remainingPages >= lastRemaining) startedOver = true;
        lastRemaining = remainingPages;
        copiedPages = totalPages;
        const total = totalPages * pageSize;
        const tenth = Math.floor(((totalPages - remainingPages) / totalPages) * 10);
        if (total >= progressFromBytes && tenth > reported) {
          reported = tenth;
          progress((totalPages - remainingPages) * pageSize, total);
        }
        // All that is left in one step (one snapshot): a step of totalPages would fall short of a file that grew meanwhile.
        return startedOver ? ALL_PAGES : Math.max(256, Math.ceil(totalPages / 20));
      },
    });
    if (reported >= 0) progress(copiedPages * pageSize, copiedPages * pageSize);
    return copiedPages * pageSize;
  } finally {
    db.close();
  }
}
