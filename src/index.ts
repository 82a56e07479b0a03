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
  type StepInput,
  type StepExecutor,
  type StepChunk,
  type WorkflowDefinition,
  type WorkflowNode,
} from "./workflows/definition.ts";
export { contentCreationWorkflow } from "./workflows/content-creation.ts";
export { FlowdError, type ErrorCode } from "./errors.ts";
