/**
 * Human input, in AgentOS's wire shapes: what a paused run asks a person for (a step
 * requirement), and what a continue may answer.
 */
import { z } from "zod";
import { Errors } from "../errors.ts";
import { describeIssues } from "./fields.ts";

/** A field a person fills in, as AgentOS lists a step's `user_input_schema`. */
export interface UserInputField {
  name: string;
  field_type: "str" | "int" | "float" | "bool" | "list" | "dict";
  description: string | null;
  required: boolean;
  allowed_values?: unknown[];
}

/** A tool call waiting for a person's approval (`executor_requirements` of an agent step). */
export interface ExecutorRequirement {
  id: string;
  confirmation: boolean | null;
  tool_execution: { tool_call_id: string; tool_name: string; tool_args: unknown; requires_confirmation: true; confirmed: boolean | null };
}

/** What a person can do when retries ran out on a step with `onError: "pause"`. */
export const ERROR_DECISIONS = ["retry", "skip"] as const;
export type ErrorDecision = (typeof ERROR_DECISIONS)[number];

/**
 * One requirement of a paused run (AgentOS's StepRequirement): what was asked, and once
 * resolved, the answer. `step_id` is the step's path in the workflow tree.
 */
export interface StepRequirement {
  step_id: string;
  step_name: string;
  step_index: number;
  step_type: "Step" | "Router" | "Condition";
  requires_confirmation: boolean;
  confirmation_message: string | null;
  confirmed: boolean | null;
  on_reject: "skip" | "cancel" | "else";
  requires_user_input: boolean;
  user_input_message: string | null;
  user_input_schema?: UserInputField[];
  user_input: Record<string, unknown> | null;
  requires_route_selection: boolean;
  available_choices: string[] | null;
  allow_multiple_selections: boolean;
  selected_choices: string[] | null;
  requires_executor_input?: true;
  executor_name?: string;
  executor_run_id?: string;
  executor_type?: "agent";
  executor_requirements?: ExecutorRequirement[];
  /** flowd's `onError: "pause"`: the person decides `retry` or `skip`. */
  requires_error_decision?: true;
  error_message?: string;
  decision?: ErrorDecision | null;
  timeout_at: string | null;
  on_timeout: "cancel" | "skip" | "approve";
}

/** What a continue resolved, as the run stores it and its step reads it back. */
export type Resolution =
  | { kind: "confirmation"; confirmed: boolean; timedOut: boolean }
  | { kind: "user_input"; input: Record<string, unknown> | null; timedOut: boolean }
  | { kind: "route"; selected: string[] | null; timedOut: boolean }
  | { kind: "tool"; confirmed: boolean; timedOut: boolean }
  | { kind: "error"; decision: ErrorDecision; timedOut: boolean };

/** How a requirement is answered, for the run's `wait_kind` and for error messages. */
export function requirementKind(requirement: StepRequirement): "confirmation" | "user_input" | "route_choice" | "tool_confirmation" | "error_decision" {
  if (requirement.requires_executor_input) return "tool_confirmation";
  if (requirement.requires_error_decision) return "error_decision";
  if (requirement.requires_route_selection) return "route_choice";
  if (requirement.requires_user_input) return "user_input";
  return "confirmation";
}

const FIELD_TYPES: Record<string, UserInputField["field_type"]> = {
  ZodString: "str",
  ZodNumber: "float",
  ZodBoolean: "bool",
  ZodArray: "list",
  ZodObject: "dict",
  ZodRecord: "dict",
  ZodEnum: "str",
  ZodLiteral: "str",
};

/** AgentOS's field list for a zod object: what a client shows a person as a form. */
export function userInputFields(schema: z.ZodObject): UserInputField[] {
  return Object.entries(schema.shape).map(([name, field]) => {
    let inner = field as z.ZodType;
    let required = true;
    while (inner instanceof z.ZodOptional || inner instanceof z.ZodDefault || inner instanceof z.ZodNullable) {
      required = false;
      inner = inner.unwrap() as z.ZodType;
    }
    const typeName = inner.constructor.name;
    const isInt = inner instanceof z.ZodNumber && (inner.format === "safeint" || inner.format === "int32" || inner.isInt === true);
    const allowed = inner instanceof z.ZodEnum ? (inner.options as unknown[]) : inner instanceof z.ZodLiteral ? [...inner.values] : undefined;
    return {
      name,
      field_type: isInt ? "int" : (FIELD_TYPES[typeName] ?? "str"),
      description: inner.description ?? (field as z.ZodType).description ?? null,
      required,
      ...(allowed ? { allowed_values: allowed } : {}),
    };
  });
}

/**
 * A requirement as a client sends it back: only what flowd reads is checked, the rest of
 * AgentOS's fields pass through.
 */
export const RequirementAnswer = z
  .object({
    step_id: z.string().max(1024).optional(),
    confirmed: z.boolean().nullable().optional(),
    user_input: z.record(z.string(), z.unknown()).nullable().optional(),
    selected_choices: z.array(z.string().max(1024)).max(1000).nullable().optional(),
    decision: z.enum(ERROR_DECISIONS).nullable().optional(),
    executor_requirements: z
      .array(
        z
          .object({
            confirmation: z.boolean().nullable().optional(),
            tool_execution: z.object({ confirmed: z.boolean().nullable().optional() }).loose().optional(),
          })
          .loose(),
      )
      .max(1000)
      .nullable()
      .optional(),
  })
  .loose();
export type RequirementAnswer = z.infer<typeof RequirementAnswer>;

/** `step_requirements` of a continue: the list (a JSON string in a form, as AgentOS clients send it). */
export const StepRequirementsField = z.preprocess(
  (value) => {
    if (typeof value !== "string") return value;
    try {
      return JSON.parse(value) as unknown;
    } catch {
      return value;
    }
  },
  z.array(RequirementAnswer).min(1, "must list the run's requirements, the open one resolved").max(10_000),
);

/** A continue's `step_requirements`, checked at the edge; INVALID_REQUIREMENT saying what is wrong otherwise. */
export function parseStepRequirements(runId: string, value: unknown): RequirementAnswer[] {
  if (value === undefined || value === null || value === "") {
    throw Errors.invalidRequirement(runId, "step_requirements is missing");
  }
  const parsed = StepRequirementsField.safeParse(value);
  if (!parsed.success) {
    if (typeof value === "string" && !value.trim().startsWith("[")) throw Errors.invalidRequirement(runId, "step_requirements is not a JSON list");
    throw Errors.invalidRequirement(runId, describeIssues("step_requirements", parsed.error.issues, "step_requirements").replace(/^Invalid /, "invalid ").replace(/\.$/, ""));
  }
  return parsed.data;
}
