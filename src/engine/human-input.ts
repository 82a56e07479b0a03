/**
 * Pausing for a person and reading their answer: the requirement a paused run shows,
 * how a continue's answer resolves it, and what a timeout decides.
 */
import { Errors } from "../errors.ts";
import {
  userInputFields,
  type ErrorDecision,
  type RequirementAnswer,
  type Resolution,
  type StepRequirement,
} from "../protocol/hitl.ts";
import type { RunEventBody, StepLocation } from "../protocol/run-events.ts";
import type { HumanInput } from "../workflows/definition.ts";
import { schemaProblem, storableSchema } from "./payload-schema.ts";
import type { StoredSchema, WaitRecord } from "./waits.ts";

/** A resolution as stored: what was answered, and the requirement with the answer filled in. */
export type StoredResolution = Resolution & { requirement: StepRequirement };

/** True for the checkpoint path of a person's answer (`<path>#hitl`, `<path>#tool:<call id>`, `<path>#error<n>`). */
export function isResolutionPath(path: string): boolean {
  return /#(hitl|tool:[^#]*|error\d+)$/.test(path);
}

type HumanRecord = Extract<WaitRecord, { kind: "human" }>;

/** A requirement with nothing asked yet: the fields every kind has. */
function baseRequirement(loc: StepLocation, stepType: StepRequirement["step_type"], timeoutAt: number | null, onTimeout: StepRequirement["on_timeout"]): StepRequirement {
  return {
    step_id: loc.step_path,
    step_name: loc.step_name,
    step_index: loc.step_index,
    step_type: stepType,
    requires_confirmation: false,
    confirmation_message: null,
    confirmed: null,
    on_reject: "skip",
    requires_user_input: false,
    user_input_message: null,
    user_input: null,
    requires_route_selection: false,
    available_choices: null,
    allow_multiple_selections: false,
    selected_choices: null,
    timeout_at: timeoutAt === null ? null : new Date(timeoutAt).toISOString(),
    on_timeout: onTimeout,
  };
}

/** A pause before a Step or a Condition: confirmation, user input, or both. */
export function stepPause(loc: StepLocation, stepType: "Step" | "Condition", human: HumanInput, now: number): { record: HumanRecord; events: RunEventBody[] } {
  const timeoutAt = human.timeoutMs === null ? null : now + human.timeoutMs;
  const fields = human.userInputSchema ? userInputFields(human.userInputSchema) : undefined;
  const requirement: StepRequirement = {
    ...baseRequirement(loc, stepType, timeoutAt, human.onTimeout),
    requires_confirmation: human.requiresConfirmation,
    confirmation_message: human.confirmationMessage,
    on_reject: human.onReject,
    requires_user_input: human.requiresUserInput,
    user_input_message: human.userInputMessage,
    ...(fields ? { user_input_schema: fields } : {}),
  };
  const schema: StoredSchema | null = human.userInputSchema ? storableSchema(`Step "${loc.step_name}" userInputSchema`, human.userInputSchema) : null;
  const paused: RunEventBody = {
    event: "StepPaused",
    ...loc,
    step_id: loc.step_path,
    requires_confirmation: requirement.requires_confirmation,
    confirmation_message: requirement.confirmation_message,
    requires_user_input: requirement.requires_user_input,
    user_input_message: requirement.user_input_message,
    ...(fields ? { user_input_schema: fields } : {}),
  };
  return { record: { kind: "human", loc, requirement, pauseKind: "step", timeoutAt, schema }, events: [paused] };
}

/** A Router whose route a person picks. */
export function routePause(
  loc: StepLocation,
  choices: string[],
  human: { message: string | null; allowMultipleSelections: boolean; timeoutMs: number | null; onTimeout: "cancel" | "skip" },
  now: number,
): { record: HumanRecord; events: RunEventBody[] } {
  const timeoutAt = human.timeoutMs === null ? null : now + human.timeoutMs;
  const message = human.message ?? `Select a route from: ${choices.join(", ")}`;
  const requirement: StepRequirement = {
    ...baseRequirement(loc, "Router", timeoutAt, human.onTimeout),
    requires_route_selection: true,
    user_input_message: message,
    available_choices: choices,
    allow_multiple_selections: human.allowMultipleSelections,
  };
  const paused: RunEventBody = {
    event: "RouterPaused",
    ...loc,
    available_choices: choices,
    user_input_message: message,
    allow_multiple_selections: human.allowMultipleSelections,
  };
  return { record: { kind: "human", loc, requirement, pauseKind: "step", timeoutAt, schema: null }, events: [paused] };
}

/** An agent's tool call that a person approves first. */
export function toolPause(
  loc: StepLocation,
  agent: { name: string; runId: string },
  call: { id: string; name: string; args: unknown },
): { record: HumanRecord; events: RunEventBody[] } {
  const executorRequirements = [
    {
      id: call.id,
      confirmation: null,
      tool_execution: { tool_call_id: call.id, tool_name: call.name, tool_args: call.args, requires_confirmation: true as const, confirmed: null },
    },
  ];
  const requirement: StepRequirement = {
    ...baseRequirement(loc, "Step", null, "cancel"),
    requires_confirmation: true,
    confirmation_message: `Allow the agent "${agent.name}" to call the tool "${call.name}"?`,
    requires_executor_input: true,
    executor_name: agent.name,
    executor_run_id: agent.runId,
    executor_type: "agent",
    executor_requirements: executorRequirements,
  };
  const paused: RunEventBody = {
    event: "StepExecutorPaused",
    ...loc,
    step_id: loc.step_path,
    executor_name: agent.name,
    executor_run_id: agent.runId,
    executor_type: "agent",
    executor_requirements: executorRequirements,
  };
  return { record: { kind: "human", loc, requirement, pauseKind: "executor", timeoutAt: null, schema: null }, events: [paused] };
}

/** A step whose retries ran out, with `onError: "pause"`: a person decides to retry or skip it. */
export function errorPause(loc: StepLocation, error: string): { record: HumanRecord; events: RunEventBody[] } {
  const requirement: StepRequirement = {
    ...baseRequirement(loc, "Step", null, "cancel"),
    requires_error_decision: true,
    error_message: error,
    decision: null,
    available_choices: ["retry", "skip"],
  };
  const paused: RunEventBody = {
    event: "StepPaused",
    ...loc,
    step_id: loc.step_path,
    requires_confirmation: false,
    confirmation_message: null,
    requires_user_input: false,
    user_input_message: null,
    requires_error_decision: true,
    error_message: error,
  };
  return { record: { kind: "human", loc, requirement, pauseKind: "step", timeoutAt: null, schema: null }, events: [paused] };
}

/** How many earlier (resolved) requirements `WorkflowPaused` lists at most: the latest ones. */
export const MAX_LISTED_REQUIREMENTS = 100;

/** `WorkflowPaused`, after the step's own pause event: the requirements so far (the latest 100 resolved), the open one last. */
export function workflowPaused(record: HumanRecord, earlier: readonly StepRequirement[]): RunEventBody {
  return {
    event: "WorkflowPaused",
    status: "paused",
    paused_step_index: record.loc.step_index,
    paused_step_name: record.loc.step_name,
    paused_step_path: record.loc.step_path,
    pause_kind: record.pauseKind,
    step_requirements: [...earlier.slice(-MAX_LISTED_REQUIREMENTS), record.requirement],
    timeout_at: record.timeoutAt,
  };
}

/** The event that says the run goes on, for a resolution. */
export function continuedEvent(record: HumanRecord, resolution: Resolution): RunEventBody {
  const { loc, requirement } = record;
  if (resolution.kind === "tool") {
    const call = requirement.executor_requirements?.[0]?.tool_execution;
    return {
      event: "StepExecutorContinued",
      ...loc,
      step_id: loc.step_path,
      executor_name: requirement.executor_name ?? "",
      executor_run_id: requirement.executor_run_id ?? "",
      executor_type: "agent",
      tool_call_id: call?.tool_call_id ?? "",
      confirmed: resolution.confirmed,
      timed_out: resolution.timedOut,
    };
  }
  return {
    event: "StepContinued",
    ...loc,
    step_id: loc.step_path,
    timed_out: resolution.timedOut,
    ...(resolution.kind === "confirmation" ? { confirmed: resolution.confirmed } : {}),
    ...(resolution.kind === "user_input" ? { confirmed: resolution.input !== null, user_input: resolution.input } : {}),
    ...(resolution.kind === "route" ? { selected_choices: resolution.selected } : {}),
    ...(resolution.kind === "error" ? { decision: resolution.decision } : {}),
  };
}

/** The requirement with the answer filled in, as later pauses list it. */
function answered(requirement: StepRequirement, resolution: Resolution): StepRequirement {
  switch (resolution.kind) {
    case "confirmation":
      return { ...requirement, confirmed: resolution.confirmed };
    case "user_input":
      return { ...requirement, confirmed: requirement.requires_confirmation ? resolution.input !== null : null, user_input: resolution.input };
    case "route":
      return { ...requirement, selected_choices: resolution.selected };
    case "tool":
      return {
        ...requirement,
        confirmed: resolution.confirmed,
        executor_requirements: requirement.executor_requirements?.map((r) => ({
          ...r,
          confirmation: resolution.confirmed,
          tool_execution: { ...r.tool_execution, confirmed: resolution.confirmed },
        })),
      };
    case "error":
      return { ...requirement, decision: resolution.decision };
  }
}

/**
 * Reads a continue's answer to the open requirement: the resolution to store, or
 * INVALID_REQUIREMENT saying what is missing or wrong.
 */
export function resolveAnswer(runId: string, record: HumanRecord, answers: readonly RequirementAnswer[]): StoredResolution {
  const { requirement } = record;
  const invalid = (what: string) => Errors.invalidRequirement(runId, what);
  // The entry for the open requirement's step; an entry without step_id (as `flowd runs continue` sends) if there is none.
  const answer = answers.findLast((a) => a.step_id === requirement.step_id) ?? answers.findLast((a) => a.step_id === undefined);
  if (!answer) {
    throw invalid(`no entry of step_requirements is for the open requirement (step_id "${requirement.step_id}", step "${requirement.step_name}")`);
  }
  const subject = `the requirement of step "${requirement.step_name}" (step_id ${requirement.step_id})`;
  let resolution: Resolution;
  if (requirement.requires_executor_input) {
    const executor = answer.executor_requirements?.[0];
    const confirmed = answer.confirmed ?? executor?.confirmation ?? executor?.tool_execution?.confirmed ?? null;
    if (typeof confirmed !== "boolean") throw invalid(`${subject} asks to approve a tool call: set "confirmed" to true or false`);
    resolution = { kind: "tool", confirmed, timedOut: false };
  } else if (requirement.requires_error_decision) {
    const decision = answer.decision ?? (answer.selected_choices?.length === 1 ? answer.selected_choices[0] : null);
    if (decision !== "retry" && decision !== "skip") throw invalid(`${subject} asks what to do after its error: set "decision" to "retry" or "skip"`);
    resolution = { kind: "error", decision: decision as ErrorDecision, timedOut: false };
  } else if (requirement.requires_route_selection) {
    const selected = answer.selected_choices;
    const choices = requirement.available_choices ?? [];
    if (!selected || selected.length === 0) throw invalid(`${subject} asks for a route: set "selected_choices" to one of ${choices.join(", ")}`);
    const unknown = selected.find((choice) => !choices.includes(choice));
    if (unknown !== undefined) throw invalid(`"${unknown}" in selected_choices is not one of the available choices (${choices.join(", ")})`);
    const distinct = [...new Set(selected)];
    if (!requirement.allow_multiple_selections && distinct.length > 1) throw invalid(`${subject} allows one route; selected_choices has ${distinct.length}`);
    resolution = { kind: "route", selected: distinct, timedOut: false };
  } else if (requirement.requires_user_input) {
    const rejected = requirement.requires_confirmation && answer.confirmed === false;
    if (rejected) {
      resolution = { kind: "user_input", input: null, timedOut: false };
    } else {
      if (!answer.user_input) throw invalid(`${subject} asks for input: set "user_input" to an object with its fields`);
      const problem = record.schema ? schemaProblem(record.schema, answer.user_input, "user_input", "user_input") : null;
      if (problem) throw invalid(problem.replace(/\.$/, ""));
      resolution = { kind: "user_input", input: answer.user_input, timedOut: false };
    }
  } else {
    if (typeof answer.confirmed !== "boolean") throw invalid(`${subject} asks for confirmation: set "confirmed" to true or false`);
    resolution = { kind: "confirmation", confirmed: answer.confirmed, timedOut: false };
  }
  return { ...resolution, requirement: answered(requirement, resolution) };
}

/** What `onTimeout` decides when no one answered in time; null to cancel the run. */
export function timeoutResolution(record: HumanRecord): StoredResolution | null {
  const { requirement } = record;
  if (requirement.on_timeout === "cancel") return null;
  const approve = requirement.on_timeout === "approve";
  let resolution: Resolution;
  if (requirement.requires_route_selection) resolution = { kind: "route", selected: null, timedOut: true };
  else if (requirement.requires_user_input) resolution = { kind: "user_input", input: null, timedOut: true };
  else resolution = { kind: "confirmation", confirmed: approve, timedOut: true };
  return { ...resolution, requirement: answered(requirement, resolution) };
}
