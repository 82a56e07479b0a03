import { existsSync, readFileSync, readlinkSync } from "node:fs";
import { hostname } from "node:os";
import type Database from "better-sqlite3";
import { Errors, type FlowdError } from "../errors.ts";

interface LockRow {
  hostname: string;
  pid: number;
  process_start: string | null;
  pid_namespace: string | null;
  checked_at: number;
}

/** How often the owner says it is alive (`checked_at`). */
const HEARTBEAT_MS = 5000;
/** Silence after which an owner that cannot be asked directly (another host or container) counts as gone. */
export const LOCK_STALE_MS = 15_000;
/** Shortest time between two write probes of `/health` while storage is failing. */
const PROBE_INTERVAL_MS = 1000;

/**
 * The table as migration 0003 creates it: the lock is taken before migrations run, so
 * a second server never migrates a database another one serves.
 */
const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS server_lock (
  slot integer PRIMARY KEY NOT NULL, hostname text NOT NULL, pid integer NOT NULL, process_start text,
  pid_namespace text, acquired_at integer NOT NULL, checked_at integer NOT NULL)`;

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

function pidNamespace(): string | null {
  try {
    return readlinkSync("/proc/self/ns/pid");
  } catch {
    return null;
  }
}

/**
 * One server per database, recorded in the database itself (`server_lock`): whatever path
 * a second server opens the file by (a symlink, a hard link), it reads the same row, so no
 * path trick gives a database two writers. An owner on this host and in this pid
 * namespace is asked directly: gone once its pid is dead, a zombie, or another process's
 * (its start time differs), so a killed server is taken over at once. An owner elsewhere
 * (another host, another container) is gone once its heartbeat is LOCK_STALE_MS old.
 * Taking the lock is a write, so a database the server cannot write is refused at start.
 */
export class ServerLock {
  private readonly host = hostname();
  private readonly start = processInfo(process.pid).start;
  private readonly namespace = pidNamespace();
  private lastProbe = 0;
  private lastProbeOk = true;
  private heartbeat: NodeJS.Timeout | null = null;

  private constructor(
    private readonly sqlite: Database.Database,
    private readonly path: string,
  ) {}

  /** Takes the database for this process, or throws DATABASE_LOCKED / DATABASE_READ_ONLY saying what to do. */
  static acquire(sqlite: Database.Database, path: string): ServerLock {
    const lock = new ServerLock(sqlite, path);
    // A database that cannot be written fails here, the lock being a write; openDb says so.
    sqlite.transaction(() => lock.take()).immediate();
    lock.heartbeat = setInterval(() => lock.probeWrite(true), HEARTBEAT_MS);
    lock.heartbeat.unref();
    return lock;
  }

  private take(): void {
    this.sqlite.exec(CREATE_TABLE);
    const holder = this.holder();
    if (holder && !this.isMine(holder)) this.refuseIfAlive(holder);
    const now = Date.now();
    this.sqlite
      .prepare(
        `INSERT INTO server_lock (slot, hostname, pid, process_start, pid_namespace, acquired_at, checked_at) VALUES (1, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (slot) DO UPDATE SET hostname = excluded.hostname, pid = excluded.pid, process_start = excluded.process_start,
           pid_namespace = excluded.pid_namespace, acquired_at = excluded.acquired_at, checked_at = excluded.checked_at`,
      )
      .run(this.host, process.pid, this.start, this.namespace, now, now);
  }

  private refuseIfAlive(holder: LockRow): void {
    const local = holder.hostname === this.host && holder.pid_namespace === this.namespace;
    if (local) {
      const info = processInfo(holder.pid);
      const alive = info.running && (holder.process_start === null || info.start === null || info.start === holder.process_start);
      if (!alive) return;
      throw Errors.databaseLocked(this.path, holder.pid);
    }
    const silentMs = Date.now() - holder.checked_at;
    if (silentMs > LOCK_STALE_MS) return;
    throw Errors.databaseLockedElsewhere(this.path, holder.pid, holder.hostname, Math.round(silentMs / 1000), LOCK_STALE_MS / 1000);
  }

  private holder(): LockRow | undefined {
    return this.sqlite
      .prepare<[], LockRow>("SELECT hostname, pid, process_start, pid_namespace, checked_at FROM server_lock WHERE slot = 1")
      .get();
  }

  private isMine(row: LockRow): boolean {
    return row.hostname === this.host && row.pid === process.pid && row.process_start === this.start && row.pid_namespace === this.namespace;
  }

  /** Why this server no longer owns the database (its row was removed or taken), or null while it does. */
  lost(): FlowdError | null {
    const holder = this.holder();
    if (holder && this.isMine(holder)) return null;
    const who = holder ? `it names ${holder.hostname} pid ${holder.pid}` : "it was removed";
    return Errors.lockLost(this.path, who);
  }

  /**
   * Whether a write commits now: stamps this owner's row without waiting for another
   * connection's write lock (so it never holds the event loop). `/health` asks at most
   * once a second and in between gets the last answer; the heartbeat always writes.
   */
  probeWrite(heartbeat = false): boolean {
    const now = Date.now();
    if (!heartbeat && now - this.lastProbe < PROBE_INTERVAL_MS) return this.lastProbeOk;
    this.lastProbe = now;
    if (!this.sqlite.open) return false;
    const timeout = this.sqlite.pragma("busy_timeout", { simple: true }) as number;
    this.sqlite.pragma("busy_timeout = 0");
    try {
      this.sqlite
        .prepare("UPDATE server_lock SET checked_at = ? WHERE slot = 1 AND hostname = ? AND pid = ? AND process_start IS ?")
        .run(now, this.host, process.pid, this.start);
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
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (!this.sqlite.open) return;
    try {
      this.sqlite
        .prepare("DELETE FROM server_lock WHERE slot = 1 AND hostname = ? AND pid = ? AND process_start IS ?")
        .run(this.host, process.pid, this.start);
    } catch {
      // The database refuses writes: the next server sees this process gone and takes over.
    }
  }
}
