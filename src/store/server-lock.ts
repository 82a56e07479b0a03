import { existsSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import type Database from "better-sqlite3";
import { FlowdError, errorMessage } from "../errors.ts";

interface LockRow {
  hostname: string;
  pid: number;
  process_start: string | null;
}

/** Shortest time between two write probes of `/health` while storage is failing. */
const PROBE_INTERVAL_MS = 1000;

/** Linux keeps each process's state and start time under /proc; elsewhere only whether a pid exists can be asked. */
const HAS_PROC = existsSync("/proc/self/stat");

/** A process as the kernel sees it: whether it runs (a zombie does not), and when it started. */
function processInfo(pid: number): { running: boolean; start: string | null } {
  if (!HAS_PROC) return { running: pidExists(pid), start: null };
  try {
    // /proc/<pid>/stat: "pid (comm) state … starttime" — comm may hold spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const state = fields[0];
    return { running: state !== "Z" && state !== "X", start: fields[19] ?? null };
  } catch {
    return { running: false, start: null };
  }
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function isReadOnlyError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && (code.startsWith("SQLITE_READONLY") || code.startsWith("SQLITE_CANTOPEN") || code === "SQLITE_PERM");
}

/**
 * One server per database, recorded in the database itself (`server_lock`): whatever path
 * a second server opens the file by (a symlink, a hard link, a bind mount), it reads the
 * same row, so no path trick gives a database two writers. The owner is known by host,
 * pid and the pid's start time, so a killed owner (a zombie included) or a reused pid is
 * recognised as gone, and its row taken over. Taking the lock is a write, so a database
 * the server cannot write is refused at start-up.
 */
export class ServerLock {
  private readonly host = hostname();
  private readonly start = processInfo(process.pid).start;
  private lastProbe = 0;
  private lastProbeOk = true;

  private constructor(
    private readonly sqlite: Database.Database,
    private readonly path: string,
  ) {}

  /** Takes the database for this process, or throws DATABASE_LOCKED / DATABASE_READ_ONLY saying what to do. */
  static acquire(sqlite: Database.Database, path: string): ServerLock {
    const lock = new ServerLock(sqlite, path);
    try {
      sqlite.transaction(() => lock.take()).immediate();
    } catch (error) {
      if (error instanceof FlowdError) throw error;
      if (isReadOnlyError(error)) {
        throw new FlowdError(
          "DATABASE_READ_ONLY",
          `Database "${path}" cannot be written (${errorMessage(error)}). flowd stores every event, so it needs write access to ` +
            "the file and its folder (for the -wal and -shm files): check their permissions and the disk, or give --db a writable path.",
          { cause: error },
        );
      }
      throw new FlowdError("INVALID_CONFIG", `Cannot take database "${path}" for this server: ${errorMessage(error)}.`, { cause: error });
    }
    return lock;
  }

  private take(): void {
    const holder = this.sqlite.prepare<[], LockRow>("SELECT hostname, pid, process_start FROM server_lock WHERE slot = 1").get();
    if (holder && !this.isMine(holder)) {
      if (holder.hostname !== this.host) {
        throw new FlowdError(
          "DATABASE_LOCKED",
          `flowd on host "${holder.hostname}" (pid ${holder.pid}) is serving "${this.path}". Stop it, or give this one its own --db. ` +
            `If that server is gone for good, run: sqlite3 "${this.path}" "DELETE FROM server_lock"`,
        );
      }
      const info = processInfo(holder.pid);
      const alive = info.running && (holder.process_start === null || info.start === null || info.start === holder.process_start);
      if (alive) {
        throw new FlowdError(
          "DATABASE_LOCKED",
          `Another flowd process (pid ${holder.pid}) is serving "${this.path}". Stop it, or give this one its own --db.`,
        );
      }
    }
    const now = Date.now();
    this.sqlite
      .prepare(
        `INSERT INTO server_lock (slot, hostname, pid, process_start, acquired_at, checked_at) VALUES (1, ?, ?, ?, ?, ?)
         ON CONFLICT (slot) DO UPDATE SET hostname = excluded.hostname, pid = excluded.pid,
           process_start = excluded.process_start, acquired_at = excluded.acquired_at, checked_at = excluded.checked_at`,
      )
      .run(this.host, process.pid, this.start, now, now);
  }

  private isMine(row: LockRow): boolean {
    return row.hostname === this.host && row.pid === process.pid && row.process_start === this.start;
  }

  /** Why this server no longer owns the database (its row was removed or taken), or null while it does. */
  lost(): FlowdError | null {
    const holder = this.sqlite.prepare<[], LockRow>("SELECT hostname, pid, process_start FROM server_lock WHERE slot = 1").get();
    if (holder && this.isMine(holder)) return null;
    const who = holder ? `it names ${holder.hostname} pid ${holder.pid}` : "it was removed";
    return new FlowdError(
      "LOCK_LOST",
      `This server no longer owns "${this.path}": its server_lock row is not this process's (${who}). ` +
        "Two servers may be writing one database: stop this one, check which should run, then restart it.",
    );
  }

  /**
   * Whether a write commits now: updates the owner's row without waiting for another
   * connection's write lock. At most once a second; in between it answers as last time.
   */
  probeWrite(): boolean {
    const now = Date.now();
    if (now - this.lastProbe < PROBE_INTERVAL_MS) return this.lastProbeOk;
    this.lastProbe = now;
    const timeout = this.sqlite.pragma("busy_timeout", { simple: true }) as number;
    this.sqlite.pragma("busy_timeout = 0");
    try {
      this.sqlite.prepare("UPDATE server_lock SET checked_at = ? WHERE slot = 1").run(now);
      this.lastProbeOk = true;
    } catch {
      this.lastProbeOk = false;
    } finally {
      this.sqlite.pragma(`busy_timeout = ${timeout}`);
    }
    return this.lastProbeOk;
  }

  /** Gives the database up (a graceful stop): the next server takes it at once. */
  release(): void {
    if (!this.sqlite.open) return;
    try {
      this.sqlite
        .prepare("DELETE FROM server_lock WHERE slot = 1 AND hostname = ? AND pid = ?")
        .run(this.host, process.pid);
    } catch {
      // The database refuses writes: the next server sees this process gone and takes over.
    }
  }
}
