import { z } from "zod";
import { Errors } from "../../errors.ts";
import { Id, SignalName } from "../../protocol/fields.ts";
import {
  ContinueRunBody,
  EventsQuery,
  ListAllRunsQuery,
  ListRunsQuery,
  PruneBody,
  ReadTokenBody,
  StreamQuery,
  ResumeRunBody,
  StartRunBody,
  StartRunHeaders,
} from "../../protocol/http-requests.ts";
import { CancelAnswer, ErrorBody, EventsPage, HealthBody, PruneAnswer, ReadTokenAnswer, RunDeleted, SignalAccepted, WorkflowDetail, WorkflowNodeJson, WorkflowSummary } from "../../protocol/http-responses.ts";
import { RunJson } from "../../protocol/run-json.ts";

/** One answer of a route: JSON of a schema, an SSE stream of run events, or nothing. */
type Answer = { description: string; json?: z.ZodType; sse?: true; html?: true; text?: true };

/** A route of the HTTP API, described from the same zod schemas its handler validates with. */
export interface RouteDescription {
  method: "GET" | "POST" | "DELETE" | "PUT" | "PATCH";
  /** OpenAPI form: `/workflows/{workflow_id}/runs`. */
  path: string;
  summary: string;
  description?: string;
  tag: "runs" | "workflows" | "server";
  query?: z.ZodObject;
  headers?: z.ZodObject;
  /** Bodies are JSON or forms (application/x-www-form-urlencoded), but for signals (any JSON). */
  body?: z.ZodType;
  answers: Record<number, Answer>;
  /** Served without a key even when FLOWD_SECURITY_KEY is set. */
  open?: true;
}

const PATH_PARAMETERS: Record<string, { schema: z.ZodType; description: string }> = {
  workflow_id: { schema: Id, description: "A workflow's id, as `GET /workflows` lists it." },
  run_id: { schema: Id, description: "A run's id." },
  name: { schema: SignalName, description: "The signal's name, as the workflow waits for it." },
};

const run = (description: string): Answer => ({ description, json: RunJson });
const sse: Answer = { description: "The run's events as Server-Sent Events (`id: <event_index>`, `event: <type>`, `data: <frame>`), live until the terminal event.", sse: true };

/** Every route the server registers (app.ts checks it at start-up), in the order the document lists them. */
export const ROUTES: readonly RouteDescription[] = [
  {
    method: "GET",
    path: "/health",
    tag: "server",
    summary: "Whether the server can store events",
    answers: { 200: { description: "Serving.", json: HealthBody }, 503: { description: "Cannot store events now (see `code`).", json: HealthBody } },
    open: true,
  },
  { method: "GET", path: "/workflows", tag: "workflows", summary: "The workflows served", answers: { 200: { description: "Each workflow.", json: z.array(WorkflowSummary) } } },
  { method: "GET", path: "/workflows/{workflow_id}", tag: "workflows", summary: "A workflow and its step tree", answers: { 200: { description: "The workflow.", json: WorkflowDetail } } },
  {
    method: "POST",
    path: "/workflows/{workflow_id}/runs",
    tag: "runs",
    summary: "Start a run",
    description: "With `stream` (the default) the answer is the run's events as SSE; `stream=false` waits and answers the run once it ends or waits; `background=true` answers 202 at once. An `Idempotency-Key` header makes a repeat return the first run.",
    body: StartRunBody,
    headers: StartRunHeaders,
    answers: { 200: { ...sse, description: `${sse.description} With stream=false: the run, as JSON, once it ends or waits.`, json: RunJson }, 202: run("Started (background=true): the run as it stands.") },
  },
  { method: "GET", path: "/workflows/{workflow_id}/runs", tag: "runs", summary: "A workflow's runs, newest first", query: ListRunsQuery, answers: { 200: { description: "The runs.", json: z.array(RunJson) } } },
  { method: "GET", path: "/workflows/{workflow_id}/runs/{run_id}", tag: "runs", summary: "A run of a workflow", answers: { 200: run("The run.") } },
  {
    method: "POST",
    path: "/workflows/{workflow_id}/runs/{run_id}/cancel",
    tag: "runs",
    summary: "Ask a run to stop",
    description: "The run ends with `WorkflowCancelled` at its next step or content boundary. 409 if it already ended.",
    answers: { 200: { description: "The run, with a message.", json: CancelAnswer } },
  },
  { method: "POST", path: "/workflows/{workflow_id}/runs/{run_id}/resume", tag: "runs", summary: "A run's events after an index, as SSE", body: ResumeRunBody, answers: { 200: sse } },
  {
    method: "POST",
    path: "/workflows/{workflow_id}/runs/{run_id}/continue",
    tag: "runs",
    summary: "Answer a paused run's open requirement",
    description: "`step_requirements` as AgentOS sends them (confirmation, user input, route choice, tool confirmation, error decision). 409 if the run is not paused, 422 if the answer does not fit the requirement.",
    body: ContinueRunBody,
    answers: { 200: { ...sse, description: `${sse.description} With stream=false: the run, as JSON, once it ends or waits again.`, json: RunJson }, 202: run("Continued (background=true): the run as it stands.") },
  },
  {
    method: "POST",
    path: "/runs/{run_id}/signals/{name}",
    tag: "runs",
    summary: "Send a signal to a run",
    description: "The JSON body is the signal's payload. A run waiting for it takes it at once; otherwise it is kept for the run's next wait for it.",
    body: z.unknown(),
    answers: { 202: { description: "Accepted.", json: SignalAccepted } },
  },
  { method: "GET", path: "/runs", tag: "runs", summary: "Runs of every workflow, newest first", query: ListAllRunsQuery, answers: { 200: { description: "The runs.", json: z.array(RunJson) } } },
  { method: "GET", path: "/runs/{run_id}", tag: "runs", summary: "A run", answers: { 200: run("The run; `pruned_at` is set once its events are no longer kept.") } },
  {
    method: "DELETE",
    path: "/runs/{run_id}",
    tag: "runs",
    summary: "Delete a finished run and everything stored of it",
    description: "409 RUN_NOT_FINISHED while it runs, waits or is paused. Afterwards the run is unknown (404).",
    answers: { 200: { description: "Deleted.", json: RunDeleted } },
  },
  {
    method: "POST",
    path: "/runs/prune",
    tag: "runs",
    summary: "Prune finished runs: delete their events, keep their rows",
    description: "Runs finished more than `older_than` ago (or past FLOWD_RETENTION and workflows' retention), oldest first, at most `limit` per request; `more` says to ask again. With `dry_run` nothing is deleted. Reading a pruned run's events answers 410 RUN_EXPIRED.",
    body: PruneBody,
    answers: { 200: { description: "What was pruned (or would be).", json: PruneAnswer } },
  },
  {
    method: "POST",
    path: "/runs/{run_id}/read-token",
    tag: "runs",
    summary: "A short-lived token that reads this run's events, for a browser",
    description: "A browser's EventSource cannot send headers: give it `events_url`. The token reads only this run's events (GET /runs/{run_id}/events); anything else with it is 403 FORBIDDEN.",
    body: ReadTokenBody,
    answers: { 200: { description: "The token.", json: ReadTokenAnswer } },
  },
  {
    method: "GET",
    path: "/runs/{run_id}/events",
    tag: "runs",
    summary: "A run's events after an index: SSE, or a page of JSON",
    description: "After `Last-Event-ID` (header) or `?after=N` (-1: from the start). With `Accept: application/json`: a page. 204 once a finished run has nothing after the index.",
    query: EventsQuery,
    answers: { 200: { ...sse, description: `${sse.description} With Accept: application/json, a page of them.`, json: EventsPage }, 204: { description: "A finished run has nothing after the index." } },
  },
  {
    method: "GET",
    path: "/streams/runs/{run_id}",
    tag: "runs",
    summary: "A run's events as a Durable Stream (read side)",
    description:
      "ElectricSQL's Durable Streams protocol: one JSON message per event (the stored frame), offsets as `Stream-Next-Offset` (the next event_index, zero-padded), `Stream-Up-To-Date`, and `Stream-Closed` once the run's terminal event is read. HEAD gives the headers. A pruned run is 410.",
    query: StreamQuery,
    answers: {
      200: { description: "A JSON array of the run's events after the offset; with live=sse, `event: data` and `event: control` events.", json: z.array(z.record(z.string(), z.unknown())), sse: true },
      204: { description: "live=long-poll: nothing came within 20 s; ask again from the same offset." },
    },
  },
  ...(["PUT", "POST", "DELETE", "PATCH"] as const).map((method) => ({
    method,
    path: "/streams/runs/{run_id}",
    tag: "runs" as const,
    summary: "Refused: a run's stream is read-only",
    description: "405 METHOD_NOT_ALLOWED: only the engine writes a run's log.",
    answers: { 405: { description: "Not allowed (see `detail`)." } },
  })),
  { method: "GET", path: "/", tag: "server", summary: "The web inspector: runs, live", answers: { 200: { description: "An HTML page; it asks for the key when the server has one.", html: true } }, open: true },
  {
    method: "GET",
    path: "/metrics",
    tag: "server",
    summary: "Prometheus metrics",
    description:
      "Runs started and finished, events appended, commit batch sizes and latencies, subscribers, paused and waiting runs, resumes, storage failures, database size, process metrics. Needs an admin or a token with `metrics:read`; with FLOWD_METRICS_OPEN_ON_LOOPBACK=true, none from this machine.",
    answers: { 200: { description: "The Prometheus text format.", text: true } },
  },
  { method: "GET", path: "/openapi.json", tag: "server", summary: "This document", answers: { 200: { description: "OpenAPI 3.1." } }, open: true },
  { method: "GET", path: "/docs", tag: "server", summary: "This document, to read and try", answers: { 200: { description: "An HTML page.", html: true } }, open: true },
];

/** `/a/:b/c` and `/a/{b}/c` alike, for comparing Fastify's routes with the description. */
export function routeShape(path: string): string {
  return path.replace(/:[^/]+|\{[^}]+\}/g, "{}");
}

/** Throws if the server registers a route the description does not have: every route must be in /openapi.json. */
export function checkDescribed(registered: readonly { method: string; url: string }[]): void {
  const described = new Set(ROUTES.map((route) => `${route.method} ${routeShape(route.path)}`));
  for (const { method, url } of registered) {
    // Static files of the inspector and of /docs: not API routes.
    if (method === "HEAD" || method === "OPTIONS" || url === "/docs/:file" || url === "/assets/:file") continue;
    if (!described.has(`${method} ${routeShape(url)}`)) {
      throw Errors.broken(`the route ${method} ${url} is not in the API description (src/transport/http/api-description.ts): describe it there`);
    }
  }
}

type JsonSchema = Record<string, unknown>;

/** Named schemas of the document (components), requests read as input, answers as output. */
function components(): { requests: Map<z.ZodType, string>; answers: Map<z.ZodType, string>; schemas: Record<string, JsonSchema> } {
  const requests = z.registry<{ id: string }>();
  const answers = z.registry<{ id: string }>();
  const requestNames = new Map<z.ZodType, string>([
    [StartRunBody, "StartRunRequest"],
    [ContinueRunBody, "ContinueRunRequest"],
    [ResumeRunBody, "ResumeRunRequest"],
    [PruneBody, "PruneRequest"],
  ]);
  const answerNames = new Map<z.ZodType, string>([
    [RunJson, "Run"],
    [ErrorBody, "Error"],
    [HealthBody, "Health"],
    [WorkflowSummary, "WorkflowSummary"],
    [WorkflowDetail, "Workflow"],
    [WorkflowNodeJson, "WorkflowNode"],
    [EventsPage, "EventsPage"],
    [SignalAccepted, "SignalAccepted"],
    [CancelAnswer, "CancelAnswer"],
    [RunDeleted, "RunDeleted"],
    [PruneAnswer, "PruneAnswer"],
  ]);
  for (const [schema, id] of requestNames) requests.add(schema, { id });
  for (const [schema, id] of answerNames) answers.add(schema, { id });
  const uri = (id: string): string => `#/components/schemas/${id}`;
  const strip = (all: { schemas: Record<string, JsonSchema> }): Record<string, JsonSchema> =>
    Object.fromEntries(Object.entries(all.schemas).map(([id, { $schema: _, $id: __, ...schema }]) => [id, schema]));
  return {
    requests: requestNames,
    answers: answerNames,
    schemas: {
      ...strip(z.toJSONSchema(requests, { uri, io: "input", unrepresentable: "any" }) as { schemas: Record<string, JsonSchema> }),
      ...strip(z.toJSONSchema(answers, { uri, io: "output", unrepresentable: "any" }) as { schemas: Record<string, JsonSchema> }),
    },
  };
}

/** A schema inline, or a $ref to its component. */
function schemaOf(schema: z.ZodType, names: Map<z.ZodType, string>, io: "input" | "output"): JsonSchema {
  const name = names.get(schema);
  if (name) return { $ref: `#/components/schemas/${name}` };
  if (schema instanceof z.ZodArray) {
    const item = names.get(schema.element as z.ZodType);
    if (item) return { type: "array", items: { $ref: `#/components/schemas/${item}` } };
  }
  const { $schema: _, ...json } = z.toJSONSchema(schema, { io, unrepresentable: "any" }) as JsonSchema;
  return json;
}

/** The fields of an object schema as OpenAPI parameters. */
function parameters(schema: z.ZodObject, where: "query" | "header"): JsonSchema[] {
  const json = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as { properties?: Record<string, JsonSchema>; required?: string[] };
  return Object.entries(json.properties ?? {}).map(([name, property]) => ({
    name,
    in: where,
    required: json.required?.includes(name) ?? false,
    schema: property,
    ...(typeof property.description === "string" ? { description: property.description } : {}),
  }));
}

/** The OpenAPI 3.1 document of the HTTP API. */
export function openApiDocument(version: string): JsonSchema {
  const { requests, answers, schemas } = components();
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of ROUTES) {
    const pathParameters = [...route.path.matchAll(/\{([^}]+)\}/g)].map(([, name]) => {
      const parameter = PATH_PARAMETERS[name!]!;
      return { name, in: "path", required: true, description: parameter.description, schema: schemaOf(parameter.schema, answers, "input") };
    });
    const responses: Record<string, JsonSchema> = {};
    for (const [status, answer] of Object.entries(route.answers)) {
      const content: Record<string, JsonSchema> = {};
      if (answer.json) content["application/json"] = { schema: schemaOf(answer.json, answers, "output") };
      if (answer.sse) content["text/event-stream"] = { schema: { type: "string" } };
      if (answer.html) content["text/html"] = { schema: { type: "string" } };
      if (answer.text) content["text/plain"] = { schema: { type: "string" } };
      responses[status] = { description: answer.description, ...(Object.keys(content).length > 0 ? { content } : {}) };
    }
    responses.default = { description: "An error: what is wrong and what to do (`detail`), and a stable `code`.", content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } };
    const body = route.body
      ? {
          requestBody: {
            required: false,
            content:
              route.body instanceof z.ZodObject
                ? {
                    "application/json": { schema: schemaOf(route.body, requests, "input") },
                    "application/x-www-form-urlencoded": { schema: schemaOf(route.body, requests, "input") },
                  }
                : { "application/json": { schema: {} } },
          },
        }
      : {};
    (paths[route.path] ??= {})[route.method.toLowerCase()] = {
      operationId: `${route.method.toLowerCase()}${route.path.replace(/\{([^}]+)\}/g, "By_$1").replace(/[^a-zA-Z0-9]+(.)?/g, (_, c: string | undefined) => (c ?? "").toUpperCase())}`,
      summary: route.summary,
      ...(route.description ? { description: route.description } : {}),
      tags: [route.tag],
      parameters: [...pathParameters, ...(route.query ? parameters(route.query, "query") : []), ...(route.headers ? parameters(route.headers, "header") : [])],
      ...body,
      responses,
      ...(route.open ? { security: [] } : {}),
    };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "flowd",
      version,
      description:
        "A durable workflow run server. Runs are started and watched over this HTTP API (SSE streams) or the WebSocket at /workflows/ws (the AgentOS workflow protocol, in the README). Every event is stored with its run's next event_index before anyone sees it, so a client resumes after the last index it has.",
    },
    tags: [
      { name: "runs", description: "Start, watch, cancel, continue and signal runs." },
      { name: "workflows", description: "The workflows this server serves." },
      { name: "server", description: "Health and this document." },
    ],
    paths,
    components: {
      schemas,
      securitySchemes: {
        key: {
          type: "http",
          scheme: "bearer",
          description:
            "FLOWD_SECURITY_KEY, or a JWT (FLOWD_JWT_SECRET / FLOWD_JWT_PUBLIC_KEY) whose sub is the user and whose scopes say what they may do; without either, no token is needed. A missing scope is 403 FORBIDDEN.",
        },
      },
    },
    security: [{ key: [] }, {}],
  };
}
