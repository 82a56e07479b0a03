import { defineConfig } from "vitest/config";

/**
 * Files whose tests speak only the public protocol (WebSocket, HTTP, SSE): they run a
 * second time with the server storing on PostgreSQL (DESIGN §11).
 */
const BOTH_DATABASES = [
  "test/transport/http-api.test.ts",
  "test/transport/ws-auth.test.ts",
  "test/transport/access-policy.test.ts",
  "test/agents/agent-step.test.ts",
  "test/agents/tool-confirmation.test.ts",
  "test/recovery/durable-calls.test.ts",
];

export default defineConfig({
  test: {
    setupFiles: ["test/helpers/setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    projects: [
      // Every file, on SQLite (the scale-out tests need many nodes: they are PostgreSQL's).
      { extends: true, test: { name: "sqlite", include: ["test/**/*.test.ts"], exclude: ["test/scale-out/**"] } },
      {
        extends: true,
        test: { name: "postgres", include: [...BOTH_DATABASES, "test/scale-out/**/*.test.ts"], env: { FLOWD_TEST_STORE: "postgres" } },
      },
    ],
  },
});
