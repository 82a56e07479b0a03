import type { Logger } from "pino";
import { ModelProvider } from "./agents/model-provider.ts";
import { resolveConfig, type ConfigFlags, type FlowdConfig } from "./config.ts";
import { Errors } from "./errors.ts";
import { Engine } from "./engine/engine.ts";
import { createLogger } from "./log.ts";
import { openStore } from "./store/open-store.ts";
import { isLoopback } from "./transport/access.ts";
import type { CommittedEvent } from "./protocol/run-events.ts";
import { Metrics } from "./ops/metrics.ts";
import type { Store } from "./store/store.ts";
import type { RunFeed } from "./transport/run-feed.ts";
import { Pruner } from "./store/pruner.ts";
import { createTransport } from "./transport/server.ts";
import { contentCreationWorkflow } from "./workflows/content-creation.ts";
import type { WorkflowDefinition } from "./workflows/definition.ts";
import { WorkflowRegistry } from "./workflows/registry.ts";

/** Options for `serve()`: each wins over its environment variable, which wins over the default. */
export interface ServeOptions extends Omit<ConfigFlags, "workflows"> {
  /** The workflows to serve; the built-in ones when omitted. */
  workflows?: readonly WorkflowDefinition[];
  /** A logger to use instead of the default JSON logger on stdout. */
  logger?: Logger;
}

/** A running flowd server. */
export interface FlowdServer {
  readonly config: FlowdConfig;
  /** `http://host:port` */
  readonly url: string;
  /** `ws://host:port/workflows/ws` */
  readonly wsUrl: string;
  readonly port: number;
  readonly logger: Logger;
  /** Stops accepting, closes sockets, stops runs at their next boundary (resumable), closes the database. */
  close(): Promise<void>;
}

/** The workflows served when none are given. */
export function builtinWorkflows(config: FlowdConfig): WorkflowDefinition[] {
  return [contentCreationWorkflow({ researchModel: config.researchModel, plannerModel: config.plannerModel })];
}

/** The models agents use: the configured OpenAI-compatible endpoint, or the offline demo model. */
export function modelProvider(config: FlowdConfig): ModelProvider {
  return new ModelProvider({
    apiKey: config.openaiApiKey,
    baseUrl: config.openaiBaseUrl,
    defaultModel: config.defaultModel,
    timeoutMs: config.modelTimeoutMs,
    maxRetries: config.modelRetries,
    retryBaseMs: 500,
    demoPaceMs: config.demoPaceMs,
  });
}

/** Unsent bytes above which a subscriber leaves live delivery and reads the log at its own pace (I6). */
export const SUBSCRIBER_HIGH_WATER_BYTES = 1024 * 1024;
/**
 * Events per page when a subscriber catches up from the log (a page also ends at ~512 KB).
 * Each page costs a turn of the event loop and a write, so bigger pages catch up faster,
 * for more memory per subscriber (bench/README.md has the measurements).
 */
const FEED_PAGE_SIZE = 1000;

/** Close code sent to WebSocket clients when the server stops: 1012 "service restart" tells them to reconnect. */
export const SHUTDOWN_CLOSE_CODE = 1012;
/** How long runs get to reach a step boundary on shutdown, then a content boundary; with the socket close, well under 10 s. */
const SHUTDOWN_DRAIN_MS = 4000;
const SHUTDOWN_ABORT_MS = 2000;

/**
 * Starts flowd: opens and migrates the database, then serves HTTP and the workflow
 * WebSocket on one port. `AgentOS(workflows=[...]).serve()`, in TypeScript.
 */
export async function serve(options: ServeOptions = {}): Promise<FlowdServer> {
  const { workflows: given, logger: givenLogger, ...flags } = options;
  const config = resolveConfig(flags);
  const logger = givenLogger ?? createLogger(config.logLevel);
  const workflows = given ? [...given] : builtinWorkflows(config);
  const registry = new WorkflowRegistry(workflows);

  // The log reports a failed commit to the engine, which stops that run (it resumes at the next start).
  let engine: Engine | null = null;
  let opened: Store | null = null;
  const feeds = new Set<RunFeed>();
  const metrics = config.metrics
    ? new Metrics({
        feeds: () => feeds,
        suspendedRuns: async () => (opened ? opened.runs.suspendedCounts() : { paused: 0, waiting: 0 }),
        storageBytes: async () => (opened ? opened.storageBytes() : { database: 0, wal: null }),
      })
    : null;
  const store = await openStore(config, {
    onAppendError: (error, runId) => {
      metrics?.storageFailed();
      engine?.onStorageFailure(runId, error);
    },
    ...(metrics ? { onCommitted: (events: readonly CommittedEvent[], seconds: number) => metrics.committed(events, seconds) } : {}),
    onListenerError: (error, runId) => logger.error({ err: error, runId }, "live listener failed"),
    onBackgroundError: (error, what) => logger.error({ err: error }, what),
    onLost: (runId, error) => engine?.onLost(runId, error),
  });
  opened = store;
  const models = modelProvider(config);
  engine = new Engine(registry, store, logger, {
    maxCrashResumes: config.maxCrashResumes,
    maxActiveRuns: config.maxActiveRuns,
    idempotencyTtlMs: config.idempotencyTtlMs,
    models,
  });
  const retentionRules = {
    defaultMs: config.retentionMs,
    compactAfterMs: config.compactAfterMs,
    byWorkflow: new Map(registry.list().flatMap((workflow) => (workflow.retentionMs === null ? [] : [[workflow.id, workflow.retentionMs] as const]))),
  };
  const pruner = new Pruner(
    store.retention,
    retentionRules,
    (error) => logger.error({ err: error }, "pruning finished runs failed; it is tried again"),
    () => engine.activeRunCount > 0,
  );
  const transport = createTransport({
    engine,
    runStore: store.runs,
    eventLog: store.log,
    retention: store.retention,
    pruner,
    metrics,
    workflows: registry,
    config,
    logger,
    feed: {
      census: feeds,
      pageSize: FEED_PAGE_SIZE,
      stallTimeoutMs: config.stallTimeoutMs,
      highWaterBytes: SUBSCRIBER_HIGH_WATER_BYTES,
      maxUnsentBytes: config.maxUnsentBytes,
    },
    storageProblem: () => {
      const problem = store.storageProblem();
      if (problem) return problem;
      const stopped = store.runsStoppedByStorage;
      return stopped === 0 ? null : Errors.runsStoppedByStorage(stopped);
    },
  });

  let address;
  try {
    // Binding first means a second server on a busy port fails before touching any run;
    // recovery then runs before the first connection is served, so /health answers only after it.
    address = await transport.listen(config.port, config.host, async () => {
      const started = performance.now();
      const { waiting, elsewhere: _elsewhere, ...acted } = await engine.recover();
      metrics?.resumed(acted.resumed.length);
      const total = Object.values(acted).reduce((n, ids) => n + ids.length, 0);
      // Runs that wait are only counted: there may be many, and nothing was done to them.
      if (total + waiting.length > 0) {
        logger.info(
          { ...acted, waiting: waiting.length, durationMs: Math.round(performance.now() - started) },
          `recovered ${total} unfinished runs${waiting.length > 0 ? `; ${waiting.length} runs wait (for timers, signals or people)` : ""}`,
        );
      }
      pruner.start();
    });
  } catch (error) {
    await pruner.stop();
    await engine.shutdown(0, 0);
    await store.close();
    throw error;
  }
  const hostForUrl = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${hostForUrl}:${address.port}`;
  if (models.offline) {
    logger.info(
      { paceMs: config.demoPaceMs },
      "offline demo model in use: no OPENAI_API_KEY is set, so agents stream generated demo content",
    );
  } else {
    logger.info({ endpoint: models.endpoint, defaultModel: config.defaultModel }, "agents use an OpenAI-compatible endpoint");
  }
  const authenticates = config.securityKey !== null || config.jwtSecret !== null || config.jwtPublicKey !== null;
  if (config.userIsolation && config.jwtSecret === null && config.jwtPublicKey === null) {
    logger.warn(
      "FLOWD_USER_ISOLATION is on, but no users' JWTs are accepted: every caller holds the key (or needs none) and sees every run. Set FLOWD_JWT_SECRET or FLOWD_JWT_PUBLIC_KEY.",
    );
  }
  if (!isLoopback(address.address) && !authenticates) {
    logger.warn(
      { host: config.host },
      "flowd listens beyond this machine without authentication: anyone who can reach the port can start and read runs. " +
        "Set FLOWD_SECURITY_KEY (or FLOWD_JWT_SECRET / FLOWD_JWT_PUBLIC_KEY), or listen on 127.0.0.1.",
    );
  }
  logger.info(
    { url, port: address.port, db: store.location, workflows: registry.list().map((w) => w.id), auth: authenticates, userIsolation: config.userIsolation },
    "flowd listening",
  );

  let closing: Promise<void> | null = null;
  return {
    config,
    url,
    wsUrl: `ws://${hostForUrl}:${address.port}/workflows/ws`,
    port: address.port,
    logger,
    close: () => {
      closing ??= (async () => {
        await transport.close(SHUTDOWN_CLOSE_CODE, "server shutting down; reconnect with your last event index");
        await pruner.stop();
        await engine.shutdown(SHUTDOWN_DRAIN_MS, SHUTDOWN_ABORT_MS);
        await store.close();
        logger.info("flowd stopped");
      })();
      return closing;
    },
  };
}
