import { Errors } from "./errors.ts";

/** The server's settings, resolved once and frozen. */
export interface FlowdConfig {
  readonly port: number;
  readonly host: string;
  readonly dbPath: string;
  /** Clients must authenticate with this key when set (or a JWT, when JWTs are accepted). */
  readonly securityKey: string | null;
  /** FLOWD_JWT_SECRET: users' JWTs are HS256 tokens signed with it. */
  readonly jwtSecret: string | null;
  /** FLOWD_JWT_PUBLIC_KEY: users' JWTs are RS256/ES256 tokens checked with this PEM (or the file it names). */
  readonly jwtPublicKey: string | null;
  /** FLOWD_JWT_AUDIENCE: the `aud` users' JWTs must carry; null checks none. */
  readonly jwtAudience: string | null;
  /** FLOWD_JWT_ISSUER: the `iss` users' JWTs must carry; null checks none. */
  readonly jwtIssuer: string | null;
  /** FLOWD_USER_ISOLATION: a non-admin sees only their own runs. */
  readonly userIsolation: boolean;
  /** FLOWD_METRICS: whether the server keeps metrics and serves GET /metrics (default true). */
  readonly metrics: boolean;
  /** FLOWD_METRICS_OPEN_ON_LOOPBACK: GET /metrics from 127.0.0.1 or ::1 needs no token (a scraper on the same host). */
  readonly metricsOpenOnLoopback: boolean;
  /** A module whose default export is a workflow or a list of them; null serves the built-ins. */
  readonly workflowsPath: string | null;
  /** Delay between chunks of the built-in offline demo content. */
  readonly demoPaceMs: number;
  /** Resumes after a crash a run gets before it ends with WorkflowError (crash loop guard). */
  readonly maxCrashResumes: number;
  /** OpenAI-compatible endpoint for agents; no key means the offline demo model. */
  readonly openaiApiKey: string | null;
  readonly openaiBaseUrl: string;
  /** Model for agents that name none. */
  readonly defaultModel: string;
  /** Models of the built-in workflow's two agents. */
  readonly researchModel: string | null;
  readonly plannerModel: string | null;
  /** Longest wait for a model to start answering, and between two chunks. */
  readonly modelTimeoutMs: number;
  /** Retries of a model call after 429 or 5xx. */
  readonly modelRetries: number;
  /** How long a subscriber may stay backed up before it is closed (told to reconnect). */
  readonly stallTimeoutMs: number;
  /**
   * SQLite `synchronous`: NORMAL (default) survives a crash of the process, FULL also a
   * power loss, at one fsync per group commit (see README, Storage).
   */
  readonly sync: "FULL" | "NORMAL";
  readonly logLevel: string;
  /** Interval of the comment heartbeat on quiet SSE streams. */
  readonly sseHeartbeatMs: number;
  /** Largest WebSocket frame and HTTP request body (and so the largest `message` plus `additional_data`). */
  readonly maxInputBytes: number;
  /** Deepest nesting of arrays and objects accepted in any JSON a client sends. */
  readonly maxInputDepth: number;
  /**
   * Bytes of answers (anything but run events: pongs, errors, heartbeats) a connection may
   * queue while its peer reads nothing; past it the connection is closed.
   */
  readonly maxUnsentBytes: number;
  /** Longest a client may take to send a whole HTTP request (headers and body). */
  readonly requestTimeoutMs: number;
  /** Open connections (HTTP, SSE and WebSocket) past which new ones are refused. */
  readonly maxConnections: number;
  /** Failed authentications one address may make per minute before it is refused for the rest of it. */
  readonly authFailuresPerMinute: number;
  /** How long a WebSocket may stay open without authenticating, when a key is set. */
  readonly authTimeoutMs: number;
  /** Runs this process executes at once; further starts are refused until some end. */
  readonly maxActiveRuns: number;
  /** Host names (beside the listening address's own) requests may be addressed to; `*` for any. */
  readonly allowedHosts: readonly string[];
  /** Origins (`https://app.example.com`) whose pages may call flowd (CORS, WebSocket); `*` for any. */
  readonly allowedOrigins: readonly string[];
  /** How long a start's idempotency key returns the run it started. */
  readonly idempotencyTtlMs: number;
  /** How long a finished run's events are kept (FLOWD_RETENTION); null keeps them for ever. A workflow's own `retention` wins. */
  readonly retentionMs: number | null;
  /** How long after a run finished its streamed deltas are folded into one event each (FLOWD_COMPACT_AFTER); null never. */
  readonly compactAfterMs: number | null;
  /** PostgreSQL (many nodes): how long a node's hold on a run lasts without renewal; another node takes the run over after it. */
  readonly leaseMs: number;
}

/** Settings given as flags (or `serve()` options); each wins over its environment variable. */
export interface ConfigFlags {
  port?: number | string | undefined;
  host?: string | undefined;
  db?: string | undefined;
  securityKey?: string | null | undefined;
  jwtSecret?: string | null | undefined;
  jwtPublicKey?: string | null | undefined;
  jwtAudience?: string | null | undefined;
  jwtIssuer?: string | null | undefined;
  userIsolation?: boolean | string | undefined;
  metrics?: boolean | string | undefined;
  metricsOpenOnLoopback?: boolean | string | undefined;
  workflows?: string | undefined;
  demoPaceMs?: number | string | undefined;
  maxCrashResumes?: number | string | undefined;
  openaiApiKey?: string | null | undefined;
  openaiBaseUrl?: string | undefined;
  defaultModel?: string | undefined;
  modelTimeoutMs?: number | string | undefined;
  modelRetries?: number | string | undefined;
  stallTimeoutMs?: number | string | undefined;
  sync?: string | undefined;
  logLevel?: string | undefined;
  sseHeartbeatMs?: number | string | undefined;
  maxInputBytes?: number | string | undefined;
  maxInputDepth?: number | string | undefined;
  maxUnsentBytes?: number | string | undefined;
  requestTimeoutMs?: number | string | undefined;
  maxConnections?: number | string | undefined;
  authFailuresPerMinute?: number | string | undefined;
  authTimeoutMs?: number | string | undefined;
  maxActiveRuns?: number | string | undefined;
  allowedHosts?: string | readonly string[] | undefined;
  allowedOrigins?: string | readonly string[] | undefined;
  idempotencyTtl?: string | undefined;
  leaseMs?: number | string | undefined;
  /** FLOWD_RETENTION: how long finished runs' events are kept, e.g. "30d"; unset keeps them for ever. */
  retention?: string | undefined;
  /** FLOWD_COMPACT_AFTER: fold a finished run's streamed deltas after this long, e.g. "1h"; unset never. */
  compactAfter?: string | undefined;
}

/** Defaults, as documented in README and DESIGN §7. */
export const DEFAULTS = {
  port: 7777,
  host: "127.0.0.1",
  dbPath: "./data/flowd.db",
  demoPaceMs: 110,
  maxCrashResumes: 3,
  openaiBaseUrl: "https://api.openai.com/v1",
  defaultModel: "gpt-4o-mini",
  modelTimeoutMs: 60_000,
  modelRetries: 3,
  stallTimeoutMs: 30_000,
  sync: "NORMAL",
  logLevel: "info",
  sseHeartbeatMs: 15_000,
  maxInputBytes: 1024 * 1024,
  maxInputDepth: 64,
  maxUnsentBytes: 1024 * 1024,
  requestTimeoutMs: 30_000,
  maxConnections: 10_000,
  authFailuresPerMinute: 10,
  authTimeoutMs: 10_000,
  maxActiveRuns: 500,
  idempotencyTtl: "24h",
  leaseMs: 5000,
} as const;

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

function wholeNumber(name: string, raw: number | string, min: number, max: number): number {
  const value = typeof raw === "number" ? raw : Number(raw.trim());
  if (!Number.isInteger(value) || value < min || value > max || (typeof raw === "string" && raw.trim() === "")) {
    throw Errors.notAWholeNumber(name, min, max, raw);
  }
  return value;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

/** A whole-number setting: the flag, else its environment variable, else the default. */
function numberSetting(
  flag: number | string | undefined,
  env: NodeJS.ProcessEnv,
  variable: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = flag ?? nonEmpty(env[variable]);
  return raw === undefined ? fallback : wholeNumber(variable, raw, min, max);
}

const DURATION_UNITS_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** A duration such as `90s`, `30m`, `24h` or `7d`, in milliseconds. */
/** What a duration looks like, for error messages. */
export const DURATION_FORMAT = "a duration such as 90s, 30m, 24h or 7d (a whole number and one of ms, s, m, h, d)";

/** A duration (`90s`, `30m`, `24h`, `7d`, `500ms`) in milliseconds, or null if it is not one (or not above zero). */
export function parseDuration(raw: string): number | null {
  const match = /^\s*(\d+)\s*(ms|s|m|h|d)\s*$/.exec(raw);
  const ms = match ? Number(match[1]) * DURATION_UNITS_MS[match[2] as keyof typeof DURATION_UNITS_MS] : NaN;
  return Number.isSafeInteger(ms) && ms > 0 ? ms : null;
}

function duration(name: string, raw: string): number {
  const ms = parseDuration(raw);
  if (ms === null) throw Errors.invalidConfig(`${name} must be ${DURATION_FORMAT}; got "${raw}".`);
  return ms;
}

/** true/false (also 1/0, yes/no), or the default when unset. */
function booleanSetting(name: string, value: boolean | string | undefined, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value === "boolean") return value;
  const lower = value.trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(lower)) return true;
  if (["false", "0", "no", "off"].includes(lower)) return false;
  throw Errors.invalidConfig(`${name} must be true or false; got "${value}".`);
}

/** A comma-separated list (or a list given in code), trimmed, empty entries dropped. */
function listSetting(flag: string | readonly string[] | undefined, raw: string | undefined): string[] {
  const value = flag ?? raw ?? "";
  const items = typeof value === "string" ? value.split(",") : [...value];
  return items.map((item) => item.trim()).filter((item) => item !== "");
}

/** Origins are compared as browsers send them: scheme://host[:port], lower case, no path. */
function parseOrigins(items: string[]): string[] {
  return items.map((item) => {
    if (item === "*" || item === "null") return item;
    const url = URL.canParse(item) ? new URL(item) : null;
    if (url === null || url.origin === "null" || (url.pathname !== "/" && url.pathname !== "")) {
      throw Errors.invalidConfig(
        `FLOWD_ALLOWED_ORIGINS entries must be origins like https://app.example.com (scheme, host, port), with no path; got "${item}".`,
      );
    }
    return url.origin;
  });
}

/** Resolves flags over environment variables over defaults. The only reader of the environment. */
export function resolveConfig(flags: ConfigFlags = {}, env: NodeJS.ProcessEnv = process.env): FlowdConfig {
  const port = flags.port ?? nonEmpty(env.PORT);
  const demoPace = flags.demoPaceMs ?? nonEmpty(env.FLOWD_DEMO_PACE_MS);
  const maxResumes = flags.maxCrashResumes ?? nonEmpty(env.FLOWD_MAX_RESUMES);
  const logLevel = flags.logLevel ?? nonEmpty(env.FLOWD_LOG_LEVEL) ?? DEFAULTS.logLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw Errors.invalidConfig(`FLOWD_LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}; got "${logLevel}".`);
  }
  const securityKey = flags.securityKey !== undefined ? flags.securityKey : nonEmpty(env.FLOWD_SECURITY_KEY) ?? null;
  const secret = (flag: string | null | undefined, name: string): string | null => {
    const value = flag !== undefined ? flag : nonEmpty(env[name]) ?? null;
    return value === "" ? null : value;
  };
  const openaiApiKey = flags.openaiApiKey !== undefined ? flags.openaiApiKey : nonEmpty(env.OPENAI_API_KEY) ?? null;
  const baseUrl = flags.openaiBaseUrl ?? nonEmpty(env.OPENAI_BASE_URL) ?? DEFAULTS.openaiBaseUrl;
  if (!/^https?:\/\/./.test(baseUrl)) {
    throw Errors.invalidConfig(`OPENAI_BASE_URL must be an http(s) URL such as http://localhost:11434/v1; got "${baseUrl}".`);
  }
  const modelTimeout = flags.modelTimeoutMs ?? nonEmpty(env.FLOWD_MODEL_TIMEOUT_MS);
  const modelRetries = flags.modelRetries ?? nonEmpty(env.FLOWD_MODEL_RETRIES);
  const stallTimeout = flags.stallTimeoutMs ?? nonEmpty(env.FLOWD_STALL_TIMEOUT_MS);
  const sync = (flags.sync ?? nonEmpty(env.FLOWD_SYNC) ?? DEFAULTS.sync).toUpperCase();
  if (sync !== "FULL" && sync !== "NORMAL") {
    throw Errors.invalidConfig(`FLOWD_SYNC must be FULL (survives power loss) or NORMAL (survives a crash); got "${sync}".`);
  }
  const dbPath = flags.db ?? nonEmpty(env.FLOWD_DB) ?? DEFAULTS.dbPath;
  const lease = flags.leaseMs ?? nonEmpty(env.FLOWD_LEASE_MS);
  const retention = flags.retention ?? nonEmpty(env.FLOWD_RETENTION);
  const compactAfter = flags.compactAfter ?? nonEmpty(env.FLOWD_COMPACT_AFTER);
  return Object.freeze({
    port: port === undefined ? DEFAULTS.port : wholeNumber("--port / PORT", port, 0, 65535),
    host: flags.host ?? nonEmpty(env.HOST) ?? DEFAULTS.host,
    dbPath,
    securityKey: securityKey === "" ? null : securityKey,
    jwtSecret: secret(flags.jwtSecret, "FLOWD_JWT_SECRET"),
    jwtPublicKey: secret(flags.jwtPublicKey, "FLOWD_JWT_PUBLIC_KEY"),
    jwtAudience: secret(flags.jwtAudience, "FLOWD_JWT_AUDIENCE"),
    jwtIssuer: secret(flags.jwtIssuer, "FLOWD_JWT_ISSUER"),
    userIsolation: booleanSetting("FLOWD_USER_ISOLATION", flags.userIsolation ?? nonEmpty(env.FLOWD_USER_ISOLATION), false),
    metrics: booleanSetting("FLOWD_METRICS", flags.metrics ?? nonEmpty(env.FLOWD_METRICS), true),
    metricsOpenOnLoopback: booleanSetting(
      "FLOWD_METRICS_OPEN_ON_LOOPBACK",
      flags.metricsOpenOnLoopback ?? nonEmpty(env.FLOWD_METRICS_OPEN_ON_LOOPBACK),
      false,
    ),
    workflowsPath: flags.workflows ?? null,
    demoPaceMs: demoPace === undefined ? DEFAULTS.demoPaceMs : wholeNumber("FLOWD_DEMO_PACE_MS", demoPace, 0, 60_000),
    maxCrashResumes:
      maxResumes === undefined ? DEFAULTS.maxCrashResumes : wholeNumber("FLOWD_MAX_RESUMES", maxResumes, 0, 1000),
    openaiApiKey: openaiApiKey === "" ? null : openaiApiKey,
    openaiBaseUrl: baseUrl.replace(/\/+$/, ""),
    defaultModel: flags.defaultModel ?? nonEmpty(env.FLOWD_MODEL) ?? DEFAULTS.defaultModel,
    researchModel: nonEmpty(env.FLOWD_RESEARCH_MODEL) ?? null,
    plannerModel: nonEmpty(env.FLOWD_PLANNER_MODEL) ?? null,
    modelTimeoutMs:
      modelTimeout === undefined ? DEFAULTS.modelTimeoutMs : wholeNumber("FLOWD_MODEL_TIMEOUT_MS", modelTimeout, 1, 3_600_000),
    modelRetries: modelRetries === undefined ? DEFAULTS.modelRetries : wholeNumber("FLOWD_MODEL_RETRIES", modelRetries, 0, 20),
    stallTimeoutMs:
      stallTimeout === undefined ? DEFAULTS.stallTimeoutMs : wholeNumber("FLOWD_STALL_TIMEOUT_MS", stallTimeout, 10, 3_600_000),
    sync,
    logLevel,
    sseHeartbeatMs: numberSetting(flags.sseHeartbeatMs, env, "FLOWD_SSE_HEARTBEAT_MS", DEFAULTS.sseHeartbeatMs, 10, 3_600_000),
    maxInputBytes: numberSetting(flags.maxInputBytes, env, "FLOWD_MAX_INPUT_BYTES", DEFAULTS.maxInputBytes, 1024, 256 * 1024 * 1024),
    maxInputDepth: numberSetting(flags.maxInputDepth, env, "FLOWD_MAX_INPUT_DEPTH", DEFAULTS.maxInputDepth, 2, 1000),
    maxUnsentBytes: numberSetting(flags.maxUnsentBytes, env, "FLOWD_MAX_UNSENT_BYTES", DEFAULTS.maxUnsentBytes, 1024, 1024 * 1024 * 1024),
    requestTimeoutMs: numberSetting(flags.requestTimeoutMs, env, "FLOWD_REQUEST_TIMEOUT_MS", DEFAULTS.requestTimeoutMs, 100, 3_600_000),
    maxConnections: numberSetting(flags.maxConnections, env, "FLOWD_MAX_CONNECTIONS", DEFAULTS.maxConnections, 1, 1_000_000),
    authFailuresPerMinute: numberSetting(
      flags.authFailuresPerMinute,
      env,
      "FLOWD_AUTH_FAILURES_PER_MINUTE",
      DEFAULTS.authFailuresPerMinute,
      1,
      1_000_000,
    ),
    authTimeoutMs: numberSetting(flags.authTimeoutMs, env, "FLOWD_AUTH_TIMEOUT_MS", DEFAULTS.authTimeoutMs, 10, 3_600_000),
    maxActiveRuns: numberSetting(flags.maxActiveRuns, env, "FLOWD_MAX_ACTIVE_RUNS", DEFAULTS.maxActiveRuns, 1, 1_000_000),
    allowedHosts: Object.freeze(listSetting(flags.allowedHosts, env.FLOWD_ALLOWED_HOSTS).map((host) => host.toLowerCase())),
    allowedOrigins: Object.freeze(parseOrigins(listSetting(flags.allowedOrigins, env.FLOWD_ALLOWED_ORIGINS))),
    leaseMs: lease === undefined ? DEFAULTS.leaseMs : wholeNumber("FLOWD_LEASE_MS", lease, 100, 600_000),
    idempotencyTtlMs: duration("FLOWD_IDEMPOTENCY_TTL", flags.idempotencyTtl ?? nonEmpty(env.FLOWD_IDEMPOTENCY_TTL) ?? DEFAULTS.idempotencyTtl),
    retentionMs: retention === undefined ? null : duration("FLOWD_RETENTION", retention),
    compactAfterMs: compactAfter === undefined ? null : duration("FLOWD_COMPACT_AFTER", compactAfter),
  });
}

/** What the CLI's client commands need: where the database and the server are. */
export interface ClientConfig {
  readonly dbPath: string;
  /** Base URL of a running server, e.g. http://127.0.0.1:7777 */
  readonly url: string;
  /** What the CLI authenticates with: --token, FLOWD_TOKEN, or the server's FLOWD_SECURITY_KEY. */
  readonly token: string | null;
}

/** Resolves `--db`/`--url`/`--token` over FLOWD_DB/PORT/HOST/FLOWD_TOKEN/FLOWD_SECURITY_KEY over defaults, for CLI commands. */
export function resolveClientConfig(
  flags: { db?: string | undefined; url?: string | undefined; token?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
): ClientConfig {
  const server = resolveConfig({ db: flags.db }, env);
  const host = server.host === "0.0.0.0" || server.host === "::" ? "127.0.0.1" : server.host;
  const url = flags.url ?? `http://${host.includes(":") ? `[${host}]` : host}:${server.port}`;
  try {
    new URL(url);
  } catch {
    throw Errors.invalidConfig(`--url must be a URL like http://127.0.0.1:7777; got "${url}".`);
  }
  const token = flags.token ?? nonEmpty(env.FLOWD_TOKEN) ?? server.securityKey;
  return Object.freeze({ dbPath: server.dbPath, url: url.replace(/\/+$/, ""), token });
}
