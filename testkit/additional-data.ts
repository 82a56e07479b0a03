import type { StepInput } from "../src/workflows/definition.ts";

/** A number from the run's additional_data, with a default: how test and bench workflows take their knobs. */
export function setting(input: StepInput, key: string, fallback: number): number {
  const value = (input.additionalData as Record<string, unknown> | null)?.[key];
  return typeof value === "number" ? value : fallback;
}
