import { v7 } from "uuid";

/**
 * A UUID version 7 (RFC 9562): the first 48 bits are the Unix time in milliseconds, the
 * rest random. Run ids and session ids are keys of B-tree indexes (`runs`, `events`): with
 * random ids every new run lands on a random page of each index, so a commit that starts
 * many runs writes many pages; time-ordered ids all land at the index's right edge. They
 * also sort in creation order, which helps whoever reads the tables with plain SQL.
 */
export function timeOrderedId(now: number = Date.now()): string {
  return v7({ msecs: now });
}
