import { describe, expect, it } from "vitest";
import { AccessPolicy } from "../../src/transport/access.ts";
import { AuthGuard, addressKey } from "../../src/auth/guard.ts";
import { TokenVerifier } from "../../src/auth/tokens.ts";

describe("who may address the server (AccessPolicy)", () => {
  it("answers the name it listens on, beside IP addresses, localhost and the configured names", () => {
    const policy = new AccessPolicy({ host: "flowd-box.lan", allowedHosts: ["api.example.com"], allowedOrigins: [] });
    expect(policy.refusal({ host: "flowd-box.lan:7777" })).toBeNull();
    expect(policy.refusal({ host: "API.example.com" })).toBeNull();
    expect(policy.refusal({ host: "10.1.2.3:7777" })).toBeNull();
    expect(policy.refusal({ host: "[fe80::1]:7777" })).toBeNull();
    expect(policy.refusal({ host: "rebound.attacker.example:7777" })?.code).toBe("HOST_NOT_ALLOWED");
  });

  it("with FLOWD_ALLOWED_HOSTS=*, a page of a rebound name is not its own server's page", () => {
    const policy = new AccessPolicy({ host: "127.0.0.1", allowedHosts: ["*"], allowedOrigins: [] });
    expect(policy.refusal({ host: "evil.example:7777" })).toBeNull();
    expect(policy.refusal({ host: "evil.example:7777", origin: "http://evil.example:7777" })?.code).toBe("ORIGIN_NOT_ALLOWED");
    expect(policy.refusal({ host: "127.0.0.1:7777", origin: "http://127.0.0.1:7777" })).toBeNull();
  });
});

describe("throttling key guesses (AuthGuard)", () => {
  it("counts an IPv6 client's whole /64 as one address, and an IPv4-mapped address as its IPv4 one", async () => {
    expect(addressKey("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:0db8:0001:0002:ffff:1:2:3")).toBe("2001:db8:1:2::/64");
    expect(addressKey("::1")).toBe("0:0:0:0::/64");
    expect(addressKey("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(addressKey("192.0.2.7")).toBe("192.0.2.7");

    const guard = new AuthGuard(new TokenVerifier({ securityKey: "key", jwtSecret: null, jwtPublicKey: null, jwtAudience: null, jwtIssuer: null }), 2);
    await expect(guard.authenticate("a", "2001:db8:1:2::10")).rejects.toMatchObject({ code: "AUTH_FAILED" });
    await expect(guard.authenticate("b", "2001:db8:1:2::20")).rejects.toMatchObject({ code: "AUTH_FAILED" });
    await expect(guard.authenticate("key", "2001:db8:1:2::30")).rejects.toMatchObject({ code: "AUTH_THROTTLED" });
    expect(await guard.authenticate("key", "2001:db8:9:9::30")).toMatchObject({ kind: "admin", userId: null });
  });
});
