/** flowd's public API: serve workflows, and the definition vocabulary. */
export { serve, type FlowdServer, type ServeOptions } from "./serve.ts";
export {
  Condition,
  Loop,
  Parallel,
  Router,
  Step,
  Steps,
  Workflow,
  customEvent,
  NonRetryableError,
  type SignalOutcome,
  type StepOptions,
  type StepInput,
  type StepExecutor,
  type StepChunk,
  type WorkflowDefinition,
  type WorkflowNode,
} from "./workflows/definition.ts";
export { contentCreationWorkflow } from "./workflows/content-creation.ts";
export { Agent, tool, type AgentDefinition, type ToolDefinition, type ToolContext } from "./agents/agent.ts";
export { hackerNewsTools } from "./agents/hacker-news.ts";
export { FlowdError, type ErrorCode } from "./errors.ts";
