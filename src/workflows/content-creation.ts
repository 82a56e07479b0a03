import { Agent } from "../agents/agent.ts";
import { hackerNewsTools, type HackerNewsOptions } from "../agents/hacker-news.ts";
import { Step, Workflow, type WorkflowDefinition } from "./definition.ts";

/** The built-in workflow's id, as in the AgentOS seed. */
export const CONTENT_CREATION_WORKFLOW_ID = "content-creation-workflow";

/**
 * `content-creation-workflow`, as in the AgentOS seed: a research agent with Hacker News
 * tools, then a content planner. With no OPENAI_API_KEY both stream the offline demo
 * model's text at a human pace.
 */
export function contentCreationWorkflow(
  options: { researchModel?: string | null; plannerModel?: string | null; hackerNews?: HackerNewsOptions } = {},
): WorkflowDefinition {
  const researcher = Agent({
    name: "Research Agent",
    ...(options.researchModel ? { model: options.researchModel } : {}),
    instructions:
      "You are a research agent. Research the topic you are given: use the Hacker News tools to find what " +
      "practitioners discuss, then write concise research notes with key findings, open questions and sources.",
    tools: hackerNewsTools(options.hackerNews),
  });
  const planner = Agent({
    name: "Content Planner",
    ...(options.plannerModel ? { model: options.plannerModel } : {}),
    instructions:
      "You are a content planner. From the research notes of the earlier step, write a four-week content plan " +
      "for the topic: one piece per week with its format and goal, and how success will be measured.",
  });
  return Workflow({
    id: CONTENT_CREATION_WORKFLOW_ID,
    name: "Content Creation Workflow",
    description: "Researches a topic with Hacker News, then plans content about it (offline demo model when no key is set).",
    steps: [Step({ name: "Research Step", agent: researcher }), Step({ name: "Content Planning Step", agent: planner })],
  });
}
