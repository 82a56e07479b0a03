import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach } from "vitest";
import { pino } from "pino";
import { serve, type FlowdServer, type ServeOptions } from "../../src/serve.ts";
import type { WorkflowDefinition } from "../../src/workflows/definition.ts";
import { testWorkflows } from "../fixtures/workflows.ts";
import type pg from "pg";
import { isPostgresUrl } from "../../src/store/open-store.ts";
import { startPostgres, testPool, type TestPostgres } from "../../testkit/postgres.ts";

/** Whether this run of the suite stores on PostgreSQL (the vitest project "postgres"). */
export const ON_POSTGRES = process.env.FLOWD_TEST_STORE === "postgres";

let postgres: Promise<TestPostgres> | null = null;

/** A new, empty database on the suite's PostgreSQL (started on first use, once per test file). */
export async function freshPostgresDatabase(): Promise<string> {
  postgres ??= startPostgres();
  return (await postgres).createDatabase(`t_${randomBytes(6).toString("hex")}`);
}

/** Stops the suite's PostgreSQL, if a test started it. */
export async function stopTestPostgres(): Promise<void> {
  if (postgres) await (await postgres).stop();
  postgres = null;
}

/** A real flowd server on an ephemeral port with its own temp database file. */
export interface TestServer {
  server: FlowdServer;
  wsUrl: string;
  url: string;
  dbPath: string;
  /** A separate read-only connection to the server's file, as a `sqlite3` shell would open it (SQLite only). */
  openReader(): Database.Database;
  /** Rows of a query (`?` placeholders; SQL both databases speak) on the server's database, SQLite or PostgreSQL. */
  query<T>(sql: string, ...params: unknown[]): Promise<T[]>;
  /** The stored event indices of a run, in order. */
  storedIndices(runId: string): Promise<number[]>;
  close(): Promise<void>;
}

/** A fresh temp folder, removed by the returned function. */
export function tempDir(prefix = "flowd-test-"): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A fresh temp folder with a database path in it for each test of the calling file
 * (registers beforeEach/afterEach hooks); read `dir` and `db` inside tests.
 */
export function freshDatabaseEachTest(): { readonly dir: string; readonly db: string } {
  let temp: ReturnType<typeof tempDir> | null = null;
  beforeEach(() => {
    temp = tempDir();
  });
  afterEach(() => {
    temp?.remove();
    temp = null;
  });
  const current = (): ReturnType<typeof tempDir> => {
    if (!temp) throw new Error("freshDatabaseEachTest: read dir and db inside a test");
    return temp;
  };
  return {
    get dir() {
      return current().dir;
    },
    get db() {
      return join(current().dir, "flowd.db");
    },
  };
}

/** Starts flowd in this process (real sockets, real SQLite file) with the test workflows by default. */
export async function startServer(
  options: {
    workflows?: readonly WorkflowDefinition[];
    securityKey?: string;
    dbPath?: string;
    openaiApiKey?: string;
    openaiBaseUrl?: string;
    modelRetries?: number;
    modelTimeoutMs?: number;
    stallTimeoutMs?: number;
    /** Any other settings, as `serve()` takes them. */
    settings?: Omit<ServeOptions, "workflows" | "logger" | "port" | "host" | "db">;
  } = {},
): Promise<TestServer> {
  const temp = tempDir();
  const dbPath = options.dbPath ?? (ON_POSTGRES ? await freshPostgresDatabase() : join(temp.dir, "flowd.db"));
  const server = await serve({
    port: 0,
    host: "127.0.0.1",
    db: dbPath,
    securityKey: options.securityKey ?? null,
    openaiApiKey: options.openaiApiKey ?? null,
    ...(options.openaiBaseUrl ? { openaiBaseUrl: options.openaiBaseUrl } : {}),
    modelRetries: options.modelRetries ?? 3,
    modelTimeoutMs: options.modelTimeoutMs ?? 10_000,
    demoPaceMs: 10,
    ...(options.stallTimeoutMs ? { stallTimeoutMs: options.stallTimeoutMs } : {}),
    ...options.settings,
    workflows: options.workflows ?? testWorkflows,
    logger: pino({ level: "silent" }),
  });
  const readers: Database.Database[] = [];
  let pool: pg.Pool | null = null;
  const query = async <T>(sql: string, ...params: unknown[]): Promise<T[]> => {
    if (!isPostgresUrl(dbPath)) {
      const reader = new Database(dbPath, { readonly: true, fileMustExist: true });
      try {
        return reader.prepare(sql).all(...params) as T[];
      } finally {
        reader.close();
      }
    }
    pool ??= testPool(dbPath);
    let n = 0;
    return (await pool.query(sql.replace(/\?/g, () => `$${++n}`), params)).rows as T[];
  };
  return {
    query,
    storedIndices: async (runId) =>
      (await query<{ event_index: number }>("SELECT event_index FROM events WHERE run_id = ? ORDER BY event_index", runId)).map((row) => row.event_index),
    server,
    wsUrl: server.wsUrl,
    url: server.url,
    dbPath,
    openReader: () => {
      if (isPostgresUrl(dbPath)) throw new Error("openReader reads a SQLite file; this test runs on PostgreSQL");
      const reader = new Database(dbPath, { readonly: true, fileMustExist: true });
      readers.push(reader);
      return reader;
    },
    close: async () => {
      for (const reader of readers) reader.close();
      await pool?.end();
      await server.close();
      temp.remove();
    },
  };
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The stored event indices of a run, in order. */
export function storedIndices(db: Database.Database, runId: string): number[] {
  return db
    .prepare<[string], { event_index: number }>("SELECT event_index FROM events WHERE run_id = ? ORDER BY event_index")
    .all(runId)
    .map((row) => row.event_index);
}

/** 0..n-1 */
export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
