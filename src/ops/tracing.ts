import { ROOT_CONTEXT, SpanStatusCode, trace, TraceFlags, isSpanContextValid, type Attributes, type Context, type Link, type Span, type SpanContext } from "@opentelemetry/api";

/**
 * OpenTelemetry through `@opentelemetry/api` alone: spans for runs, steps, model calls and
 * tool calls, a no-op until the application registers an SDK (README: Operating flowd).
 * Parents are passed explicitly (no context manager is needed), so a step's span is its
 * run's child whatever the async path between them.
 */
const tracer = trace.getTracer("flowd");

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** A W3C `traceparent` (version 00), or null if it is not one: a malformed one is ignored, as the spec says. */
export function parseTraceparent(value: string | null | undefined): SpanContext | null {
  const match = value ? TRACEPARENT.exec(value.trim().toLowerCase()) : null;
  if (!match) return null;
  const context: SpanContext = { traceId: match[1]!, spanId: match[2]!, traceFlags: Number.parseInt(match[3]!, 16) & TraceFlags.SAMPLED, isRemote: true };
  return isSpanContextValid(context) ? context : null;
}

/** A span's `traceparent`, or null when nothing records it (no SDK registered). */
export function traceparentOf(span: Span): string | null {
  const context = span.spanContext();
  if (!isSpanContextValid(context)) return null;
  return `00-${context.traceId}-${context.spanId}-${(context.traceFlags & TraceFlags.SAMPLED).toString(16).padStart(2, "0")}`;
}

/**
 * A run's span for one attempt: the child of the caller's span when the start carried a
 * `traceparent`; a resumed attempt links to the first attempt's span (`firstAttempt`).
 */
export function startRunSpan(run: { runId: string; workflowId: string; attempt: number }, parent: string | null, firstAttempt: string | null): Span {
  const caller = parseTraceparent(parent);
  const first = parseTraceparent(firstAttempt);
  const links: Link[] = first ? [{ context: first, attributes: { "flowd.link": "first attempt" } }] : [];
  return tracer.startSpan(
    `flowd.run ${run.workflowId}`,
    { attributes: { "flowd.run_id": run.runId, "flowd.workflow_id": run.workflowId, "flowd.attempt": run.attempt }, links },
    caller ? trace.setSpanContext(ROOT_CONTEXT, caller) : ROOT_CONTEXT,
  );
}

/** The context whose spans are `span`'s children. */
export function within(span: Span): Context {
  return trace.setSpan(ROOT_CONTEXT, span);
}

/** A span under `parent` (a run's, a step's). */
export function startChildSpan(parent: Context, name: string, attributes: Attributes): Span {
  return tracer.startSpan(name, { attributes }, parent);
}

/** Marks a span failed, with the error as its exception. */
export function markFailed(span: Span, error: unknown): void {
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
}

/** Ends a span, as failed if `error` says so. */
export function endSpan(span: Span, error?: unknown): void {
  if (error !== undefined) markFailed(span, error);
  span.end();
}

/** `work`'s outcome, ending `span` with it (as failed if it throws, unless `stopped()` says the run was stopped). */
export async function endsSpan<T>(span: Span, work: Promise<T>, stopped: () => boolean = () => false): Promise<T> {
  try {
    const value = await work;
    endSpan(span);
    return value;
  } catch (error) {
    endSpan(span, stopped() ? undefined : error);
    throw error;
  }
}
