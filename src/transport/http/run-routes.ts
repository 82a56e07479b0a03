import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { Errors } from "../../errors.ts";
import { parseStepRequirements } from "../../protocol/hitl.ts";
import { ContinueRunBody, EventsQuery, ListAllRunsQuery, ListRunsQuery, PruneBody, ReadTokenBody, ResumeRunBody, SignalParams, StartRunBody, StartRunHeaders } from "../../protocol/http-requests.ts";
import type { Principal } from "../../auth/principal.ts";
import { toRunJson, type RunJson } from "../../protocol/run-json.ts";
import { CANCEL_REQUESTED_MESSAGE } from "../../protocol/server-frames.ts";
import { isFinished, SUSPENDED_STATUSES } from "../../protocol/run-status.ts";
import type { RunRow } from "../../store/store.ts";
import type { HttpDeps } from "./app.ts";
import { streamRunAsSse } from "./sse-stream.ts";
import { parseInput } from "./validate.ts";

type WorkflowParams = { Params: { workflowId: string } };
type RunParams = { Params: { workflowId: string; runId: string } };

async function findRun(deps: HttpDeps, runId: string): Promise<RunRow> {
  const run = await deps.runStore.get(runId);
  if (!run) throw Errors.runNotFound(runId);
  return run;
}

/** The run, if the caller may know of it: another user's, under isolation, is answered as one that does not exist. */
async function visibleRun(deps: HttpDeps, principal: Principal, runId: string): Promise<RunRow> {
  return deps.permissions.see(principal, runId, await deps.runStore.get(runId));
}

async function findRunOfWorkflow(deps: HttpDeps, principal: Principal, workflowId: string, runId: string): Promise<RunRow> {
  const run = await visibleRun(deps, principal, runId);
  if (run.workflowId !== workflowId) {
    throw Errors.runOfOtherWorkflow(runId, workflowId, run.workflowId);
  }
  return run;
}

/** Runs, newest first: of one workflow, or of all; only the caller's own where that is all they may see. */
async function listRuns(deps: HttpDeps, principal: Principal, workflowId: string | undefined, query: ListRunsQuery): Promise<RunJson[]> {
  deps.permissions.list(principal);
  const userId = deps.permissions.listedUser(principal);
  const runs = await deps.runStore.list({
    ...(workflowId ? { workflowId } : {}),
    ...(userId !== null ? { userId } : {}),
    ...(query.session_id ? { sessionId: query.session_id } : {}),
    ...(query.status ? { status: query.status } : {}),
    limit: query.limit,
    offset: query.offset,
  });
  return runs.map(toRunJson);
}

/** The run, if its events are still kept: a pruned run's are not (410 RUN_EXPIRED, never an empty success). */
function withEvents(run: RunRow): RunRow {
  if (run.prunedAt !== null) throw Errors.runExpired(run.runId, run.prunedAt);
  return run;
}

/** Hands the raw response to an SSE stream of the run from `afterIndex`, with the headers set so far (CORS); it ends when the caller's token expires. */
function sse(deps: HttpDeps, reply: FastifyReply, runId: string, afterIndex: number): void {
  const expiresAt = reply.request.principal.expiresAt ?? null;
  reply.hijack();
  const context = {
    eventLog: deps.eventLog,
    streams: deps.sseStreams,
    outbounds: deps.outbounds,
    feed: deps.feed,
    heartbeatMs: deps.config.sseHeartbeatMs,
    logger: deps.logger,
  };
  streamRunAsSse(reply.raw, reply.getHeaders(), context, runId, afterIndex, expiresAt);
}

/**
 * Resolves once the run has its terminal event or waits (paused, waiting), or when the
 * client goes away (the run goes on); rejects with the reason if no more of the run's
 * events can come from this server (its events could not be stored).
 */
async function untilFinished(deps: HttpDeps, reply: FastifyReply, runId: string, after?: number): Promise<void> {
  const from = after ?? (await deps.runStore.get(runId))?.lastEventIndex ?? -1;
  return new Promise((resolve, reject) => {
    let waits = false;
    const stop = deps.eventLog.follow(runId, from, {
      events: () => {
        // Delivered after the commit that stored it: the run row says whether the run now waits.
        void deps.runStore.get(runId).then(
          (row) => {
            if (!waits && row !== undefined && SUSPENDED_STATUSES.has(row.status)) {
              waits = true;
              stop();
              resolve();
            }
          },
          reject,
        );
      },
      ended: resolve,
      failed: reject,
    });
    // The response's close (not the request's: that fires once the body is read) means the client left.
    reply.raw.once("close", () => {
      stop();
      resolve();
    });
  });
}

/** The index after which to send events: Last-Event-ID (what EventSource sends back) wins over ?after. */
function resumePoint(request: FastifyRequest, after: number | undefined): number {
  const header = request.headers["last-event-id"];
  if (typeof header === "string" && header.trim() !== "") {
    if (!/^\s*-?\d+\s*$/.test(header)) {
      throw Errors.invalidLastEventId(header);
    }
    return Math.max(-1, Number(header));
  }
  return after ?? -1;
}

function wantsJson(request: FastifyRequest): boolean {
  const accept = request.headers.accept ?? "";
  return accept.includes("application/json") && !accept.includes("text/event-stream");
}

/** Runs: start, list, show, cancel, resume, and the event stream. */
export function registerRunRoutes(app: FastifyInstance, deps: HttpDeps): void {
  app.post<WorkflowParams>("/workflows/:workflowId/runs", async (request, reply) => {
    const body = parseInput(StartRunBody, request.body, "run request");
    const headers = parseInput(StartRunHeaders, request.headers, "run request's headers");
    deps.permissions.start(request.principal, request.params.workflowId);
    const run = await deps.engine.start({
      workflowId: request.params.workflowId,
      message: body.message,
      sessionId: body.session_id,
      userId: deps.permissions.startedBy(request.principal, body.user_id),
      additionalData: body.additional_data,
      idempotencyKey: deps.permissions.idempotencyKey(request.principal, headers["idempotency-key"]),
      traceparent: headers.traceparent,
    });
    if (body.background) {
      // Answer with the run as started (WorkflowStarted committed), not as merely created.
      await deps.eventLog.committed(run.runId);
      return reply.status(202).send(toRunJson(await findRun(deps, run.runId)));
    }
    if (body.stream) return sse(deps, reply, run.runId, -1);
    await untilFinished(deps, reply, run.runId);
    return toRunJson(await findRun(deps, run.runId));
  });

  app.get<WorkflowParams>("/workflows/:workflowId/runs", async (request) => {
    const workflow = deps.workflows.get(request.params.workflowId);
    return listRuns(deps, request.principal, workflow.id, parseInput(ListRunsQuery, request.query, "run list query"));
  });

  app.get<RunParams>("/workflows/:workflowId/runs/:runId", async (request) => {
    const run = await findRunOfWorkflow(deps, request.principal, request.params.workflowId, request.params.runId);
    deps.permissions.readRow(request.principal, run);
    return toRunJson(run);
  });

  app.post<RunParams>("/workflows/:workflowId/runs/:runId/cancel", async (request) => {
    const run = await findRunOfWorkflow(deps, request.principal, request.params.workflowId, request.params.runId);
    deps.permissions.act(request.principal, run);
    await deps.engine.cancel(run.runId);
    return {
      ...toRunJson(await findRun(deps, run.runId)),
      message: CANCEL_REQUESTED_MESSAGE,
    };
  });

  app.post<RunParams>("/workflows/:workflowId/runs/:runId/resume", async (request, reply) => {
    const run = await findRunOfWorkflow(deps, request.principal, request.params.workflowId, request.params.runId);
    deps.permissions.read(request.principal, run);
    withEvents(run);
    const body = parseInput(ResumeRunBody, request.body, "resume request");
    sse(deps, reply, run.runId, body.last_event_index ?? -1);
  });

  app.post<RunParams>("/workflows/:workflowId/runs/:runId/continue", async (request, reply) => {
    const run = await findRunOfWorkflow(deps, request.principal, request.params.workflowId, request.params.runId);
    deps.permissions.act(request.principal, run);
    const body = parseInput(ContinueRunBody, request.body, "continue request");
    const answers = parseStepRequirements(run.runId, body.step_requirements);
    const before = await deps.engine.continueRun(run.runId, answers);
    if (body.background) {
      await deps.eventLog.committed(run.runId);
      return reply.status(202).send(toRunJson(await findRun(deps, run.runId)));
    }
    if (body.stream) return sse(deps, reply, run.runId, before.lastEventIndex);
    await untilFinished(deps, reply, run.runId, before.lastEventIndex);
    return toRunJson(await findRun(deps, run.runId));
  });

  app.post<{ Params: { runId: string; name: string } }>("/runs/:runId/signals/:name", async (request, reply) => {
    const params = parseInput(SignalParams, request.params, "signal request");
    deps.permissions.act(request.principal, await visibleRun(deps, request.principal, params.runId));
    const { run, delivered } = await deps.engine.signal(params.runId, params.name, request.body ?? null);
    return reply.status(202).send({ run_id: run.runId, name: params.name, delivered, message: delivered ? "The run's wait for this signal ended." : "Kept for the run's next wait for this signal." });
  });

  app.get("/runs", async (request) => {
    const query = parseInput(ListAllRunsQuery, request.query, "run list query");
    return listRuns(deps, request.principal, query.workflow_id, query);
  });

  app.delete<{ Params: { runId: string } }>("/runs/:runId", async (request) => {
    const { runId } = request.params;
    deps.permissions.delete(request.principal, await visibleRun(deps, request.principal, runId));
    await deps.pruner.deleteRun(runId);
    return { run_id: runId, deleted: true, message: `Run ${runId} and everything stored of it are deleted.` };
  });

  app.post("/runs/prune", async (request) => {
    deps.permissions.administer(request.principal, "prune runs");
    const body = parseInput(PruneBody, request.body, "prune request");
    if (body.older_than === undefined && !deps.pruner.hasRules) {
      throw Errors.invalidRequest("Nothing says which runs to prune: give older_than (e.g. \"7d\"), or set FLOWD_RETENTION or a workflow's retention.");
    }
    const result = await deps.pruner.prune({ olderThanMs: body.older_than ?? null, workflowId: body.workflow_id ?? null, dryRun: body.dry_run, limit: body.limit });
    return {
      dry_run: body.dry_run,
      runs: result.runs.map((run) => ({ run_id: run.runId, workflow_id: run.workflowId, finished_at: run.finishedAt, events: run.events })),
      events: result.events,
      more: result.more,
    };
  });

  app.get<{ Params: { runId: string } }>("/runs/:runId", async (request) => {
    const run = await visibleRun(deps, request.principal, request.params.runId);
    deps.permissions.readRow(request.principal, run);
    return toRunJson(run);
  });

  app.post<{ Params: { runId: string } }>("/runs/:runId/read-token", async (request) => {
    const run = await visibleRun(deps, request.principal, request.params.runId);
    deps.permissions.readRow(request.principal, run);
    const body = parseInput(ReadTokenBody, request.body ?? {}, "read-token request");
    const { token, expiresAt } = await deps.auth.tokens.issueReadToken(run.runId, request.principal.userId, Math.round(body.expires_in / 1000));
    return {
      run_id: run.runId,
      token,
      expires_at: expiresAt,
      events_url: `/runs/${encodeURIComponent(run.runId)}/events?token=${token}`,
    };
  });

  app.get<{ Params: { runId: string } }>("/runs/:runId/events", async (request, reply) => {
    const run = await visibleRun(deps, request.principal, request.params.runId);
    deps.permissions.read(request.principal, run);
    withEvents(run);
    const query = parseInput(EventsQuery, request.query, "events query");
    const after = resumePoint(request, query.after);
    if (!wantsJson(request)) {
      // Nothing will ever follow: 204 tells a browser EventSource to stop reconnecting.
      if (isFinished(run.status) && after >= run.lastEventIndex) return reply.status(204).send();
      return sse(deps, reply, run.runId, after);
    }
    // A page of stored frames, spliced in as-is: each was serialized once, at append.
    const page = await deps.eventLog.readPage(run.runId, after, query.limit);
    const frames = page?.batch.events.filter((event) => event.event !== "gap").map((event) => event.frame) ?? [];
    // Indices compaction folded away: named, so that a reader never takes them for a loss.
    const gaps = page?.batch.events.filter((event) => event.event === "gap").map((event) => event.frame) ?? [];
    const last = page?.batch.last.index ?? after;
    const hasMore = last < run.lastEventIndex;
    const body =
      `{"run_id":${JSON.stringify(run.runId)},"status":${JSON.stringify(run.status)},` +
      `"finished":${isFinished(run.status)},"events":[${frames.join(",")}],"gaps":[${gaps.join(",")}],"next_after":${last},"has_more":${hasMore}}`;
    return reply.type("application/json").send(body);
  });
}
