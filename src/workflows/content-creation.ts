import { setTimeout as sleep } from "node:timers/promises";
import { Step, Workflow, type StepInput, type WorkflowDefinition } from "./definition.ts";

/** The built-in workflow's id, as in the AgentOS seed. */
export const CONTENT_CREATION_WORKFLOW_ID = "content-creation-workflow";

function topicOf(message: string): string {
  const topic = message.trim().replace(/\s+/g, " ");
  return topic === "" ? "the topic you gave" : topic;
}

/** Research notes built from the message: deterministic, so runs are reproducible. */
function researchNotes(topic: string): string[] {
  return [
    `Research brief: "${topic}".`,
    "Offline demo content (no model configured).",
    "Finding 1: interest in the subject has grown steadily,",
    "with most discussion centred on practical use",
    "rather than theory.",
    "Finding 2: readers ask for worked examples,",
    "clear trade-offs and honest limits.",
    "Finding 3: the strongest sources",
    "share reproducible measurements",
    "and say how they were taken.",
    "Finding 4: tooling matters as much as ideas;",
    "people adopt what they can try in minutes.",
    "Finding 5: reliability questions come up often:",
    "what happens on failure, on restart,",
    "and under load.",
    "Open questions: which audiences",
    "are under-served,",
    "and which formats reach them best?",
    "Sources to follow up: community forums,",
    "recent conference talks,",
    "and practitioner blogs.",
    "Summary: focus on practical guidance,",
    "evidence, and hands-on examples",
    `for "${topic}".`,
  ].flatMap(splitIntoTokens);
}

function contentPlan(topic: string): string[] {
  return [
    `Content plan for "${topic}".`,
    "Week 1: an explainer post",
    "that defines the terms",
    "and shows one end-to-end example.",
    "Week 2: a hands-on tutorial",
    "with code readers can run",
    "in under ten minutes.",
    "Week 3: a case study",
    "with real measurements",
    "and the lessons learned.",
    "Week 4: a myths-and-facts piece",
    "answering the open questions",
    "from the research.",
    "Formats: long-form article,",
    "short video walkthrough,",
    "and a thread of key takeaways.",
    "Success measures: time on page,",
    "tutorial completions,",
    "and questions asked.",
    "Next step: draft the week 1 outline.",
  ].flatMap(splitIntoTokens);
}

/** Splits a phrase into word-sized chunks, like a model streaming tokens. */
function splitIntoTokens(phrase: string): string[] {
  return phrase.split(/(?<= )/).reduce<string[]>((chunks, word, i) => {
    if (i % 2 === 0) chunks.push(word);
    else chunks[chunks.length - 1] += word;
    return chunks;
  }, []).map((chunk, i, all) => (i === all.length - 1 ? `${chunk} ` : chunk));
}

async function* streamAtPace(chunks: readonly string[], paceMs: number, signal: AbortSignal): AsyncGenerator<string, string> {
  for (const chunk of chunks) {
    if (paceMs > 0) await sleep(paceMs, undefined, { signal });
    yield chunk;
  }
  return chunks.join("").trim();
}

/**
 * `content-creation-workflow`: a research step and a content-planning step, each streaming
 * its text as RunContent events at a human pace. This is offline demo content until agents
 * with a model are configured.
 */
export function contentCreationWorkflow(options: { paceMs: number }): WorkflowDefinition {
  const { paceMs } = options;
  return Workflow({
    id: CONTENT_CREATION_WORKFLOW_ID,
    name: "Content Creation Workflow",
    description: "Researches a topic, then plans content about it (offline demo content when no model is configured).",
    steps: [
      Step({
        name: "Research Step",
        executor: (input: StepInput) => streamAtPace(researchNotes(topicOf(input.message)), paceMs, input.signal),
      }),
      Step({
        name: "Content Planning Step",
        executor: (input: StepInput) => streamAtPace(contentPlan(topicOf(input.message)), paceMs, input.signal),
      }),
    ],
  });
}
