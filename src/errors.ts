/** Every error code flowd reports, with the HTTP status it maps to at the HTTP edge. */
export const ERROR_CODES = {
  INVALID_JSON: 400,
  INVALID_MESSAGE: 400,
  UNKNOWN_ACTION: 400,
  INVALID_REQUEST: 422,
  INVALID_URL: 400,
  INVALID_HTTP: 400,
  HEADERS_TOO_LARGE: 431,
  INPUT_TOO_DEEP: 422,
  BODY_TOO_LARGE: 413,
  URI_TOO_LONG: 414,
  REQUEST_TIMEOUT: 408,
  UNSUPPORTED_MEDIA_TYPE: 415,
  AUTH_REQUIRED: 401,
  AUTH_FAILED: 401,
  AUTH_THROTTLED: 429,
  FORBIDDEN: 403,
  ORIGIN_NOT_ALLOWED: 403,
  HOST_NOT_ALLOWED: 421,
  NOT_FOUND: 404,
  WORKFLOW_NOT_FOUND: 404,
  RUN_NOT_FOUND: 404,
  RUN_FINISHED: 409,
  RUN_NOT_PAUSED: 409,
  RUN_EXPIRED: 410,
  RUN_NOT_FINISHED: 409,
  METHOD_NOT_ALLOWED: 405,
  INVALID_OFFSET: 400,
  INVALID_REQUIREMENT: 422,
  INVALID_SIGNAL: 422,
  TOO_MANY_SIGNALS: 429,
  IDEMPOTENCY_KEY_REUSED: 409,
  DATABASE_LOCKED: 409,
  DATABASE_READ_ONLY: 500,
  DUPLICATE_WORKFLOW: 500,
  INVALID_WORKFLOW: 500,
  INVALID_CONFIG: 500,
  INVALID_ARGUMENT: 400,
  SHUTTING_DOWN: 503,
  TOO_MANY_RUNS: 503,
  STORAGE_FAILED: 503,
  LOCK_LOST: 503,
  LEASE_LOST: 503,
  RUN_NOT_RESUMED: 503,
  SERVER_UNREACHABLE: 503,
  INTERNAL: 500,
} as const;

/** A stable, machine-readable error code; tests and clients match on this, not on message text. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** The one error class flowd throws on purpose; translated to a frame, a response or an exit code at the edges. */
export class FlowdError extends Error {
  override readonly name = "FlowdError";
  readonly code: ErrorCode;
  readonly httpStatus: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.httpStatus = ERROR_CODES[code];
  }
}

/** A readable message for anything thrown, FlowdError or not. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

/** True for a string that is one of flowd's error codes (e.g. one a server sent back). */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && Object.hasOwn(ERROR_CODES, code);
}

/** `cause` for errors that wrap another. */
type Cause = { cause?: unknown };

/**
 * The catalog: every error flowd raises on purpose is made here, one factory per kind,
 * with its message template (what was wrong, and what to do). Call sites say
 * `throw Errors.runNotFound(runId)`; a second wording of the same error cannot appear.
 */
export const Errors = {
  // Requests and frames
  invalidRequest: (sentence: string) => new FlowdError("INVALID_REQUEST", sentence),
  invalidJsonBody: (reason: string) => new FlowdError("INVALID_JSON", `Request body is not valid JSON (${reason}).`),
  emptyJsonBody: () =>
    new FlowdError("INVALID_JSON", "Content-Type is application/json but the body is empty: send a JSON object, or no Content-Type."),
  unsupportedMediaType: () =>
    new FlowdError(
      "UNSUPPORTED_MEDIA_TYPE",
      "Unsupported Content-Type: send JSON (application/json) or a form (application/x-www-form-urlencoded).",
    ),
  bodyTooLarge: (maxBytes: number) =>
    new FlowdError("BODY_TOO_LARGE", `Request body is larger than ${maxBytes} bytes (FLOWD_MAX_INPUT_BYTES).`),
  inputTooDeep: (subject: string, maxDepth: number) =>
    new FlowdError(
      "INPUT_TOO_DEEP",
      `${subject} nests arrays or objects more than ${maxDepth} levels deep. Send flatter data, or raise FLOWD_MAX_INPUT_DEPTH on the server.`,
    ),
  invalidUrl: () =>
    new FlowdError("INVALID_URL", "The URL is not valid: a path part has a bad %-escape. Escape ids with encodeURIComponent."),
  uriTooLong: (maxLength: number) =>
    new FlowdError("URI_TOO_LONG", `A path part is longer than ${maxLength} characters; ids are at most 256.`),
  invalidLastEventId: (header: string) =>
    new FlowdError("INVALID_REQUEST", `Last-Event-ID must be an event index (an integer); got "${header}".`),
  requestTimeout: () =>
    new FlowdError(
      "REQUEST_TIMEOUT",
      "The request (headers and body) did not arrive in time (FLOWD_REQUEST_TIMEOUT_MS). Send it whole, at once.",
    ),
  headersTooLarge: () => new FlowdError("HEADERS_TOO_LARGE", "The request's headers are too large; send smaller ones."),
  invalidHttp: () => new FlowdError("INVALID_HTTP", "The request is not valid HTTP/1.1; send a well-formed request."),
  noWebSocketHere: (path: string, wsPath: string) => new FlowdError("NOT_FOUND", `No WebSocket at ${path}; use ${wsPath}.`),
  unknownAction: (action: string, known: readonly string[]) =>
    new FlowdError("UNKNOWN_ACTION", `Unknown action: ${action}. Known actions: ${known.join(", ")}.`),
  invalidJsonMessage: (reason: string) =>
    new FlowdError("INVALID_JSON", `Message is not valid JSON (${reason}). Send a JSON object like {"action":"ping"}.`),
  messageNotAnObject: () =>
    new FlowdError("INVALID_MESSAGE", 'Message must be a JSON object with an "action" field, like {"action":"ping"}.'),
  messageWithoutAction: (known: readonly string[]) =>
    new FlowdError("INVALID_MESSAGE", `Message needs a string "action" field; one of: ${known.join(", ")}.`),
  invalidMessage: (sentence: string) => new FlowdError("INVALID_MESSAGE", sentence),
  binaryFrame: () => new FlowdError("INVALID_MESSAGE", "Binary frames are not supported; send JSON text frames."),

  // Who may call
  authRequired: () =>
    new FlowdError("AUTH_REQUIRED", "Missing bearer token: send the header Authorization: Bearer <token> (FLOWD_SECURITY_KEY, or a JWT)."),
  authHeaderMalformed: (scheme: string) =>
    new FlowdError(
      "AUTH_REQUIRED",
      `The Authorization header must be "Bearer <token>"; got ${scheme === "" ? "an empty one" : `a "${scheme}" one`}. Send Authorization: Bearer <token>.`,
    ),
  authFailed: () => new FlowdError("AUTH_FAILED", "Invalid token: it does not match the server's security key."),
  tokenRefused: (reason: string) => new FlowdError("AUTH_FAILED", `Invalid token: ${reason}.`),
  forbidden: (what: string, scope: string) =>
    new FlowdError("FORBIDDEN", `Your token may not ${what}: that needs the scope "${scope}" (or "flowd:admin"). Ask for a token that has it.`),
  invalidOffset: (detail: string) => new FlowdError("INVALID_OFFSET", detail),
  streamReadOnly: (method: string) =>
    new FlowdError(
      "METHOD_NOT_ALLOWED",
      `${method} is not allowed on a run's stream: flowd serves the read side of the Durable Streams protocol (GET, HEAD), and only the engine writes a run's log. Start, continue or signal the run through /workflows/{workflow_id}/runs instead.`,
    ),
  metricsOff: () => new FlowdError("NOT_FOUND", "This server keeps no metrics (FLOWD_METRICS=false): set FLOWD_METRICS=true (the default) to serve GET /metrics."),
  readTokenOnly: (runId: string) =>
    new FlowdError(
      "FORBIDDEN",
      `A read token reads only the events of run ${runId} (GET /runs/${runId}/events, or its stream /streams/runs/${runId}); use your own token for anything else.`,
    ),
  authThrottled: (address: string, seconds: number) =>
    new FlowdError(
      "AUTH_THROTTLED",
      `Too many failed authentications from ${address}: try again in ${seconds} s with the right key (FLOWD_SECURITY_KEY).`,
    ),
  hostNotAllowed: (host: string) =>
    new FlowdError(
      "HOST_NOT_ALLOWED",
      `This server does not answer requests addressed to "${host}": it answers IP addresses, localhost, the name it ` +
        "listens on and the names in FLOWD_ALLOWED_HOSTS (comma-separated). Set FLOWD_ALLOWED_HOSTS to the name clients use.",
    ),
  originNotAllowed: (origin: string | null) =>
    new FlowdError(
      "ORIGIN_NOT_ALLOWED",
      origin === null
        ? "Requests from other sites' web pages are refused. To let a site call flowd, add its origin to FLOWD_ALLOWED_ORIGINS."
        : `Requests from web pages of ${origin} are refused. To let that site call flowd, add it to FLOWD_ALLOWED_ORIGINS ` +
          "(comma-separated origins, e.g. https://app.example.com).",
    ),

  // Workflows and runs
  workflowNotFound: (id: string, known: string) =>
    new FlowdError("WORKFLOW_NOT_FOUND", `Workflow ${id} not found. Available workflows: ${known}.`),
  runNotFound: (runId: string, where?: string) =>
    new FlowdError("RUN_NOT_FOUND", where === undefined ? `Run ${runId} not found` : `Run ${runId} not found in ${where}.`),
  runExpired: (runId: string, prunedAt: number | null) =>
    new FlowdError(
      "RUN_EXPIRED",
      `Run ${runId}'s events are no longer kept: retention (or a prune) removed them${prunedAt === null ? "" : ` on ${new Date(prunedAt).toISOString()}`}. ` +
        `Its summary (status, times, output) is still at GET /runs/${runId}.`,
    ),
  runNotFinished: (runId: string, status: string, what: string) =>
    new FlowdError("RUN_NOT_FINISHED", `Run ${runId} is ${status}: only a finished run (completed, error or cancelled) can be ${what}. Cancel it first, or wait for it to end.`),
  runOfOtherWorkflow: (runId: string, workflowId: string, actual: string) =>
    new FlowdError("RUN_NOT_FOUND", `Run ${runId} is not a run of workflow ${workflowId} (it belongs to ${actual}).`),
  runFinished: (runId: string, status: string, consequence: string) =>
    new FlowdError("RUN_FINISHED", `Run ${runId} is already ${status}; ${consequence}.`),
  runNotResumed: (runId: string, why: string, whatToDo: string) =>
    new FlowdError("RUN_NOT_RESUMED", `Run ${runId} is unfinished, but ${why}. Everything stored has been sent. ${whatToDo}`),
  runNotPaused: (runId: string, status: string) =>
    new FlowdError(
      "RUN_NOT_PAUSED",
      `Run ${runId} is ${status}, not paused: there is nothing to continue. ` +
        (status === "paused"
          ? "Something answered it first (another continue, a cancel, or its timeout); read its events to see what happened."
          : "Continue a run while its status is paused (GET /runs/{run_id} shows it)."),
    ),
  invalidRequirement: (runId: string, what: string) =>
    new FlowdError(
      "INVALID_REQUIREMENT",
      `Cannot continue run ${runId}: ${what}. Send step_requirements as the run's WorkflowPaused event lists them, with the last (open) one resolved; the run stays paused.`,
    ),
  invalidSignal: (runId: string, name: string, what: string) =>
    new FlowdError("INVALID_SIGNAL", `Signal "${name}" to run ${runId} was not accepted: ${what}. The run still waits; send a payload that matches its schema.`),
  tooManySignals: (runId: string, limit: number) =>
    new FlowdError(
      "TOO_MANY_SIGNALS",
      `Run ${runId} already keeps ${limit} signals it has not waited for; this one was not kept. Send it once the run has taken some (it takes the oldest first).`,
    ),
  shuttingDown: () => new FlowdError("SHUTTING_DOWN", "The server is shutting down; start the run again once it is back."),
  idempotencyKeyReused: (key: string, workflowId: string, runId: string) =>
    new FlowdError(
      "IDEMPOTENCY_KEY_REUSED",
      `Idempotency key "${key}" already started run ${runId} of workflow "${workflowId}" with a different message or additional_data. ` +
        "Send the same request to get that run again, or a new key to start another run.",
    ),
  tooManyRuns: (active: number) =>
    new FlowdError(
      "TOO_MANY_RUNS",
      `This server is running ${active} runs, its limit (FLOWD_MAX_ACTIVE_RUNS): start this one again once some have ended.`,
    ),

  // Definitions and configuration (start-up)
  invalidWorkflow: (sentence: string, options?: Cause) => new FlowdError("INVALID_WORKFLOW", sentence, options),
  duplicateWorkflow: (id: string, first: string, second: string) =>
    new FlowdError(
      "DUPLICATE_WORKFLOW",
      `Duplicate workflow id "${id}": both "${first}" and "${second}" use it. Give each workflow its own id.`,
    ),
  invalidConfig: (sentence: string, options?: Cause) => new FlowdError("INVALID_CONFIG", sentence, options),
  notAWholeNumber: (name: string, min: number, max: number, raw: unknown) =>
    new FlowdError("INVALID_CONFIG", `${name} must be a whole number from ${min} to ${max}; got "${String(raw)}".`),
  invalidArgument: (sentence: string) => new FlowdError("INVALID_ARGUMENT", sentence),
  workflowsModuleMissing: (path: string, absolute: string) =>
    new FlowdError("INVALID_CONFIG", `Workflows module "${path}" does not exist (looked at ${absolute}).`),
  broken: (what: string) => new FlowdError("INTERNAL", `${what}. This is a bug or a broken installation: reinstall flowd, and report it if it stays.`),

  // The database
  cannotReachPostgres: (url: string, cause: unknown) =>
    new FlowdError(
      "INVALID_CONFIG",
      `Cannot use the PostgreSQL database at ${url}: ${errorMessage(cause)}. Check the URL given by --db or FLOWD_DB ` +
        "(host, port, user, password, database name), that the server runs, and that the user may create tables in that database.",
      { cause },
    ),
  cannotOpenDatabase: (path: string, cause: unknown) =>
    new FlowdError(
      "INVALID_CONFIG",
      `Cannot open database file "${path}": ${errorMessage(cause)}. Check the path given by --db or FLOWD_DB and its permissions.`,
      { cause },
    ),
  cannotPrepareDatabase: (path: string, cause: unknown) =>
    new FlowdError("INVALID_CONFIG", `Cannot prepare database "${path}": ${errorMessage(cause)}`, { cause }),
  databaseNotMigrated: (path: string, applied: number, total: number) =>
    new FlowdError(
      "INVALID_CONFIG",
      `Database "${path}" is not up to date (${applied} of ${total} migrations applied). ` +
        `Run \`flowd migrate --db ${path}\` or start the server on it once.`,
    ),
  databaseReadOnly: (path: string, cause: unknown) =>
    new FlowdError(
      "DATABASE_READ_ONLY",
      `Database "${path}" cannot be written (${errorMessage(cause)}). flowd stores every event, so it needs write access to the ` +
        "file and its folder (for the -wal and -shm files): check their owner and permissions and the disk, or give --db a writable path.",
      { cause },
    ),
  databaseLocked: (path: string, pid: number) =>
    new FlowdError("DATABASE_LOCKED", `Another flowd process (pid ${pid}) is serving "${path}". Stop it, or give this one its own --db.`),
  databaseLockedElsewhere: (path: string, pid: number, host: string, silentSeconds: number, staleSeconds: number) =>
    new FlowdError(
      "DATABASE_LOCKED",
      `Another flowd process (pid ${pid} on host "${host}", or in another container) is serving "${path}": ` +
        `it checked in ${silentSeconds} s ago. Stop it, or give this one its own --db. If it is gone, start this one ` +
        `again once it has been silent for ${staleSeconds} s.`,
    ),
  lockLost: (path: string, who: string) =>
    new FlowdError(
      "LOCK_LOST",
      `This server no longer owns "${path}": its server_lock row is not this process's (${who}). ` +
        "Two servers may be writing one database: stop this one, check which should run, then restart it.",
    ),
  leaseLost: (runId: string, nodeId: string, owner: string | null, epoch: number) =>
    new FlowdError(
      "LEASE_LOST",
      `Node ${nodeId} no longer executes run ${runId}: ${owner === null ? "no node holds it now" : `node ${owner} took it over`} ` +
        `(lease epoch ${epoch}) after this node's lease lapsed. Its writes here were refused; reconnect to any node to follow the run.`,
    ),
  runNotCreated: (runId: string, reason: string) =>
    new FlowdError(
      "STORAGE_FAILED",
      `Run ${runId} could not be created: the database refused it (${reason}). Nothing of it was stored; ` +
        "start it again once the database accepts writes (the server log has details).",
    ),
  runStopped: (runId: string, reason: string) =>
    new FlowdError(
      "STORAGE_FAILED",
      `Run ${runId} stopped: the database refused its events (${reason}). Everything delivered before this is stored; ` +
        "the run resumes from there when flowd restarts with a writable database. Reconnect then with your last_event_index.",
    ),
  databaseRefusedCommit: (cause: unknown) =>
    new FlowdError(
      "STORAGE_FAILED",
      `The database refused the last commit (${errorMessage(cause)}): runs stop where they are until it accepts writes ` +
        "again (free disk space, end whatever holds its write lock), then resume when flowd restarts.",
      { cause },
    ),
  runsStoppedByStorage: (count: number) =>
    new FlowdError(
      "STORAGE_FAILED",
      `${count} run(s) stopped when the database refused their events. The database takes writes again: restart flowd to resume them.`,
    ),
  databaseUnreadable: (cause: unknown) =>
    new FlowdError("STORAGE_FAILED", `The database cannot be read (${errorMessage(cause)}): check the disk and the file.`, { cause }),
  unencodable: (what: string, cause: unknown) =>
    new FlowdError("STORAGE_FAILED", `The ${what} cannot be stored as JSON (${errorMessage(cause)}).`, { cause }),

  // The CLI talking to a server
  serverUnreachable: (url: string, cause: unknown) =>
    new FlowdError(
      "SERVER_UNREACHABLE",
      `Cannot reach the flowd server at ${url} (${errorMessage((cause as { cause?: unknown }).cause ?? cause)}). Is it running? Point --url (or PORT) at it.`,
      { cause },
    ),
  gaveUpFollowing: (runId: string, attempts: number, url: string, reason: string, last: number) =>
    new FlowdError(
      "SERVER_UNREACHABLE",
      `Gave up following run ${runId} after ${attempts} failed attempts to reach ${url} (${reason}). Run the command again with --after ${last} to continue.`,
    ),
  // flowd/client talking to a server
  clientCannotReach: (url: string, cause: unknown) =>
    new FlowdError(
      "SERVER_UNREACHABLE",
      `Cannot reach the flowd server at ${url} (${errorMessage((cause as { cause?: unknown }).cause ?? cause)}). Is it running? Check the url given to createClient.`,
      { cause },
    ),
  clientNeedsToken: (url: string) =>
    new FlowdError("AUTH_REQUIRED", `The flowd server at ${url} requires a key or token: pass \`token\` to createClient (its FLOWD_SECURITY_KEY).`),
  closedByPolicy: (reason: string) =>
    new FlowdError(
      /auth|key|token/i.test(reason) ? "AUTH_FAILED" : "INVALID_MESSAGE",
      `The server closed the watch's connection for breaking its rules (${reason || "no reason given"}). Check the token given to createClient.`,
    ),
  gaveUpWatching: (runId: string, attempts: number, url: string, reason: string, last: number) =>
    new FlowdError(
      "SERVER_UNREACHABLE",
      `Gave up watching run ${runId} after ${attempts} failed attempts to reach ${url} (${reason}). Call watch("${runId}", { after: ${last} }) to go on from where it stopped.`,
    ),
  /** An error a server sent back, as a FlowdError again. */
  fromServer: (code: unknown, message: string) => new FlowdError(isErrorCode(code) ? code : "INTERNAL", message),
} as const;
