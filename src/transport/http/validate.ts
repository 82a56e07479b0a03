import type { z } from "zod";
import { Errors } from "../../errors.ts";
import { describeIssues } from "../../protocol/fields.ts";

/** Validates request input at the edge; a 422 that names each bad field otherwise. */
export function parseInput<T extends z.ZodType>(schema: T, value: unknown, subject: string): z.infer<T> {
  // No body at all is an empty one; a JSON `null` is not an object, and says so.
  const parsed = schema.safeParse(value === undefined ? {} : value);
  if (!parsed.success) throw Errors.invalidRequest(describeIssues(subject, parsed.error.issues));
  return parsed.data;
}
