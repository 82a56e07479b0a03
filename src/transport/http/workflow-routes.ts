import type { FastifyInstance } from "fastify";
import type { WorkflowDefinition, WorkflowNode } from "../../workflows/definition.ts";
import type { WorkflowNodeJson } from "../../protocol/http-responses.ts";
import type { HttpDeps } from "./app.ts";

function nodeJson(node: WorkflowNode): WorkflowNodeJson {
  switch (node.kind) {
    case "step":
      return { name: node.name, type: node.kind };
    case "steps":
    case "parallel":
      return { name: node.name, type: node.kind, steps: node.steps.map(nodeJson) };
    case "condition":
      return { name: node.name, type: node.kind, steps: node.steps.map(nodeJson), else_steps: node.elseSteps.map(nodeJson) };
    case "loop":
      return { name: node.name, type: node.kind, steps: node.steps.map(nodeJson), max_iterations: node.maxIterations };
    case "router":
      return { name: node.name, type: node.kind, steps: node.choices.map(nodeJson) };
  }
}

function summary(workflow: WorkflowDefinition): { id: string; name: string; description: string } {
  return { id: workflow.id, name: workflow.name, description: workflow.description };
}

/** `GET /workflows` and `GET /workflows/{id}`. */
export function registerWorkflowRoutes(app: FastifyInstance, deps: HttpDeps): void {
  app.get("/workflows", async () => deps.workflows.list().map(summary));
  app.get<{ Params: { workflowId: string } }>("/workflows/:workflowId", async (request) => {
    const workflow = deps.workflows.get(request.params.workflowId);
    return { ...summary(workflow), steps: workflow.steps.map(nodeJson) };
  });
}
