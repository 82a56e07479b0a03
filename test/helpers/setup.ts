import { afterAll } from "vitest";
import { killLeftoverChildren } from "../../testkit/server-process.ts";
import { stopTestPostgres } from "./server.ts";

// Runs after each test file: no server process outlives the file that started it, nor a PostgreSQL it started.
afterAll(async () => {
  killLeftoverChildren();
  await stopTestPostgres();
});
