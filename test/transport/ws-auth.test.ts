import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer, type TestServer } from "../helpers/server.ts";
import { TestClient } from "../helpers/ws-client.ts";

describe("with FLOWD_SECURITY_KEY set", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startServer({ securityKey: "s3cret-key" });
  });
  afterAll(async () => {
    await t.close();
  });

  it("says so on connect and refuses actions until the client authenticates", async () => {
    const { client, hello } = await TestClient.connect(t.wsUrl);
    expect(hello).toMatchObject({ event: "connected", requires_auth: true });
    const refused = await client.request({ action: "start-workflow", workflow_id: "ticker" });
    expect(refused).toMatchObject({ event: "auth_required", code: "AUTH_REQUIRED" });
    expect(refused.error).toContain("authenticate");
    expect(await client.request({ action: "reconnect", run_id: "x" })).toMatchObject({ event: "auth_required" });
    await client.close();
  });

  it("rejects a wrong token and accepts the right one", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    expect(await client.request({ action: "authenticate", token: "guess" })).toMatchObject({
      event: "auth_error",
      code: "AUTH_FAILED",
    });
    expect(await client.request({ action: "authenticate", token: "s3cret-key" })).toMatchObject({ event: "authenticated" });
    client.send({ action: "start-workflow", workflow_id: "ticker", additional_data: { count: 2 } });
    const frames = await client.untilTerminal();
    expect(frames.at(-1)?.event).toBe("WorkflowCompleted");
    await client.close();
  });

  it("answers ping before authentication", async () => {
    const { client } = await TestClient.connect(t.wsUrl);
    expect(await client.request({ action: "ping" })).toEqual({ event: "pong" });
    await client.close();
  });
});

describe("without a security key", () => {
  it("needs no authentication, and authenticate is harmless", async () => {
    const t = await startServer();
    const { client, hello } = await TestClient.connect(t.wsUrl);
    expect(hello).toEqual({ event: "connected", message: "Connected to flowd.", requires_auth: false });
    expect(await client.request({ action: "authenticate", token: "anything" })).toMatchObject({ event: "authenticated" });
    await client.close();
    await t.close();
  });
});
