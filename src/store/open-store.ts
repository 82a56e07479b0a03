import type { FlowdConfig } from "../config.ts";
import { openPgReadOnly, openPgStore } from "./pg/pg-store.ts";
import { openSqliteReadOnly, openSqliteStore, type StoreHooks } from "./sqlite-store.ts";
import type { ReadOnlyStore, Store } from "./store.ts";

export type { StoreHooks };

/** Whether a `--db` / FLOWD_DB value names a PostgreSQL database rather than a SQLite file. */
export function isPostgresUrl(location: string): boolean {
  return /^postgres(ql)?:\/\//i.test(location);
}

/** Opens the server's store: PostgreSQL for a `postgres://` URL, else the SQLite file at the path. */
export async function openStore(config: Pick<FlowdConfig, "dbPath" | "sync" | "leaseMs">, hooks: StoreHooks): Promise<Store> {
  if (isPostgresUrl(config.dbPath)) return openPgStore(config.dbPath, config.leaseMs, hooks);
  return openSqliteStore(config.dbPath, config.sync, hooks);
}

/** Opens a store for reading only (the CLI): safe while servers write to it. */
export async function openReadOnlyStore(location: string): Promise<ReadOnlyStore> {
  if (isPostgresUrl(location)) return openPgReadOnly(location);
  return openSqliteReadOnly(location);
}
