import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer, waitFor, type TestServer } from "../helpers/server.ts";
import { TestClient } from "../helpers/ws-client.ts";

/** GET /metrics (DESIGN §13): Prometheus text, with counts that match what happened. */

async function scrape(t: TestServer, bearer?: string): Promise<Map<string, { type: string; samples: { value?: string; labels?: Record<string, string>; count?: string; buckets?: Record<string, string> }[] }>> {
  const response = await fetch(`${t.url}/metrics`, bearer ? { headers: { authorization: `Bearer ${bearer}` } } : {});
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toContain("text/plain");
  const families = parsePrometheusTextFormat(await response.text());
  return new Map(families.map((family) => [family.name, { type: family.type, samples: family.metrics }]));
}

function value(families: Awaited<ReturnType<typeof scrape>>, name: string, labels: Record<string, string> = {}): number {
  const family = families.get(name);
  if (!family) throw new Error(`no metric ${name}`);
  const sample = family.samples.find((s) => Object.entries(labels).every(([key, wanted]) => s.labels?.[key] === wanted));
  return Number(sample?.value ?? Number.NaN);
}

describe("GET /metrics", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startServer();
  });
  afterAll(async () => {
    await t.close();
  });

  it("parses as Prometheus text, and its counters match what the server did", async () => {
    const start = async (workflow: string, body: Record<string, unknown>) =>
      ((await (await fetch(`${t.url}/workflows/${workflow}/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })).json()) as { run_id: string }).run_id;
    await start("ticker", { stream: false, additional_data: { count: 50 } });
    await start("ticker", { stream: false, additional_data: { count: 7 } });
    await start("failing-flow", { stream: false });
    const waiting = await start("signalled", { background: true });
    // A subscriber that stays live: a slow run followed over the WebSocket.
    const slow = await start("ticker", { background: true, additional_data: { count: 100_000, delayMs: 50 } });
    const { client } = await TestClient.connect(t.wsUrl);
    client.send({ action: "reconnect", run_id: slow, last_event_index: null });
    await waitFor("the waiting run to wait", async () => ((await t.query<{ status: string }>("SELECT status FROM runs WHERE run_id = ?", waiting))[0]?.status === "waiting" ? true : undefined));
    await waitFor("the socket to be fed live", async () => (value(await scrape(t), "flowd_subscribers", { state: "live" }) === 1 ? true : undefined));

    // A run's end reaches its watchers as its commit does; the commit's count may come a moment later (PostgreSQL's NOTIFY).
    const metrics = await waitFor("the finished runs to be counted", async () => {
      const scraped = await scrape(t);
      return value(scraped, "flowd_runs_finished_total", { workflow: "failing-flow", status: "error" }) === 1 ? scraped : undefined;
    });
    const stored = (await t.query<{ stored: number }>("SELECT count(*) AS stored FROM events"))[0]!.stored;
    // Events appended = events stored (the slow run may commit between the two reads: one more scrape settles it).
    const appended = value(metrics, "flowd_events_appended_total");
    expect(Math.abs(appended - Number(stored))).toBeLessThanOrEqual(2);
    expect(metrics.get("flowd_events_appended_total")?.type).toBe("COUNTER");
    expect(value(metrics, "flowd_runs_started_total", { workflow: "ticker" })).toBe(3);
    expect(value(metrics, "flowd_runs_started_total", { workflow: "signalled" })).toBe(1);
    expect(value(metrics, "flowd_runs_finished_total", { workflow: "ticker", status: "completed" })).toBe(2);
    expect(value(metrics, "flowd_runs_finished_total", { workflow: "failing-flow", status: "error" })).toBe(1);
    expect(value(metrics, "flowd_suspended_runs", { status: "waiting" })).toBe(1);
    expect(value(metrics, "flowd_suspended_runs", { status: "paused" })).toBe(0);
    expect(value(metrics, "flowd_subscribers", { state: "reading_log" })).toBe(0);
    expect(value(metrics, "flowd_storage_bytes", { part: "database" })).toBeGreaterThan(0);
    const batches = metrics.get("flowd_commit_batch_events")!;
    expect(batches.type).toBe("HISTOGRAM");
    expect(Number(batches.samples[0]!.count)).toBeGreaterThan(0);
    expect(Number(metrics.get("flowd_commit_seconds")!.samples[0]!.count)).toBe(Number(batches.samples[0]!.count));
    expect(value(metrics, "process_cpu_user_seconds_total")).toBeGreaterThan(0);
    // Nothing failed, nothing was resumed.
    expect(value(metrics, "flowd_storage_failures_total")).toBe(0);
    expect(value(metrics, "flowd_run_resumes_total")).toBe(0);

    await client.request({ action: "cancel-workflow", run_id: slow });
    await client.close();
    await waitFor("the socket's feed to be gone", async () => (value(await scrape(t), "flowd_subscribers", { state: "live" }) === 0 ? true : undefined));
    const after = await waitFor("the cancel to be counted", async () => {
      const scraped = await scrape(t);
      return value(scraped, "flowd_runs_finished_total", { workflow: "ticker", status: "cancelled" }) === 1 ? scraped : undefined;
    });
    const total = (await t.query<{ total: number }>("SELECT count(*) AS total FROM events"))[0]!.total;
    expect(value(after, "flowd_events_appended_total")).toBe(Number(total));
  });
});

describe("GET /metrics with authentication on", () => {
  const secret = "metrics-test-secret-0123456789-0123456789";
  const jwt = (scopes: string[]) => new SignJWT({ scopes }).setProtectedHeader({ alg: "HS256" }).setSubject("scraper").setExpirationTime("1h").sign(new TextEncoder().encode(secret));

  it("needs an admin or metrics:read; FLOWD_METRICS_OPEN_ON_LOOPBACK opens it to this machine", async () => {
    const closed = await startServer({ settings: { jwtSecret: secret } });
    try {
      expect((await fetch(`${closed.url}/metrics`)).status).toBe(401);
      const user = await fetch(`${closed.url}/metrics`, { headers: { authorization: `Bearer ${await jwt(["workflows:run"])}` } });
      expect(user.status).toBe(403);
      expect(((await user.json()) as { detail: string }).detail).toContain("metrics:read");
      await scrape(closed, await jwt(["metrics:read"]));
      await scrape(closed, await jwt(["flowd:admin"]));
    } finally {
      await closed.close();
    }
    const open = await startServer({ settings: { jwtSecret: secret, metricsOpenOnLoopback: true } });
    try {
      await scrape(open);
      // Only the metrics: the rest still needs a token.
      expect((await fetch(`${open.url}/runs`)).status).toBe(401);
    } finally {
      await open.close();
    }
  });
});
