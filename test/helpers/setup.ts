import { afterAll } from "vitest";
import { killLeftoverChildren } from "../../testkit/server-process.ts";

// Runs after each test file: no server process outlives the file that started it.
afterAll(() => killLeftoverChildren());
