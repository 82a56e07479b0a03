import { timingSafeEqual } from "node:crypto";
import { isIPv6 } from "node:net";
import { Errors, FlowdError } from "../errors.ts";

/** Compares a client's token with the security key in constant time. */
export function tokenMatches(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

const WINDOW_MS = 60_000;
/** Addresses remembered at most: a flood of addresses cannot grow the table without bound. */
const MAX_ADDRESSES = 10_000;

/**
 * Who a failure counts against: an IPv4 address, or an IPv6 address's /64 (one host
 * usually holds a whole /64, and could otherwise guess from each of its addresses).
 */
export function addressKey(address: string | undefined): string {
  if (address === undefined) return "unknown";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head = "", tail = ""] = address.toLowerCase().split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === "" ? [] : tail.split(":");
  const groups = address.includes("::") ? [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right] : left;
  return `${groups.slice(0, 4).map((group) => Number.parseInt(group, 16).toString(16)).join(":")}::/64`;
}

/** What checking a token says. */
export type AuthOutcome = { ok: true } | { ok: false; error: FlowdError };

/**
 * Checks tokens against the security key, and throttles guessing: an address that
 * fails `failuresPerMinute` times is refused (AUTH_THROTTLED) for the rest of that
 * minute, right token or not, so a key cannot be guessed at the speed of the network.
 */
export class AuthGuard {
  private readonly failures = new Map<string, { count: number; since: number }>();

  constructor(
    readonly securityKey: string | null,
    private readonly failuresPerMinute: number,
  ) {}

  /** Whether clients must authenticate at all. */
  get required(): boolean {
    return this.securityKey !== null;
  }

  /** Checks a token given from `address`; a wrong one counts against that address. */
  check(token: string, address: string | undefined): AuthOutcome {
    const key = this.securityKey;
    if (key === null) return { ok: true };
    const now = Date.now();
    const where = addressKey(address);
    const record = this.failures.get(where);
    if (record && now - record.since < WINDOW_MS && record.count >= this.failuresPerMinute) {
      const seconds = Math.ceil((record.since + WINDOW_MS - now) / 1000);
      return {
        ok: false,
        error: Errors.authThrottled(where, seconds),
      };
    }
    if (tokenMatches(token, key)) return { ok: true };
    this.recordFailure(where, record, now);
    return { ok: false, error: Errors.authFailed() };
  }

  private recordFailure(address: string, record: { count: number; since: number } | undefined, now: number): void {
    // Re-inserted, so the map's order is oldest-first and the oldest go first when it is full.
    this.failures.delete(address);
    const fresh = !record || now - record.since >= WINDOW_MS;
    this.failures.set(address, fresh ? { count: 1, since: now } : { count: record.count + 1, since: record.since });
    if (this.failures.size > MAX_ADDRESSES) {
      for (const [old, { since }] of this.failures) {
        if (this.failures.size <= MAX_ADDRESSES && now - since < WINDOW_MS) break;
        this.failures.delete(old);
      }
    }
  }
}
