import { z } from "zod";
import { describeIssues } from "../protocol/fields.ts";
import { Errors } from "../errors.ts";
import type { StoredSchema } from "./waits.ts";

/** A zod schema as stored with a wait, so that it checks answers after a restart too. */
export function storableSchema(owner: string, schema: z.ZodType): StoredSchema {
  try {
    // As input: an object that strips unknown keys accepts them, as the zod schema does.
    return z.toJSONSchema(schema, { io: "input" }) as StoredSchema;
  } catch (error) {
    throw Errors.invalidWorkflow(`${owner}: its schema cannot be stored as JSON Schema (${String(error)}); use plain zod types without transforms.`);
  }
}

const compiled = new WeakMap<StoredSchema, z.ZodType>();

/** What is wrong with `value` against a stored schema, as one sentence, or null if it matches. */
export function schemaProblem(schema: StoredSchema, value: unknown, subject: string, root: string): string | null {
  let checker = compiled.get(schema);
  if (!checker) {
    checker = z.fromJSONSchema(schema as Parameters<typeof z.fromJSONSchema>[0]);
    compiled.set(schema, checker);
  }
  const result = checker.safeParse(value);
  return result.success ? null : describeIssues(subject, result.error.issues, root);
}
