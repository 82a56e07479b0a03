import { z } from "zod";
import { Errors } from "../errors.ts";

/** What a tool's `execute` receives besides its arguments. */
export interface ToolContext {
  /** Aborted when the run is cancelled or the server stops. */
  readonly signal: AbortSignal;
  readonly runId: string;
}

/** A typed function a model may call; `parameters` is a zod object, sent to the model as JSON Schema. */
export interface ToolDefinition {
  readonly kind: "tool";
  readonly name: string;
  readonly description: string;
  readonly parameters: z.ZodType;
  readonly jsonSchema: Record<string, unknown>;
  /** A person approves each call before it runs: the agent's step pauses (AgentOS's tool confirmation). */
  readonly requiresConfirmation: boolean;
  execute(args: unknown, context: ToolContext): unknown;
}

/** Defines a tool: `tool({ name, description, parameters: z.object({...}), execute })`. */
export function tool<S extends z.ZodType>(options: {
  name: string;
  description: string;
  parameters: S;
  execute: (args: z.infer<S>, context: ToolContext) => unknown;
  requiresConfirmation?: boolean;
}): ToolDefinition {
  if (!/^[a-zA-Z0-9_-]{1,64}$/.test(options.name)) {
    throw Errors.invalidWorkflow(`Tool name "${options.name}" must be 1–64 letters, digits, "_" or "-" (the model API's rule).`);
  }
  const { $schema: _ignored, ...jsonSchema } = z.toJSONSchema(options.parameters) as Record<string, unknown>;
  return {
    kind: "tool",
    name: options.name,
    description: options.description,
    parameters: options.parameters,
    jsonSchema,
    requiresConfirmation: options.requiresConfirmation === true,
    execute: (args, context) => options.execute(args as z.infer<S>, context),
  };
}

/** An LLM agent, used as a step: `Step({ name, agent })`. */
export interface AgentDefinition {
  readonly kind: "agent";
  readonly name: string;
  /** The model name; null uses the server's default (FLOWD_MODEL). */
  readonly model: string | null;
  readonly instructions: string;
  readonly tools: readonly ToolDefinition[];
  /** Model turns that may request tools before the agent must answer. */
  readonly maxToolRounds: number;
}

/** Defines an agent: `Agent({ name, model, instructions, tools })`. */
export function Agent(options: {
  name: string;
  model?: string;
  instructions?: string;
  tools?: readonly ToolDefinition[];
  maxToolRounds?: number;
}): AgentDefinition {
  if (typeof options.name !== "string" || options.name.trim() === "") {
    throw Errors.invalidWorkflow('Agent needs a non-empty "name".');
  }
  const tools = options.tools ?? [];
  const names = new Set<string>();
  for (const t of tools) {
    if (t?.kind !== "tool") throw Errors.invalidWorkflow(`Agent "${options.name}": tools must be made with tool({...}).`);
    if (names.has(t.name)) throw Errors.invalidWorkflow(`Agent "${options.name}" has two tools named "${t.name}".`);
    names.add(t.name);
  }
  const maxToolRounds = options.maxToolRounds ?? 10;
  if (!Number.isInteger(maxToolRounds) || maxToolRounds < 1) {
    throw Errors.invalidWorkflow(`Agent "${options.name}": maxToolRounds must be a whole number of at least 1.`);
  }
  return {
    kind: "agent",
    name: options.name,
    model: options.model ?? null,
    instructions: options.instructions ?? "",
    tools,
    maxToolRounds,
  };
}
