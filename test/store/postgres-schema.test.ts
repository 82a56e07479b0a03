import { readFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migratePostgres } from "../../src/store/pg/migrate.ts";
import { startPostgres, type TestPostgres } from "../../testkit/postgres.ts";
import { REPO_ROOT } from "../../testkit/server-process.ts";
import { startServer, type TestServer } from "../helpers/server.ts";
import { TestClient } from "../helpers/ws-client.ts";

/** The ```sql blocks of the README's "Query runs with SQL" section, in order. */
function readmeQueries(): string[] {
  const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
  const section = readme.split("## Query runs with SQL")[1]?.split("\n## ")[0] ?? "";
  return [...section.matchAll(/```sql\n([\s\S]*?)```/g)].map((m) => (m[1] ?? "").trim());
}

const TABLES = ["runs", "events", "step_checkpoints", "idempotency_keys", "signals"] as const;
const PG_ONLY_COLUMNS = ["owner_node", "lease_until", "lease_epoch"];

let postgres: TestPostgres;
let client: pg.Client;
let sqliteServer: TestServer;
const runIds: string[] = [];

async function run(workflowId: string): Promise<string> {
  const { client: ws } = await TestClient.connect(sqliteServer.wsUrl);
  ws.send({ action: "start-workflow", workflow_id: workflowId, message: "m" });
  const frames = await ws.untilTerminal();
  await ws.close();
  return frames[0]?.run_id as string;
}

/** The same query's rows from both databases, made comparable (times as ISO text, numbers as numbers). */
function normalize(rows: readonly Record<string, unknown>[]): Record<string, unknown>[] {
  return rows.map((row) =>
    Object.fromEntries(
      Object.entries(row).map(([key, value]) => {
        if (value instanceof Date) return [key, value.toISOString().replace("T", " ").replace("Z", "")];
        if (typeof value === "string" && /^-?\d+(\.\d+)?$/.test(value) && key !== "run_id") return [key, Number(value)];
        return [key, value];
      }),
    ),
  );
}

beforeAll(async () => {
  postgres = await startPostgres();
  const url = await postgres.createDatabase("flowd_schema_test");
  await migratePostgres(url);
  // Applying them again changes nothing.
  await migratePostgres(url);
  // The timestamps the views make are UTC, compared as such.
  pg.types.setTypeParser(1114, (text) => new Date(`${text.replace(" ", "T")}Z`));
  client = new pg.Client({ connectionString: url });
  // The cluster stopping while the connection closes is no test failure (see testPool).
  client.on("error", () => {});
  await client.connect();
  // The data a flowd server wrote to SQLite, copied row for row.
  sqliteServer = await startServer();
  runIds.push(await run("steps-flow"), await run("failing-flow"), await run("parallel-flow"));
  const sqlite = sqliteServer.openReader();
  for (const table of TABLES) {
    const rows = sqlite.prepare(`SELECT * FROM ${table}`).all() as Record<string, unknown>[];
    for (const row of rows) {
      const columns = Object.keys(row);
      await client.query(
        `INSERT INTO ${table} (${columns.join(", ")}) VALUES (${columns.map((_, i) => `$${i + 1}`).join(", ")})`,
        columns.map((column) => row[column]),
      );
    }
  }
}, 60_000);
afterAll(async () => {
  await client?.end();
  await sqliteServer?.close();
  await postgres?.stop();
});

describe("PostgreSQL: the same tables and views as SQLite", () => {
  it("has every table and view, with the columns SQLite has", async () => {
    const sqlite = sqliteServer.openReader();
    for (const table of [...TABLES, "run_overview", "step_timings", "event_log"]) {
      const sqliteColumns = (sqlite.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name);
      const { rows } = await client.query<{ column_name: string }>(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
        [table],
      );
      // In any order: SQLite appends a column added later at the end. The leases are PostgreSQL's own (many nodes).
      const postgresColumns = rows.map((r) => r.column_name).filter((c) => !PG_ONLY_COLUMNS.includes(c));
      expect(postgresColumns.sort(), table).toEqual(sqliteColumns.sort());
    }
  });

  it("answers each of the README's queries as SQLite does", async () => {
    const sqlite = sqliteServer.openReader();
    const queries = readmeQueries();
    expect(queries).toHaveLength(5);
    for (const [i, template] of queries.entries()) {
      const query = template.replace("<run id>", runIds[0]!);
      const fromSqlite = normalize(sqlite.prepare(query).all() as Record<string, unknown>[]);
      const fromPostgres = normalize((await client.query(query)).rows as Record<string, unknown>[]);
      // Rows that tie on the ORDER BY may come in either order. round() of a float (SQLite)
      // and of an exact numeric (PostgreSQL) may differ in the last digit shown: 5.35 → 5.3 or 5.4.
      const shape = (rows: Record<string, unknown>[]) =>
        rows.map((row) => JSON.stringify(Object.entries(row).map(([k, v]) => [k, typeof v === "number" ? "number" : v]))).sort();
      expect(shape(fromPostgres), `README query ${i + 1}`).toEqual(shape(fromSqlite));
      const byKey = (rows: Record<string, unknown>[]) => new Map(rows.map((row) => [JSON.stringify(Object.values(row).filter((v) => typeof v !== "number")), row]));
      const sqliteRows = byKey(fromSqlite);
      for (const [key, row] of byKey(fromPostgres)) {
        for (const [column, value] of Object.entries(row)) {
          if (typeof value === "number") expect(Math.abs(value - Number(sqliteRows.get(key)?.[column])), `README query ${i + 1}: ${column}`).toBeLessThanOrEqual(0.1);
        }
      }
      if (i !== 0) expect(fromPostgres.length, `README query ${i + 1} returns rows`).toBeGreaterThan(0);
    }
  });
});
