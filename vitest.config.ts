import { defineConfig } from "vitest/config";

/**
 * Files whose tests speak only the public protocol (WebSocket, HTTP, SSE): they run a
 * second time with the server storing on PostgreSQL (DESIGN §11).
 */
const BOTH_DATABASES = [
  "test/transport/http-api.test.ts",
  "test/transport/ws-reconnect.test.ts",
  "test/transport/runs-that-wait.test.ts",
  "test/transport/idempotent-starts.test.ts",
  "test/transport/slow-subscriber.test.ts",
  "test/transport/sse-resume.test.ts",
  "test/transport/ws-bad-input.test.ts",
  "test/transport/hostile-clients.test.ts",
  "test/engine/cancel.test.ts",
  "test/engine/composites.test.ts",
  "test/recovery/waits-crash.test.ts",
  "test/agents/content-creation.test.ts",
  "test/agents/agent-restart.test.ts",
  "test/transport/ws-auth.test.ts",
  "test/transport/access-policy.test.ts",
  "test/agents/agent-step.test.ts",
  "test/agents/tool-confirmation.test.ts",
  "test/recovery/durable-calls.test.ts",
  "test/transport/retention.test.ts",
  "test/transport/users.test.ts",
  "test/ops/metrics.test.ts",
  "test/ops/tracing.test.ts",
  "test/transport/durable-streams.test.ts",
];

export default defineConfig({
  test: {
    setupFiles: ["test/helpers/setup.ts"],
    testTimeout: 30_000,
    maxWorkers: 2,
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
