import { randomUUID } from "node:crypto";

/**
 * A UUID version 7 (RFC 9562): the first 48 bits are the Unix time in milliseconds, the
 * rest random. Run ids and session ids are keys of B-tree indexes (`runs`, `events`): with
 * random ids every new run lands on a random page of each index, so a commit that starts
 * many runs writes many pages; time-ordered ids all land at the index's right edge. They
 * also sort in creation order, which helps whoever reads the tables with plain SQL.
 */
export function timeOrderedId(now: number = Date.now()): string {
  const time = now.toString(16).padStart(12, "0");
  // A v4 UUID's random bits, with the version digit (position 14) replaced and the variant kept.
  const random = randomUUID();
  return `${time.slice(0, 8)}-${time.slice(8, 12)}-7${random.slice(15)}`;
}
