import { generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "../../src/client/index.ts";
import { REPO_ROOT, runFlowd, startServerProcess } from "../../testkit/server-process.ts";
import { freshDatabaseEachTest, startServer, type TestServer } from "../helpers/server.ts";
import { TestClient, type Frame } from "../helpers/ws-client.ts";

/** Users, scopes and isolation (DESIGN §12), with tokens signed here as an identity provider would. */

const SECRET = "a-test-secret-of-at-least-thirty-two-bytes-0123456789";
const AUDIENCE = "flowd-tests";

async function token(claims: { sub?: string; scopes?: string[] | string; aud?: string; exp?: number | string; nbf?: number }, secret = SECRET): Promise<string> {
  const { sub, aud, exp, nbf, ...rest } = claims;
  let jwt = new SignJWT(rest).setProtectedHeader({ alg: "HS256" }).setIssuedAt().setAudience(aud ?? AUDIENCE);
  if (sub !== undefined) jwt = jwt.setSubject(sub);
  jwt = jwt.setExpirationTime(exp ?? "1h");
  if (nbf !== undefined) jwt = jwt.setNotBefore(nbf);
  return jwt.sign(new TextEncoder().encode(secret));
}

async function call(t: TestServer, method: string, path: string, bearer: string | null, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> | null; text: string }> {
  const response = await fetch(`${t.url}${path}`, {
    method,
    headers: { ...(bearer ? { authorization: `Bearer ${bearer}` } : {}), ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let parsed: Record<string, unknown> | null = null;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = null;
  }
  return { status: response.status, body: parsed, text };
}

async function collect<T>(events: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const event of events) all.push(event);
  return all;
}

/** An answer with the run id in it made generic, to compare "another user's run" with "no such run". */
function shape(answer: unknown, runId: string): string {
  return JSON.stringify(answer).replaceAll(runId, "<run>");
}

async function authenticated(t: TestServer, bearer: string): Promise<TestClient> {
  const { client } = await TestClient.connect(t.wsUrl);
  expect(await client.request({ action: "authenticate", token: bearer })).toMatchObject({ event: "authenticated" });
  return client;
}

describe("users: isolation and scopes", () => {
  let t: TestServer;
  let alice: string;
  let bob: string;
  let admin: string;
  beforeAll(async () => {
    t = await startServer({ settings: { jwtSecret: SECRET, jwtAudience: AUDIENCE, userIsolation: true, authFailuresPerMinute: 10_000 } });
    alice = await token({ sub: "alice", scopes: ["workflows:run"] });
    bob = await token({ sub: "bob", scopes: "workflows:run runs:read" });
    admin = await token({ sub: "root", scopes: ["flowd:admin"] });
  });
  afterAll(async () => {
    await t.close();
  });

  it("another user's run answers exactly as one that does not exist, on every route and action; lists leave it out; an admin sees and acts on both", async () => {
    // Alice's run waits for a signal; the body's user_id is not hers to choose.
    const started = await call(t, "POST", "/workflows/signalled/runs", alice, { background: true, user_id: "bob" });
    expect(started.status).toBe(202);
    const runId = started.body!.run_id as string;
    expect(started.body!.user_id).toBe("alice");
    const bobs = (await call(t, "POST", "/workflows/ticker/runs", bob, { background: true, additional_data: { count: 3 } })).body!.run_id as string;
    const unknown = "00000000-no-such-run";

    const routes: [string, (id: string) => string, unknown?, Record<string, string>?][] = [
      ["GET", (id) => `/runs/${id}`],
      ["GET", (id) => `/workflows/signalled/runs/${id}`],
      ["GET", (id) => `/runs/${id}/events`, undefined, { accept: "application/json" }],
      ["GET", (id) => `/runs/${id}/events`, undefined, { accept: "text/event-stream" }],
      ["POST", (id) => `/workflows/signalled/runs/${id}/resume`, {}],
      ["POST", (id) => `/workflows/signalled/runs/${id}/cancel`, {}],
      ["POST", (id) => `/workflows/signalled/runs/${id}/continue`, { step_requirements: [] }],
      ["POST", (id) => `/runs/${id}/signals/go`, { value: 1 }],
      ["DELETE", (id) => `/runs/${id}`],
      ["POST", (id) => `/runs/${id}/read-token`, {}],
      ["GET", (id) => `/streams/runs/${id}?offset=-1`],
      ["HEAD", (id) => `/streams/runs/${id}`],
    ];
    for (const [method, path, body, headers] of routes) {
      const hidden = await call(t, method, path(runId), bob, body, headers);
      const missing = await call(t, method, path(unknown), bob, body, headers);
      expect(hidden.status, `${method} ${path("…")}`).toBe(404);
      // HEAD answers with headers only.
      if (method !== "HEAD") expect(hidden.body?.code).toBe("RUN_NOT_FOUND");
      expect(shape(hidden.body, runId), `${method} ${path("…")}`).toBe(shape(missing.body, unknown));
    }
    // The WebSocket: the same frames as for an unknown run.
    const socket = await authenticated(t, bob);
    const actions = (id: string) => [
      { action: "reconnect", run_id: id, last_event_index: null },
      { action: "cancel-workflow", run_id: id },
      { action: "continue-workflow", run_id: id, workflow_id: "signalled", step_requirements: [] },
      { action: "signal-workflow", run_id: id, name: "go", payload: 1 },
    ];
    for (const [i, action] of actions(runId).entries()) {
      const hidden = await socket.request(action);
      const missing = await socket.request(actions(unknown)[i]);
      expect(hidden, action.action).toMatchObject({ event: "error", code: "RUN_NOT_FOUND" });
      expect(shape(hidden, runId)).toBe(shape(missing, unknown));
    }
    await socket.close();

    // Lists: Bob's have only his runs (runs:read does not reach past isolation); Alice's only hers.
    const ids = async (bearer: string, path: string) => ((await call(t, "GET", path, bearer)).body as unknown as { run_id: string }[]).map((run) => run.run_id);
    expect(await ids(bob, "/runs")).toEqual([bobs]);
    expect(await ids(bob, "/workflows/signalled/runs")).toEqual([]);
    expect(await ids(alice, "/runs")).toEqual([runId]);
    expect((await ids(admin, "/runs")).sort()).toEqual([runId, bobs].sort());

    // Alice reads her own; the admin reads and acts on both.
    expect((await call(t, "GET", `/runs/${runId}`, alice)).status).toBe(200);
    expect((await call(t, "GET", `/runs/${bobs}`, admin)).body).toMatchObject({ run_id: bobs, user_id: "bob" });
    expect((await call(t, "POST", `/runs/${runId}/signals/approved`, admin, { by: "root" })).status).toBe(202);
    const watcher = await authenticated(t, admin);
    watcher.send({ action: "reconnect", run_id: runId, last_event_index: null });
    const frames: Frame[] = await watcher.untilTerminal();
    await watcher.close();
    expect(frames.at(-1)).toMatchObject({ event: "WorkflowCompleted", run_id: runId });
  });

  it("flowd/client with a user's token: watches its own runs, is told another's does not exist, gets read tokens", async () => {
    const client = createClient({ url: t.url, token: alice });
    const run = await client.start("ticker", "", { additionalData: { count: 20 } });
    expect(run.user_id).toBe("alice");
    const seen: number[] = [];
    for await (const event of client.watch(run.run_id)) seen.push(event.event_index);
    expect(seen).toEqual(Array.from({ length: 24 }, (_, i) => i));
    const other = createClient({ url: t.url, token: bob });
    await expect(other.runs.get(run.run_id)).rejects.toMatchObject({ code: "RUN_NOT_FOUND" });
    await expect(collect(other.watch(run.run_id))).rejects.toMatchObject({ code: "RUN_NOT_FOUND" });
    const { eventsUrl } = await client.runs.readToken(run.run_id, { expiresIn: "1m" });
    expect((await fetch(`${t.url}${eventsUrl}`)).status).toBe(200);
  });

  it("an idempotency key is each user's own: the same key from another user starts another run, theirs", async () => {
    const start = (bearer: string) => call(t, "POST", "/workflows/ticker/runs", bearer, { background: true, additional_data: { count: 1 } }, { "idempotency-key": "order-42" });
    const first = await start(alice);
    expect((await start(alice)).body!.run_id).toBe(first.body!.run_id);
    const others = await start(bob);
    expect(others.status).toBe(202);
    expect(others.body!.run_id).not.toBe(first.body!.run_id);
    expect(others.body!.user_id).toBe("bob");
  });

  it("a scope for one workflow starts that one and no other; a read-only token starts nothing", async () => {
    const onlyTicker = await token({ sub: "carol", scopes: ["workflows:ticker:run"] });
    expect((await call(t, "POST", "/workflows/ticker/runs", onlyTicker, { background: true, additional_data: { count: 1 } })).status).toBe(202);
    const refused = await call(t, "POST", "/workflows/verbatim/runs", onlyTicker, { background: true });
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ code: "FORBIDDEN" });
    expect(refused.body!.detail).toContain("workflows:verbatim:run");
    // Over the WebSocket too.
    const socket = await authenticated(t, onlyTicker);
    expect(await socket.request({ action: "start-workflow", workflow_id: "verbatim", message: "x" })).toMatchObject({ event: "error", code: "FORBIDDEN" });
    await socket.close();
    const reader = await token({ sub: "dave", scopes: ["runs:read"] });
    expect((await call(t, "POST", "/workflows/ticker/runs", reader, { background: true })).body).toMatchObject({ code: "FORBIDDEN" });
    // Wildcards.
    const every = await token({ sub: "erin", scopes: ["workflows:*:run"] });
    expect((await call(t, "POST", "/workflows/verbatim/runs", every, { background: true, additional_data: { chunks: ["x"] } })).status).toBe(202);
    // Pruning is an admin's.
    expect((await call(t, "POST", "/runs/prune", every, { older_than: "1d", dry_run: true })).body).toMatchObject({ code: "FORBIDDEN" });
    expect((await call(t, "POST", "/runs/prune", admin, { older_than: "1d", dry_run: true })).status).toBe(200);
  });
});

describe("tokens that are refused", () => {
  let hs: TestServer;
  let rs: TestServer;
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const publicPem = publicKey.export({ type: "spki", format: "pem" }).toString();
  beforeAll(async () => {
    hs = await startServer({ securityKey: "the-shared-key", settings: { jwtSecret: SECRET, jwtAudience: AUDIENCE, authFailuresPerMinute: 10_000 } });
    rs = await startServer({ settings: { jwtPublicKey: publicPem, authFailuresPerMinute: 10_000 } });
  });
  afterAll(async () => {
    await hs.close();
    await rs.close();
  });

  const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

  it("answers each with a clear 401 that gives nothing of the key away, over HTTP and the WebSocket, and the socket stays open for a right token", async () => {
    const now = Math.floor(Date.now() / 1000);
    const refused: [string, string | null, Record<string, string>, RegExp][] = [
      ["a bad signature", await token({ sub: "u", scopes: ["workflows:run"] }, `${SECRET}-but-another`), {}, /signature/],
      ["alg none", `${base64url({ alg: "none", typ: "JWT" })}.${base64url({ sub: "u", aud: AUDIENCE, scopes: ["flowd:admin"], exp: now + 600 })}.`, {}, /algorithm|well-formed/],
      ["an expired token", await token({ sub: "u", exp: now - 60 }), {}, /expired/],
      ["a token not valid yet", await token({ sub: "u", nbf: now + 600 }), {}, /not valid yet/],
      ["a wrong audience", await token({ sub: "u", aud: "someone-else" }), {}, /audience/],
      ["no sub", await token({ scopes: ["flowd:admin"] }), {}, /sub/],
      ["a malformed token", "abc.def.ghi", {}, /well-formed/],
      ["not a token at all", "hello", {}, /neither/],
      ["the wrong header form (Token)", null, { authorization: "Token the-shared-key" }, /Bearer/],
      ["the wrong header form (Basic)", null, { authorization: `Basic ${Buffer.from("u:p").toString("base64")}` }, /Bearer/],
      ["a Bearer header without a token", null, { authorization: "Bearer" }, /Bearer/],
    ];
    for (const [what, bearer, headers, reason] of refused) {
      const answer = await call(hs, "GET", "/workflows", bearer, undefined, headers);
      expect(answer.status, what).toBe(401);
      expect(["AUTH_FAILED", "AUTH_REQUIRED"], what).toContain(answer.body?.code);
      expect(answer.body?.detail, what).toMatch(reason);
      expect(answer.text, what).not.toContain(SECRET);
      expect(answer.text, what).not.toContain("the-shared-key");
    }
    // Algorithm confusion: an HS256 token whose secret is the server's RS256 public key.
    const confused = await new SignJWT({ scopes: ["flowd:admin"] })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("mallory")
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(publicPem));
    const answer = await call(rs, "GET", "/runs", confused);
    expect(answer.status).toBe(401);
    expect(answer.body?.detail).toMatch(/algorithm/);
    const genuine = await new SignJWT({ scopes: ["flowd:admin"] }).setProtectedHeader({ alg: "RS256" }).setSubject("root").setExpirationTime("1h").sign(privateKey);
    expect((await call(rs, "GET", "/runs", genuine)).status).toBe(200);
    // The shared key works beside JWTs.
    expect((await call(hs, "GET", "/runs", "the-shared-key")).status).toBe(200);

    // The WebSocket: each refused token is an auth_error saying why; then a right one is accepted on the same socket.
    for (const [what, bearer, , reason] of refused.filter(([, bearer]) => bearer !== null)) {
      const { client } = await TestClient.connect(hs.wsUrl);
      const frame = await client.request({ action: "authenticate", token: bearer });
      expect(frame, what).toMatchObject({ event: "auth_error", code: "AUTH_FAILED" });
      expect(String(frame.error), what).toMatch(reason);
      expect(JSON.stringify(frame)).not.toContain(SECRET);
      expect(await client.request({ action: "start-workflow", workflow_id: "ticker", message: "x" }), what).toMatchObject({ code: "AUTH_REQUIRED" });
      const right = await client.request({ action: "authenticate", token: await token({ sub: "alice", scopes: ["workflows:run"] }) });
      expect(right, what).toMatchObject({ event: "authenticated", user_id: "alice" });
      await client.close();
    }
  });
});

describe("read tokens", () => {
  let t: TestServer;
  let alice: string;
  beforeAll(async () => {
    t = await startServer({ settings: { jwtSecret: SECRET, jwtAudience: AUDIENCE, userIsolation: true, authFailuresPerMinute: 10_000 } });
    alice = await token({ sub: "alice", scopes: ["workflows:run"] });
  });
  afterAll(async () => {
    await t.close();
  });

  it("read their run's events over SSE and JSON with ?token=, and nothing else; they stop working when they expire", async () => {
    const finished = async () => {
      const runId = (await call(t, "POST", "/workflows/ticker/runs", alice, { stream: false, additional_data: { count: 5 } })).body!.run_id as string;
      return runId;
    };
    const runId = await finished();
    const other = await finished();
    const issued = await call(t, "POST", `/runs/${runId}/read-token`, alice, {});
    expect(issued.status).toBe(200);
    const readToken = issued.body!.token as string;
    expect(issued.body!.events_url).toBe(`/runs/${runId}/events?token=${readToken}`);

    // What a browser's EventSource does: no headers, the token in the URL.
    const sse = await fetch(`${t.url}${issued.body!.events_url as string}`);
    expect(sse.status).toBe(200);
    expect(sse.headers.get("content-type")).toContain("text/event-stream");
    const text = await sse.text();
    expect(text).toContain("event: WorkflowCompleted");
    const page = await call(t, "GET", `/runs/${runId}/events?token=${readToken}&after=-1`, null, undefined, { accept: "application/json" });
    expect(page.status).toBe(200);
    expect((page.body!.events as unknown[]).length).toBe(9);
    // As a bearer token too.
    expect((await call(t, "GET", `/runs/${runId}/events`, readToken, undefined, { accept: "application/json" })).status).toBe(200);
    // And the run's Durable Stream.
    const streamed = await call(t, "GET", `/streams/runs/${runId}?offset=-1&token=${readToken}`, null);
    expect(streamed.status).toBe(200);
    expect((streamed.body as unknown as unknown[]).length).toBe(9);
    expect((await call(t, "GET", `/streams/runs/${other}?offset=-1&token=${readToken}`, null)).status).toBe(403);

    // Another run, the run's row, lists, and anything that writes: refused.
    for (const [method, path, body] of [
      ["GET", `/runs/${other}/events`, undefined],
      ["GET", `/runs/${runId}`, undefined],
      ["GET", "/runs", undefined],
      ["POST", "/workflows/ticker/runs", { background: true }],
      ["POST", `/workflows/ticker/runs/${runId}/cancel`, {}],
      ["POST", `/runs/${runId}/signals/go`, {}],
      ["DELETE", `/runs/${runId}`, undefined],
      ["POST", `/runs/${runId}/read-token`, {}],
    ] as const) {
      const answer = await call(t, method, path, readToken, body, { accept: "application/json" });
      expect(answer.status, `${method} ${path}`).toBe(403);
      expect(answer.body?.detail).toContain(`reads only the events of run ${runId}`);
    }
    // ?token= is taken only where a browser needs it.
    expect((await call(t, "GET", `/runs/${runId}?token=${readToken}`, null)).status).toBe(401);
    // Over the WebSocket it reads its run and nothing else.
    const { client } = await TestClient.connect(t.wsUrl);
    expect(await client.request({ action: "authenticate", token: readToken })).toMatchObject({ event: "authenticated", user_id: "alice" });
    expect(await client.request({ action: "start-workflow", workflow_id: "ticker", message: "x" })).toMatchObject({ code: "FORBIDDEN" });
    expect(await client.request({ action: "cancel-workflow", run_id: runId })).toMatchObject({ code: "FORBIDDEN" });
    await client.close();

    // Expiry: a token of one second.
    const brief = (await call(t, "POST", `/runs/${runId}/read-token`, alice, { expires_in: "1s" })).body!.token as string;
    expect((await call(t, "GET", `/runs/${runId}/events?token=${brief}`, null, undefined, { accept: "application/json" })).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 2100));
    const expired = await call(t, "GET", `/runs/${runId}/events?token=${brief}`, null, undefined, { accept: "application/json" });
    expect(expired.status).toBe(401);
    expect(expired.body?.detail).toMatch(/expired/);
    // Bad lifetimes are refused clearly.
    for (const expiresIn of ["2h", "0s", "soon", -5]) {
      const bad = await call(t, "POST", `/runs/${runId}/read-token`, alice, { expires_in: expiresIn });
      expect(bad.status, String(expiresIn)).toBe(422);
      expect(bad.body?.detail).toMatch(/expires_in/);
    }
  });
});

describe("secrets stay out of logs; the CLI takes a token", () => {
  const scratch = freshDatabaseEachTest();
  const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");
  it("logs no key, secret or token, whatever is tried; flowd runs … --token and FLOWD_TOKEN authenticate", async () => {
    const server = await startServerProcess(["--workflows", FIXTURES, "--db", join(scratch.dir, "flowd.db")], {
      env: { FLOWD_SECURITY_KEY: "the-shared-key", FLOWD_JWT_SECRET: SECRET, FLOWD_JWT_AUDIENCE: AUDIENCE, FLOWD_LOG_LEVEL: "debug", FLOWD_USER_ISOLATION: "true" },
    });
    const user = await token({ sub: "alice", scopes: ["workflows:run"] });
    const tried: string[] = ["the-shared-key", SECRET, user];
    try {
      const runId = ((await (await fetch(`${server.url}/workflows/ticker/runs`, { method: "POST", headers: { authorization: `Bearer ${user}`, "content-type": "application/json" }, body: JSON.stringify({ stream: false, additional_data: { count: 3 } }) })).json()) as { run_id: string }).run_id;
      const readToken = ((await (await fetch(`${server.url}/runs/${runId}/read-token`, { method: "POST", headers: { authorization: `Bearer ${user}` } })).json()) as { token: string }).token;
      tried.push(readToken);
      const wrong = [await token({ sub: "x" }, `${SECRET}!`), "the-shared-kez", `${readToken}x`];
      tried.push(...wrong);
      for (const bad of wrong) {
        await fetch(`${server.url}/runs`, { headers: { authorization: `Bearer ${bad}` } });
        await fetch(`${server.url}/runs/${runId}/events?token=${encodeURIComponent(bad)}`);
        const { client } = await TestClient.connect(server.url.replace("http", "ws") + "/workflows/ws");
        await client.request({ action: "authenticate", token: bad });
        await client.close();
      }
      expect((await fetch(`${server.url}/runs/${runId}/events?token=${readToken}`)).status).toBe(200);

      // The CLI: --token, then FLOWD_TOKEN; without one, a clear refusal and exit 1.
      const bare = runFlowd(["runs", "cancel", runId, "--url", server.url], { env: { FLOWD_SECURITY_KEY: "" } });
      expect(await bare.exited).toBe(1);
      expect(bare.output()).toContain("Authorization: Bearer");
      const waiting = async () =>
        ((await (await fetch(`${server.url}/workflows/signalled/runs`, { method: "POST", headers: { authorization: `Bearer ${user}`, "content-type": "application/json" }, body: JSON.stringify({ background: true }) })).json()) as { run_id: string }).run_id;
      const flagged = runFlowd(["runs", "signal", await waiting(), "approved", "--data", '{"by":"cli"}', "--url", server.url, "--token", user]);
      expect(await flagged.exited, flagged.output()).toBe(0);
      const fromEnv = runFlowd(["runs", "signal", await waiting(), "approved", "--data", '{"by":"env"}', "--url", server.url], { env: { FLOWD_TOKEN: user } });
      expect(await fromEnv.exited, fromEnv.output()).toBe(0);
    } finally {
      await server.stop();
    }
    const log = server.output();
    expect(log).toContain("flowd listening");
    // Refusals are logged (the first from an address in a minute), saying why, without what was sent.
    expect(log).toContain("a token was refused");
    for (const secret of tried) expect(log.includes(secret), `the log holds ${secret.slice(0, 12)}…`).toBe(false);
  });
});

describe("the edges of tokens", () => {
  let open: TestServer;
  let strict: TestServer;
  const ISSUER = "https://id.example.com";
  beforeAll(async () => {
    // Isolation off: runs:read decides who reads another's run.
    open = await startServer({ securityKey: "edge-shared-key", settings: { jwtSecret: SECRET, jwtAudience: AUDIENCE, authFailuresPerMinute: 2 } });
    strict = await startServer({ settings: { jwtSecret: SECRET, jwtAudience: AUDIENCE, jwtIssuer: ISSUER, userIsolation: true, authFailuresPerMinute: 10_000 } });
  });
  afterAll(async () => {
    await open.close();
    await strict.close();
  });

  it("a socket's token that expires stops its actions and its feeds until it authenticates again; an SSE stream ends with it", async () => {
    const brief = await token({ sub: "alice", scopes: ["workflows:run"], exp: Math.floor(Date.now() / 1000) + 2 });
    const socket = await authenticated(open, brief);
    const runId = (await call(open, "POST", "/workflows/ticker/runs", "edge-shared-key", { background: true, additional_data: { count: 100_000, delayMs: 20 } })).body!.run_id as string;
    // The SSE stream of a read token that lives a second.
    const reading = (await call(open, "POST", `/runs/${runId}/read-token`, "edge-shared-key", { expires_in: "1s" })).body!.token as string;
    const sse = await fetch(`${open.url}/runs/${runId}/events?token=${reading}`);
    const opened = Date.now();
    await sse.text();
    expect(Date.now() - opened).toBeLessThan(5000);
    // The socket: told when its token expires.
    for (;;) {
      const frame = await socket.next(5000);
      if (frame.event === "auth_error") {
        expect(frame).toMatchObject({ code: "AUTH_FAILED" });
        expect(String(frame.error)).toMatch(/expired/);
        break;
      }
    }
    expect(await socket.request({ action: "start-workflow", workflow_id: "ticker", message: "x" })).toMatchObject({ code: "AUTH_REQUIRED" });
    await socket.close();
    await call(open, "POST", `/workflows/ticker/runs/${runId}/cancel`, "edge-shared-key", {});
  });

  it("acting on another user's run needs runs:read too (the answer shows the run); a read token says the same of every other run, there or not", async () => {
    const alices = (await call(open, "POST", "/workflows/signalled/runs", await token({ sub: "alice", scopes: ["workflows:run"] }), { background: true })).body!.run_id as string;
    const bob = await token({ sub: "bob", scopes: ["workflows:run"] });
    for (const [method, path, body] of [
      ["POST", `/workflows/signalled/runs/${alices}/cancel`, {}],
      ["POST", `/workflows/signalled/runs/${alices}/continue`, { step_requirements: [], stream: true }],
      ["POST", `/runs/${alices}/signals/approved`, { by: "bob" }],
    ] as const) {
      const refused = await call(open, method, path, bob, body);
      expect(refused.status, path).toBe(403);
      expect(refused.text).toContain("runs:read");
      expect(refused.text).not.toContain("input");
    }
    const reader = (await call(open, "POST", `/runs/${alices}/read-token`, "edge-shared-key", {})).body!.token as string;
    const other = (await call(open, "POST", "/workflows/ticker/runs", "edge-shared-key", { stream: false, additional_data: { count: 1 } })).body!.run_id as string;
    const existing = await call(open, "GET", `/runs/${other}/events`, reader, undefined, { accept: "application/json" });
    const missing = await call(open, "GET", "/runs/no-such-run/events", reader, undefined, { accept: "application/json" });
    expect([existing.status, missing.status]).toEqual([403, 403]);
    expect(existing.text).toBe(missing.text);
  });

  it("takes only read tokens as ?token=; an address throttled for wrong tokens may still use a signed one, not the key", async () => {
    const user = await token({ sub: "alice", scopes: ["workflows:run"] });
    const runId = (await call(open, "POST", "/workflows/ticker/runs", user, { stream: false, additional_data: { count: 1 } })).body!.run_id as string;
    for (const credential of [user, "edge-shared-key"]) {
      const answer = await call(open, "GET", `/runs/${runId}/events?token=${credential}`, null, undefined, { accept: "application/json" });
      expect(answer.status).toBe(401);
      expect(answer.body?.detail).toMatch(/only a read token/);
    }
    // Two wrong keys, and this address is throttled (2 a minute here).
    expect((await call(open, "GET", "/runs", "wrong-key")).status).toBe(401);
    expect((await call(open, "GET", "/runs", "wrong-key")).status).toBe(401);
    expect((await call(open, "GET", "/runs", "wrong-key")).status).toBe(429);
    expect((await call(open, "GET", "/runs", "edge-shared-key")).status).toBe(429);
    expect((await call(open, "GET", "/runs", user)).status).toBe(200);
  });

  it("refuses JWTs without exp, with a blank sub or another issuer; keeps users' idempotency keys apart however they are spelt", async () => {
    const now = Math.floor(Date.now() / 1000);
    const sign = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(SECRET));
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ["no exp", { sub: "u", aud: AUDIENCE, iss: ISSUER, scopes: ["workflows:run"] }, /no exp/],
      ["a blank sub", { sub: "  ", aud: AUDIENCE, iss: ISSUER, exp: now + 600 }, /sub/],
      ["another issuer", { sub: "u", aud: AUDIENCE, iss: "https://evil.example.com", exp: now + 600 }, /issuer/],
    ];
    for (const [what, claims, reason] of cases) {
      const answer = await call(strict, "GET", "/runs", await sign(claims));
      expect(answer.status, what).toBe(401);
      expect(answer.body?.detail, what).toMatch(reason);
    }
    const as = async (sub: string) => sign({ sub, aud: AUDIENCE, iss: ISSUER, exp: now + 600, scopes: ["workflows:run"] });
    const start = async (bearer: string, key: string) =>
      (await call(strict, "POST", "/workflows/ticker/runs", bearer, { background: true, additional_data: { count: 1 } }, { "idempotency-key": key })).body!;
    const first = await start(await as("a"), "b:c");
    const second = await start(await as("a:b"), "c");
    expect(second.run_id).not.toBe(first.run_id);
    expect(second.user_id).toBe("a:b");
  });
});
