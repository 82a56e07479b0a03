import { describe, expect, it } from "vitest";
import { timeOrderedId } from "../../src/store/time-ordered-id.ts";

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("timeOrderedId", () => {
  it("is a UUID version 7 with the RFC 9562 variant", () => {
    for (let i = 0; i < 1000; i++) expect(timeOrderedId()).toMatch(UUID_V7);
  });

  it("carries its millisecond timestamp in the first 48 bits", () => {
    const at = Date.UTC(2026, 10, 26, 3, 4, 5, 678);
    const id = timeOrderedId(at);
    expect(Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toBe(at);
  });

  it("sorts as text after every id of an earlier millisecond, and never repeats", () => {
    const start = Date.now();
    // 200 milliseconds, 10 ids in each.
    const byMs = Array.from({ length: 200 }, (_, ms) => Array.from({ length: 10 }, () => timeOrderedId(start + ms)).sort());
    for (let ms = 1; ms < byMs.length; ms++) expect(byMs[ms]![0]! > byMs[ms - 1]![9]!).toBe(true);
    expect(new Set(byMs.flat()).size).toBe(2000);
  });
});
