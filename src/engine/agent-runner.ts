import type { Context } from "@opentelemetry/api";
import { endSpan, endsSpan, startChildSpan } from "../ops/tracing.ts";
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { AgentDefinition, ToolDefinition } from "../agents/agent.ts";
import type { ChatMessage, TokenUsage, ToolCall, ToolSpec } from "../agents/chat-model.ts";
import { errorMessage } from "../errors.ts";
import type { StepLocation } from "../protocol/run-events.ts";
import type { StepInput } from "../workflows/definition.ts";
import { WAIT_SUFFIX } from "../store/resume-state.ts";
import { toolPause, workflowPaused, type StoredResolution } from "./human-input.ts";
import { RunSuspended } from "./interruption.ts";
import { toJsonSafe } from "./json-safe.ts";
import type { RunContext } from "./run-context.ts";
import type { WaitRecord } from "./waits.ts";

/**
 * An agent's conversation when it paused for a person to approve a tool call, stored
 * (`<step_path>#agent<round>`) so that it goes on from there, not from its first model call.
 */
interface AgentState {
  agentRunId: string;
  round: number;
  messages: ChatMessage[];
  toolCalls: ToolCall[];
  usage: TokenUsage | null;
  firstToken: number | null;
}

const agentStatePath = (stepPath: string, round: number): string => `${stepPath}#agent${round}`;
const toolApprovalPath = (stepPath: string, callId: string): string => `${stepPath}#tool:${callId}`;

/** The agent's latest stored state, if it paused before. */
function latestAgentState(ctx: RunContext, stepPath: string): AgentState | undefined {
  const prefix = `${stepPath}#agent`;
  let latest: AgentState | undefined;
  for (const [key, value] of ctx.restored) {
    if (key.startsWith(prefix) && /^\d+$/.test(key.slice(prefix.length))) {
      const state = value as AgentState;
      if (!latest || state.round > latest.round) latest = state;
    }
  }
  return latest;
}

function elapsed(since: number): number {
  return Math.round((performance.now() - since) * 1000) / 1000;
}

function asText(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
}

/** Instructions as the system message, earlier step outputs as context, the run's message as the user's. */
function initialMessages(agent: AgentDefinition, input: StepInput): ChatMessage[] {
  const context = Object.entries(input.outputs)
    .map(([name, output]) => `### ${name}\n${asText(output)}`)
    .join("\n\n");
  const system = [agent.instructions, context ? `Outputs of the earlier steps of this workflow:\n\n${context}` : ""]
    .filter(Boolean)
    .join("\n\n");
  return [
    ...(system ? [{ role: "system" as const, content: system }] : []),
    { role: "user", content: input.message },
  ];
}

function toolSpecs(tools: readonly ToolDefinition[]): ToolSpec[] {
  return tools.map((t) => ({ type: "function", function: { name: t.name, description: t.description, parameters: t.jsonSchema } }));
}

function addUsage(total: TokenUsage | null, more: TokenUsage | null): TokenUsage | null {
  if (!more) return total;
  if (!total) return { ...more };
  return {
    prompt_tokens: total.prompt_tokens + more.prompt_tokens,
    completion_tokens: total.completion_tokens + more.completion_tokens,
    total_tokens: total.total_tokens + more.total_tokens,
  };
}

/**
 * Runs an agent step: streams the model's answer as RunContent, runs the tools it asks
 * for (concurrently when it asks for several), feeds their results back, and repeats
 * until it answers without tools. Returns the final content, the step's output.
 */
export async function runAgentStep(ctx: RunContext, agent: AgentDefinition, loc: StepLocation, input: StepInput, attempt = 1, trace: Context = ctx.trace): Promise<string> {
  // A retried step's agent starts its conversation afresh: its stored state and approvals are per attempt.
  const keyBase = attempt === 1 ? loc.step_path : `${loc.step_path}@a${attempt}`;
  const { model, name: modelName } = ctx.models.resolve(agent);
  const saved = latestAgentState(ctx, keyBase);
  const agentRunId = saved?.agentRunId ?? randomUUID();
  const started = performance.now();
  const base = { ...loc, agent_run_id: agentRunId };
  // Going on after a pause, this is not sent again (the run knows it sent it).
  ctx.emit({ event: "RunStarted", ...base, agent_name: agent.name, model: modelName });
  let firstToken: number | null = saved?.firstToken ?? null;
  let usage: TokenUsage | null = saved?.usage ?? null;
  try {
    const messages = saved ? [...saved.messages] : initialMessages(agent, input);
    const tools = toolSpecs(agent.tools);
    let pending: ToolCall[] | null = saved ? saved.toolCalls : null;
    for (let round = saved?.round ?? 1; round <= agent.maxToolRounds; round++) {
      let calls: ToolCall[];
      if (pending) {
        calls = pending;
        pending = null;
      } else {
        const call = startChildSpan(trace, `flowd.model_call ${modelName}`, {
          "flowd.run_id": ctx.runId,
          "flowd.step_path": loc.step_path,
          "flowd.attempt": attempt,
          "flowd.agent_run_id": agentRunId,
          "flowd.agent_name": agent.name,
          "gen_ai.request.model": modelName,
          "flowd.round": round,
        });
        const turn = await endsSpan(
          call,
          model.complete(
            { model: modelName, messages, tools, signal: ctx.signal },
            {
              onContent: (text) => {
                firstToken ??= elapsed(started);
                ctx.emit({ event: "RunContent", ...base, content: text });
              },
              onRetry: (notice) =>
                ctx.emit({
                  event: "CustomEvent",
                  ...loc,
                  name: "model_retry",
                  data: { agent_run_id: agentRunId, attempt: notice.attempt, status: notice.status, delay_ms: notice.delayMs, error: notice.error },
                }),
            },
          ),
          () => ctx.signal.aborted,
        );
        usage = addUsage(usage, turn.usage);
        if (turn.toolCalls.length === 0) {
          ctx.emit({
            event: "RunCompleted",
            ...base,
            agent_name: agent.name,
            model: modelName,
            content: turn.content,
            usage,
            time_to_first_token_ms: firstToken,
            duration_ms: elapsed(started),
          });
          return turn.content;
        }
        messages.push({
          role: "assistant",
          content: turn.content || null,
          tool_calls: turn.toolCalls.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } })),
        });
        calls = turn.toolCalls;
      }
      const state: AgentState = { agentRunId, round, messages, toolCalls: calls, usage, firstToken };
      const approvals = approveCalls(ctx, agent, loc, keyBase, state);
      const results = await Promise.all(calls.map((call) => runTool(ctx, agent, base, call, approvals.get(call.id) ?? true, trace)));
      calls.forEach((call, i) => messages.push({ role: "tool", tool_call_id: call.id, content: results[i] ?? "" }));
    }
    throw new Error(`agent "${agent.name}" was still calling tools after ${agent.maxToolRounds} rounds (maxToolRounds)`);
  } catch (error) {
    if (!ctx.signal.aborted && !(error instanceof RunSuspended)) {
      ctx.emit({ event: "RunError", ...base, agent_name: agent.name, error: errorMessage(error), duration_ms: elapsed(started) });
    }
    throw error;
  }
}

/**
 * The person's answers for the round's tool calls that need one (`tool({ requiresConfirmation })`).
 * A call not answered yet pauses the run before any of the round's tools runs: the
 * conversation is stored with the pause, and the step goes on from it.
 */
function approveCalls(ctx: RunContext, agent: AgentDefinition, loc: StepLocation, keyBase: string, state: AgentState): Map<string, boolean> {
  const approvals = new Map<string, boolean>();
  for (const call of state.toolCalls) {
    if (!agent.tools.find((t) => t.name === call.name)?.requiresConfirmation) continue;
    const key = toolApprovalPath(keyBase, call.id);
    const answer = ctx.restored.get(key) as StoredResolution | undefined;
    if (answer?.kind === "tool") {
      approvals.set(call.id, answer.confirmed);
      continue;
    }
    const open = ctx.restored.get(`${key}${WAIT_SUFFIX}`) as WaitRecord | undefined;
    if (open) throw ctx.resumeWait(key, open);
    let args: unknown = call.arguments;
    try {
      args = JSON.parse(call.arguments) as unknown;
    } catch {
      // Shown as the text the model wrote.
    }
    const { record, events } = toolPause(loc, { name: agent.name, runId: state.agentRunId }, { id: call.id, name: call.name, args: toJsonSafe(args) });
    const statePath = agentStatePath(keyBase, state.round);
    // The conversation so far goes with the first pause of this round.
    if (!ctx.restored.has(statePath)) ctx.emit(events[0]!, { path: statePath, stepName: null, output: toJsonSafe(state) });
    const rest = ctx.restored.has(statePath) ? events : events.slice(1);
    throw ctx.openWait(key, record, [...rest, workflowPaused(record, ctx.resolvedRequirements())]);
  }
  return approvals;
}

/** Runs one tool call; a failure becomes the tool's answer to the model, not the step's failure. */
async function runTool(
  ctx: RunContext,
  agent: AgentDefinition,
  base: StepLocation & { agent_run_id: string },
  call: ToolCall,
  approved: boolean,
  trace: Context,
): Promise<string> {
  let args: unknown = call.arguments;
  try {
    args = call.arguments.trim() === "" ? {} : (JSON.parse(call.arguments) as unknown);
  } catch {
    // Reported below as invalid arguments.
  }
  const common = { ...base, tool_call_id: call.id, tool_name: call.name, tool_args: toJsonSafe(args) };
  ctx.emit({ event: "ToolCallStarted", ...common });
  const span = startChildSpan(trace, `flowd.tool_call ${call.name}`, {
    "flowd.run_id": ctx.runId,
    "flowd.step_path": base.step_path,
    "flowd.agent_run_id": base.agent_run_id,
    "flowd.tool_call_id": call.id,
    "gen_ai.tool.name": call.name,
  });
  const started = performance.now();
  let result: unknown = null;
  let failure: string | null = null;
  const tool = agent.tools.find((t) => t.name === call.name);
  if (!approved) {
    failure = "a person rejected this call; do not retry it, answer without it";
  } else if (!tool) {
    failure = `unknown tool "${call.name}"; available: ${agent.tools.map((t) => t.name).join(", ") || "none"}`;
  } else if (typeof args === "string") {
    failure = `arguments are not valid JSON: ${call.arguments}`;
  } else {
    const parsed = tool.parameters.safeParse(args);
    if (!parsed.success) {
      failure = `invalid arguments: ${parsed.error.issues.map((i) => `${i.path.join(".") || "arguments"}: ${i.message}`).join("; ")}`;
    } else {
      try {
        result = toJsonSafe(await tool.execute(parsed.data, { signal: ctx.signal, runId: ctx.runId }));
      } catch (error) {
        if (ctx.signal.aborted) {
          endSpan(span);
          throw error;
        }
        failure = errorMessage(error);
      }
    }
  }
  endSpan(span, failure === null ? undefined : new Error(failure));
  ctx.emit({ event: "ToolCallCompleted", ...common, result, error: failure, duration_ms: elapsed(started) });
  return failure === null ? asText(result) : `Error: ${failure}`;
}
