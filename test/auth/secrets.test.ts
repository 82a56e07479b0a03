import * as crypto from "node:crypto";
import { describe, expect, it, vi } from "vitest";

vi.mock("node:crypto", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:crypto")>();
  return { ...actual, timingSafeEqual: vi.fn(actual.timingSafeEqual) };
});

describe("comparing secrets", () => {
  it("goes through crypto.timingSafeEqual on digests of one length, whatever the lengths given", async () => {
    // Loaded afresh, so that it takes the spied module (the setup file may have loaded it before).
    vi.resetModules();
    const { secretsEqual } = await import("../../src/auth/tokens.ts");
    const compare = vi.mocked(crypto.timingSafeEqual);
    compare.mockClear();
    expect(secretsEqual("the-key", "the-key")).toBe(true);
    expect(secretsEqual("the-kez", "the-key")).toBe(false);
    expect(secretsEqual("k", "the-key")).toBe(false);
    expect(secretsEqual("the-key-and-much-more-than-it", "the-key")).toBe(false);
    expect(secretsEqual("", "the-key")).toBe(false);
    // Every comparison, of equal lengths or not, is one constant-time comparison of two 32-byte digests.
    expect(compare).toHaveBeenCalledTimes(5);
    for (const [a, b] of compare.mock.calls) {
      expect([(a as Buffer).length, (b as Buffer).length]).toEqual([32, 32]);
    }
  });
});

describe("token settings", () => {
  it("refuses settings it cannot use, saying what to set instead", async () => {
    const { TokenVerifier } = await import("../../src/auth/tokens.ts");
    const { resolveConfig } = await import("../../src/config.ts");
    const settings = { securityKey: null, jwtSecret: null, jwtPublicKey: null, jwtAudience: null, jwtIssuer: null };
    expect(() => new TokenVerifier({ ...settings, jwtSecret: "short" })).toThrow(/at least 32 bytes.*openssl rand/);
    const { publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    const pem = publicKey.export({ type: "spki", format: "pem" }).toString();
    expect(() => new TokenVerifier({ ...settings, jwtSecret: "x".repeat(40), jwtPublicKey: pem })).toThrow(/not both/);
    expect(new TokenVerifier({ ...settings, jwtPublicKey: pem }).jwtAlgorithm).toBe("ES256");
    expect(() => new TokenVerifier({ ...settings, jwtPublicKey: "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----" })).toThrow(/not a public key in PEM form/);
    expect(() => new TokenVerifier({ ...settings, jwtPublicKey: "/no/such/key.pem" })).toThrow(/neither a PEM .* nor a file/);
    const ed = crypto.generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }).toString();
    expect(() => new TokenVerifier({ ...settings, jwtPublicKey: ed })).toThrow(/RSA key \(RS256\) or an EC key on P-256 \(ES256\); got ed25519/);
    expect(() => resolveConfig({}, { FLOWD_USER_ISOLATION: "maybe" })).toThrow(/FLOWD_USER_ISOLATION must be true or false; got "maybe"/);
    expect(resolveConfig({}, { FLOWD_USER_ISOLATION: "true" }).userIsolation).toBe(true);
  });
});
