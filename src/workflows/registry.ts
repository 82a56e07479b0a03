import { Errors } from "../errors.ts";
import type { WorkflowDefinition } from "./definition.ts";

/** The workflows a server runs, by id. Ids are unique: a duplicate is a start-up error naming both. */
export class WorkflowRegistry {
  private readonly byId = new Map<string, WorkflowDefinition>();

  constructor(workflows: readonly WorkflowDefinition[]) {
    for (const workflow of workflows) {
      if (workflow?.kind !== "workflow") {
        throw Errors.invalidWorkflow(`Expected workflows made with Workflow({ id, name, steps }), got ${JSON.stringify(workflow) ?? String(workflow)}.`,
        );
      }
      const existing = this.byId.get(workflow.id);
      if (existing) {
        throw Errors.duplicateWorkflow(workflow.id, existing.name, workflow.name);
      }
      this.byId.set(workflow.id, workflow);
    }
  }

  /** The workflow, or a WORKFLOW_NOT_FOUND error that lists what exists. */
  /** Whether this server runs the workflow. */
  has(id: string): boolean {
    return this.byId.has(id);
  }

  get(id: string): WorkflowDefinition {
    const workflow = this.byId.get(id);
    if (!workflow) {
      const known = [...this.byId.keys()].join(", ") || "none";
      throw Errors.workflowNotFound(id, known);
    }
    return workflow;
  }

  /** All workflows, in the order given. */
  list(): WorkflowDefinition[] {
    return [...this.byId.values()];
  }
}
