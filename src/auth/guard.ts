import { isIPv6 } from "node:net";
import { Errors, FlowdError } from "../errors.ts";
import { ANYONE, type Principal } from "./principal.ts";
import type { TokenVerifier } from "./tokens.ts";

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

/**
 * Checks tokens (see TokenVerifier), and throttles guessing: an address that fails
 * `failuresPerMinute` times is refused (AUTH_THROTTLED) for the rest of that minute,
 * right token or not, so a key cannot be guessed at the speed of the network.
 */
export class AuthGuard {
  private readonly failures = new Map<string, { count: number; since: number }>();

  constructor(
    readonly tokens: TokenVerifier,
    private readonly failuresPerMinute: number,
    /** Told of an address's first refused token in a minute, and of the one that gets it throttled: never the token. */
    private readonly onRefused: (address: string, error: FlowdError, throttled: boolean) => void = () => {},
  ) {}

  /** Whether clients must authenticate at all. */
  get required(): boolean {
    return this.tokens.required;
  }

  /** Who presents `token` from `address`; a refused one counts against that address. */
  async authenticate(token: string, address: string | undefined): Promise<Principal> {
    if (!this.required) return ANYONE;
    const now = Date.now();
    const where = addressKey(address);
    const record = this.failures.get(where);
    if (record && now - record.since < WINDOW_MS && record.count >= this.failuresPerMinute) {
      // Guessing the key from here is stopped; a signed token (which cannot be guessed) still works,
      // so that one user behind a shared address cannot lock the others out.
      const signed = await this.tokens.verify(token, false).catch(() => null);
      if (signed) return signed;
      throw Errors.authThrottled(where, Math.ceil((record.since + WINDOW_MS - now) / 1000));
    }
    try {
      return await this.tokens.verify(token);
    } catch (error) {
      if (error instanceof FlowdError) {
        const count = this.recordFailure(where, this.failures.get(where), Date.now());
        if (count === 1 || count === this.failuresPerMinute) this.onRefused(where, error, count === this.failuresPerMinute);
      }
      throw error;
    }
  }

  /** Counts a refused token against `address`: how many in its current minute. */
  private recordFailure(address: string, record: { count: number; since: number } | undefined, now: number): number {
    // Re-inserted, so the map's order is oldest-first and the oldest go first when it is full.
    this.failures.delete(address);
    const fresh = !record || now - record.since >= WINDOW_MS;
    const counted = fresh ? { count: 1, since: now } : { count: record.count + 1, since: record.since };
    this.failures.set(address, counted);
    if (this.failures.size > MAX_ADDRESSES) {
      for (const [old, { since }] of this.failures) {
        if (this.failures.size <= MAX_ADDRESSES && now - since < WINDOW_MS) break;
        this.failures.delete(old);
      }
    }
    return counted.count;
  }
}
