import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { startServer, waitFor, type TestServer } from "../helpers/server.ts";
import { TestClient } from "../helpers/ws-client.ts";

/** An HTTP request with any headers (fetch will not send a Host or Origin of the caller's choosing). */
function send(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: options.method ?? "GET", headers: options.headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end(options.body);
  });
}

/** Opens a WebSocket with the given headers; resolves with the HTTP status it was refused with, or "open". */
function upgrade(url: string, headers: Record<string, string>): Promise<number | "open"> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers });
    socket.once("open", () => {
      socket.close();
      resolve("open");
    });
    socket.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
    socket.once("error", reject);
  });
}

async function health(url: string): Promise<{ active_runs: number }> {
  return (await (await fetch(`${url}/health`)).json()) as { active_runs: number };
}

function runCount(t: TestServer): number {
  return (t.openReader().prepare("SELECT count(*) AS n FROM runs").get() as { n: number }).n;
}

let t: TestServer;
afterEach(async () => {
  await t.close();
});

describe("pages of other sites and DNS rebinding (Origin and Host)", () => {
  it("refuses a cross-site form post, a foreign Host and a WebSocket from a foreign origin; nothing runs", async () => {
    t = await startServer();
    const form = await send(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { origin: "http://evil.example", "content-type": "application/x-www-form-urlencoded" },
      body: "message=hi&background=true",
    });
    expect(form.status).toBe(403);
    expect(JSON.parse(form.body)).toMatchObject({ code: "ORIGIN_NOT_ALLOWED" });
    expect(JSON.parse(form.body).detail).toContain("FLOWD_ALLOWED_ORIGINS");

    // A browser that sends no Origin still says the request comes from another site.
    const noOrigin = await send(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "sec-fetch-site": "cross-site", "content-type": "application/x-www-form-urlencoded" },
      body: "message=hi&background=true",
    });
    expect(noOrigin.status).toBe(403);

    const rebound = await send(`${t.url}/workflows`, { headers: { host: `attacker.example:${t.server.port}` } });
    expect(rebound.status).toBe(421);
    expect(JSON.parse(rebound.body)).toMatchObject({ code: "HOST_NOT_ALLOWED" });
    expect(JSON.parse(rebound.body).detail).toContain("FLOWD_ALLOWED_HOSTS");

    expect(await upgrade(t.wsUrl, { origin: "http://evil.example" })).toBe(403);
    expect(await upgrade(t.wsUrl, { host: `attacker.example:${t.server.port}` })).toBe(421);
    expect(runCount(t)).toBe(0);
  });

  it("answers its own pages, IP addresses and localhost, and clients that send no Origin", async () => {
    t = await startServer();
    const port = t.server.port;
    const own = await send(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { origin: `http://127.0.0.1:${port}`, "content-type": "application/json" },
      body: JSON.stringify({ background: true, additional_data: { count: 1 } }),
    });
    expect(own.status).toBe(202);
    expect((await send(`${t.url}/workflows`, { headers: { host: `localhost:${port}` } })).status).toBe(200);
    expect((await send(`${t.url}/workflows`, { headers: { host: `[::1]:${port}` } })).status).toBe(200);
    expect(await upgrade(t.wsUrl, {})).toBe("open");
    expect(await upgrade(t.wsUrl, { origin: `http://localhost:${port}`, host: `localhost:${port}` })).toBe("open");
  });

  it("lets the configured origins call it (CORS, SSE, WebSocket) and the configured host names address it", async () => {
    t = await startServer({ settings: { allowedOrigins: "https://app.example.com", allowedHosts: "flowd.internal" } });
    const origin = "https://app.example.com";
    const preflight = await send(`${t.url}/workflows/ticker/runs`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers["access-control-allow-origin"]).toBe(origin);
    expect(preflight.headers["access-control-allow-methods"]).toContain("POST");

    const started = await send(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { origin, "content-type": "application/json" },
      body: JSON.stringify({ background: true, additional_data: { count: 2 } }),
    });
    expect(started.status).toBe(202);
    expect(started.headers["access-control-allow-origin"]).toBe(origin);
    const runId = (JSON.parse(started.body) as { run_id: string }).run_id;

    // The SSE stream is written on the raw response; it carries the CORS headers too.
    const stream = await send(`${t.url}/runs/${runId}/events`, { headers: { origin } });
    expect(stream.status).toBe(200);
    expect(stream.headers["access-control-allow-origin"]).toBe(origin);
    expect(stream.body).toContain("event: WorkflowCompleted");

    expect(await upgrade(t.wsUrl, { origin })).toBe("open");
    expect((await send(`${t.url}/workflows`, { headers: { host: `flowd.internal:${t.server.port}` } })).status).toBe(200);
    // Other origins stay refused.
    expect((await send(`${t.url}/workflows`, { headers: { origin: "https://other.example.com" } })).status).toBe(403);
  });
});

describe("slow requests, connection floods and key guessing", () => {
  it("answers 408 REQUEST_TIMEOUT to a request whose body is slow or never comes, and closes it", async () => {
    t = await startServer({ settings: { requestTimeoutMs: 300 } });
    const socket = connect(t.server.port, "127.0.0.1");
    let answer = "";
    socket.on("data", (chunk: Buffer) => (answer += chunk.toString()));
    const closed = new Promise((resolve) => socket.on("close", resolve));
    socket.write(
      "POST /workflows/ticker/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mess",
    );
    await closed;
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(answer).toContain('"code":"REQUEST_TIMEOUT"');
    expect(runCount(t)).toBe(0);
  });

  it("refuses connections past FLOWD_MAX_CONNECTIONS, and takes new ones once others close", async () => {
    t = await startServer({ settings: { maxConnections: 4 } });
    const open: Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const socket = connect(t.server.port, "127.0.0.1");
      await new Promise((resolve) => socket.once("connect", resolve));
      open.push(socket);
    }
    await sleep(50);
    const refused = connect(t.server.port, "127.0.0.1");
    refused.on("error", () => {});
    refused.write("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let answered = "";
    refused.on("data", (chunk: Buffer) => (answered += chunk.toString()));
    await new Promise((resolve) => refused.once("close", resolve));
    expect(answered).toBe("");

    for (const socket of open) socket.destroy();
    await waitFor("a new connection to be served", async () => {
      try {
        return (await fetch(`${t.url}/health`, { signal: AbortSignal.timeout(1_000) })).status === 200 ? true : undefined;
      } catch {
        return undefined;
      }
    });
  });

  it("closes a WebSocket after 3 wrong keys, then throttles the address for the rest of the minute, right key or not", async () => {
    t = await startServer({ securityKey: "right-key", settings: { authFailuresPerMinute: 5 } });
    const { client } = await TestClient.connect(t.wsUrl);
    for (let i = 0; i < 3; i++) {
      expect(await client.request({ action: "authenticate", token: `guess-${i}` })).toMatchObject({ event: "auth_error", code: "AUTH_FAILED" });
    }
    expect((await client.closed).code).toBe(1008);

    const { client: again } = await TestClient.connect(t.wsUrl);
    expect(await again.request({ action: "authenticate", token: "guess-3" })).toMatchObject({ code: "AUTH_FAILED" });
    const wrong = await fetch(`${t.url}/workflows`, { headers: { authorization: "Bearer guess-4" } });
    expect(wrong.status).toBe(401);
    // Five failures from this address this minute: even the right key is refused now.
    const throttled = await fetch(`${t.url}/workflows`, { headers: { authorization: "Bearer right-key" } });
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get("retry-after")).toBe("60");
    expect(await throttled.json()).toMatchObject({ code: "AUTH_THROTTLED" });
    expect(await again.request({ action: "authenticate", token: "right-key" })).toMatchObject({ code: "AUTH_THROTTLED" });
    await again.close();
  });

  it("a wrong key after a right one takes the socket's authentication back", async () => {
    t = await startServer({ securityKey: "right-key" });
    const { client } = await TestClient.connect(t.wsUrl);
    expect(await client.request({ action: "authenticate", token: "right-key" })).toMatchObject({ event: "authenticated" });
    expect(await client.request({ action: "authenticate", token: "wrong" })).toMatchObject({ event: "auth_error" });
    expect(await client.request({ action: "start-workflow", workflow_id: "ticker" })).toMatchObject({ event: "auth_required" });
    await client.close();
  });
});

describe("sockets that never authenticate, and runs past the server's limit", () => {
  it("closes a WebSocket that does not authenticate within FLOWD_AUTH_TIMEOUT_MS, and keeps one that does", async () => {
    t = await startServer({ securityKey: "right-key", settings: { authTimeoutMs: 300 } });
    const { client: idle } = await TestClient.connect(t.wsUrl);
    const { client: good } = await TestClient.connect(t.wsUrl);
    expect(await good.request({ action: "authenticate", token: "right-key" })).toMatchObject({ event: "authenticated" });
    const closed = await idle.closed;
    expect(closed.code).toBe(1008);
    expect(closed.reason).toContain("not authenticated");
    await sleep(400);
    expect(await good.request({ action: "ping" })).toMatchObject({ event: "pong" });
    // The bearer scheme is case-insensitive over HTTP.
    expect((await fetch(`${t.url}/workflows`, { headers: { authorization: "bearer right-key" } })).status).toBe(200);
    await good.close();
  });

  it("refuses starts past FLOWD_MAX_ACTIVE_RUNS with TOO_MANY_RUNS, and takes them again once runs end", async () => {
    t = await startServer({ settings: { maxActiveRuns: 2 } });
    const { client } = await TestClient.connect(t.wsUrl);
    const slow = { action: "start-workflow", workflow_id: "ticker", additional_data: { count: 1000, delayMs: 10 } };
    client.send(slow);
    const first = (await client.next()).run_id as string;
    client.send(slow);
    await waitFor("two runs to be active", async () => ((await health(t.url)).active_runs === 2 ? true : undefined));
    const { client: other } = await TestClient.connect(t.wsUrl);
    expect(await other.request({ action: "start-workflow", workflow_id: "ticker" })).toMatchObject({ event: "error", code: "TOO_MANY_RUNS" });
    const refused = await fetch(`${t.url}/workflows/ticker/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ background: true }),
    });
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(await refused.json()).toMatchObject({ code: "TOO_MANY_RUNS" });

    await fetch(`${t.url}/runs/${first}`).then((r) => r.json());
    client.send({ action: "cancel-workflow", run_id: first });
    await waitFor("a run to end", async () => ((await health(t.url)).active_runs === 1 ? true : undefined));
    other.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 2 } });
    expect((await other.untilTerminal()).at(-1)?.event).toBe("WorkflowCompleted");
    await Promise.all([client.close(), other.close()]);
  });

  it("answers a JSON body of null with 422, not a run", async () => {
    t = await startServer();
    const response = await fetch(`${t.url}/workflows/ticker/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: "null" });
    expect(response.status).toBe(422);
    expect(await response.json()).toMatchObject({ code: "INVALID_REQUEST" });
    expect(runCount(t)).toBe(0);
  });
});

describe("errors in the API's own shape", () => {
  it("/health needs no key, with or without a query string", async () => {
    t = await startServer({ securityKey: "right-key" });
    expect((await fetch(`${t.url}/health?x=1`)).status).toBe(200);
    expect((await fetch(`${t.url}/workflows?x=1`)).status).toBe(401);
  });

  it("answers an over-long path part (414) and a bad %-escape (400) as {detail, code}", async () => {
    t = await startServer();
    const long = await fetch(`${t.url}/runs/${"x".repeat(600)}`);
    expect(long.status).toBe(414);
    expect(await long.json()).toMatchObject({ code: "URI_TOO_LONG", detail: expect.stringContaining("256") });
    const escaped = await send(`${t.url}/runs/%E0%A4%A`);
    expect(escaped.status).toBe(400);
    expect(JSON.parse(escaped.body)).toMatchObject({ code: "INVALID_URL", detail: expect.stringContaining("%") });
    // A request that is not HTTP at all.
    const garbage = connect(t.server.port, "127.0.0.1");
    let answer = "";
    garbage.on("data", (chunk: Buffer) => (answer += chunk.toString()));
    garbage.write("HELLO THERE\r\n\r\n");
    await new Promise((resolve) => garbage.on("close", resolve));
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect(answer).toContain('"code":"INVALID_HTTP"');
    // An id of the allowed length is simply not found.
    const unknown = await fetch(`${t.url}/runs/${"x".repeat(256)}`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ code: "RUN_NOT_FOUND" });
  });
});
