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
  ORIGIN_NOT_ALLOWED: 403,
  HOST_NOT_ALLOWED: 421,
  NOT_FOUND: 404,
  WORKFLOW_NOT_FOUND: 404,
  RUN_NOT_FOUND: 404,
  RUN_FINISHED: 409,
  DATABASE_LOCKED: 409,
  DATABASE_READ_ONLY: 500,
  DUPLICATE_WORKFLOW: 500,
  INVALID_WORKFLOW: 500,
  INVALID_CONFIG: 500,
  SHUTTING_DOWN: 503,
  TOO_MANY_RUNS: 503,
  STORAGE_FAILED: 503,
  LOCK_LOST: 503,
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
