import { describe, expect, it } from "vitest";
import { DEFAULTS, resolveConfig } from "../src/config.ts";

describe("configuration: flags over environment over defaults", () => {
  it("uses the documented defaults when nothing is given", () => {
    expect(resolveConfig({}, {})).toMatchObject({
      port: 7777,
      host: "127.0.0.1",
      dbPath: "./data/flowd.db",
      securityKey: null,
      demoPaceMs: DEFAULTS.demoPaceMs,
      sync: "NORMAL",
    });
  });

  it("takes FLOWD_SYNC=FULL (any case) and rejects other modes, naming both", () => {
    expect(resolveConfig({}, { FLOWD_SYNC: "full" }).sync).toBe("FULL");
    expect(() => resolveConfig({}, { FLOWD_SYNC: "OFF" })).toThrow(/FLOWD_SYNC must be FULL .* or NORMAL/);
  });

  it("takes environment variables over defaults, and flags over both", () => {
    const env = { PORT: "8080", HOST: "0.0.0.0", FLOWD_DB: "/tmp/env.db", FLOWD_SECURITY_KEY: "k" };
    expect(resolveConfig({}, env)).toMatchObject({ port: 8080, host: "0.0.0.0", dbPath: "/tmp/env.db", securityKey: "k" });
    expect(resolveConfig({ port: "9090", host: "::1", db: "/tmp/flag.db" }, env)).toMatchObject({
      port: 9090,
      host: "::1",
      dbPath: "/tmp/flag.db",
    });
  });

  it("treats an empty security key as no key", () => {
    expect(resolveConfig({}, { FLOWD_SECURITY_KEY: "" }).securityKey).toBeNull();
  });

  it.each(["abc", "-1", "65536", "80.5", " "])("rejects PORT=%j with a message that says what is allowed", (port) => {
    expect(() => resolveConfig({}, { PORT: port })).toThrow(/PORT must be a whole number from 0 to 65535/);
  });

  it("takes a PostgreSQL URL as --db or FLOWD_DB, and a lease from FLOWD_LEASE_MS (5 s by default)", () => {
    expect(resolveConfig({}, { FLOWD_DB: "postgres://u:p@db:5432/flowd" })).toMatchObject({ dbPath: "postgres://u:p@db:5432/flowd", leaseMs: 5000 });
    expect(resolveConfig({ db: "postgresql://db/flowd" }, { FLOWD_LEASE_MS: "1500" })).toMatchObject({ dbPath: "postgresql://db/flowd", leaseMs: 1500 });
    expect(() => resolveConfig({}, { FLOWD_LEASE_MS: "50" })).toThrow(/FLOWD_LEASE_MS must be a whole number from 100/);
  });

  it("rejects an unknown log level, listing the valid ones", () => {
    expect(() => resolveConfig({}, { FLOWD_LOG_LEVEL: "loud" })).toThrow(/one of fatal, error, warn, info/);
  });

  it("takes the limits and the allowed hosts and origins, and says what is wrong with a bad one", () => {
    const config = resolveConfig({}, {
      FLOWD_MAX_INPUT_DEPTH: "8",
      FLOWD_MAX_CONNECTIONS: "50",
      FLOWD_ALLOWED_HOSTS: " Flowd.Internal , ",
      FLOWD_ALLOWED_ORIGINS: "https://app.example.com/,http://localhost:3000",
    });
    expect(config).toMatchObject({
      maxInputDepth: 8,
      maxConnections: 50,
      allowedHosts: ["flowd.internal"],
      allowedOrigins: ["https://app.example.com", "http://localhost:3000"],
    });
    expect(resolveConfig({}, {})).toMatchObject({ maxInputDepth: 64, maxInputBytes: 1024 * 1024, allowedHosts: [], allowedOrigins: [] });
    expect(() => resolveConfig({}, { FLOWD_ALLOWED_ORIGINS: "app.example.com" })).toThrow(/origins like https:\/\/app.example.com/);
    expect(() => resolveConfig({}, { FLOWD_ALLOWED_ORIGINS: "https://app.example.com/path" })).toThrow(/with no path/);
    expect(() => resolveConfig({}, { FLOWD_MAX_UNSENT_BYTES: "lots" })).toThrow(/FLOWD_MAX_UNSENT_BYTES must be a whole number/);
  });

  it("takes FLOWD_IDEMPOTENCY_TTL as a duration (24h by default) and says what a duration looks like", () => {
    expect(resolveConfig({}, {}).idempotencyTtlMs).toBe(24 * 3_600_000);
    expect(resolveConfig({}, { FLOWD_IDEMPOTENCY_TTL: "90s" }).idempotencyTtlMs).toBe(90_000);
    expect(resolveConfig({}, { FLOWD_IDEMPOTENCY_TTL: " 7d " }).idempotencyTtlMs).toBe(7 * 86_400_000);
    expect(resolveConfig({ idempotencyTtl: "250ms" }, { FLOWD_IDEMPOTENCY_TTL: "1h" }).idempotencyTtlMs).toBe(250);
    for (const bad of ["24", "1.5h", "0s", "-1h", "1 week"]) {
      expect(() => resolveConfig({}, { FLOWD_IDEMPOTENCY_TTL: bad }), bad).toThrow(/FLOWD_IDEMPOTENCY_TTL must be a duration such as 90s, 30m, 24h or 7d/);
    }
  });
});
