import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { errorMessage, Errors } from "../errors.ts";
import type { WorkflowDefinition } from "../workflows/definition.ts";

/** Loads a module whose default export is a workflow or a list of them (TypeScript loads as-is). */
export async function loadWorkflows(path: string): Promise<WorkflowDefinition[]> {
  const absolute = resolve(path);
  if (!existsSync(absolute)) {
    throw Errors.workflowsModuleMissing(path, absolute);
  }
  let module: { default?: unknown };
  try {
    // tsImport loads .ts as-is whether its folder's package.json says ESM or CommonJS;
    // it is imported only here, so a server without --workflows does not pay for it.
    const { tsImport } = await import("tsx/esm/api");
    module = (await tsImport(absolute, import.meta.url)) as { default?: unknown };
  } catch (error) {
    throw Errors.invalidWorkflow(`Cannot load workflows module "${path}": ${errorMessage(error)}`, { cause: error });
  }
  // A CommonJS-compiled module arrives as { default: module.exports }.
  const outer = module.default as { kind?: unknown; default?: unknown } | undefined;
  const exported = outer && !Array.isArray(outer) && outer.kind === undefined && "default" in outer ? outer.default : outer;
  const list = Array.isArray(exported) ? exported : [exported];
  if (exported === undefined || list.some((w) => (w as { kind?: unknown } | null)?.kind !== "workflow")) {
    throw Errors.invalidWorkflow(`Workflows module "${path}" must default-export a Workflow({ id, name, steps }) or an array of them.`,
    );
  }
  return list as WorkflowDefinition[];
}
