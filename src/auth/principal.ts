import { Errors } from "../errors.ts";
import type { RunRow } from "../store/store.ts";

/** The scopes a token can carry (DESIGN §12); `workflows:<id>:run` names one workflow. */
export const SCOPES = {
  runAny: "workflows:run",
  runEvery: "workflows:*:run",
  runOne: (workflowId: string) => `workflows:${workflowId}:run`,
  read: "runs:read",
  metrics: "metrics:read",
  admin: "flowd:admin",
} as const;

/** Who is calling, as their credentials say. */
export type Principal = (
  /** The security key, a token with `flowd:admin`, or anyone when the server has no authentication: everything. */
  | { kind: "admin"; userId: string | null }
  /** A JWT's subject and what its scopes let them do. */
  | { kind: "user"; userId: string; scopes: ReadonlySet<string> }
  /** A read token: the events of one run, nothing else. */
  | { kind: "reader"; runId: string; userId: string | null }
) & {
  /** When the token stops being valid (epoch ms): a socket authenticated with it is told, and must authenticate again. Null: never (the security key). */
  expiresAt?: number | null;
};

/** What a server without authentication treats every caller as. */
export const ANYONE: Principal = { kind: "admin", userId: null };

/**
 * What a principal may do, by DESIGN §12. With isolation on, another user's run is
 * answered as one that does not exist (RUN_NOT_FOUND, never FORBIDDEN: that would say it
 * exists); a missing scope is FORBIDDEN, naming the scope.
 */
export class Permissions {
  constructor(readonly isolation: boolean) {}

  /** Starting a run of `workflowId`. */
  start(principal: Principal, workflowId: string): void {
    if (principal.kind === "admin") return;
    if (principal.kind === "reader") throw Errors.readTokenOnly(principal.runId);
    if (!mayRun(principal.scopes, workflowId)) throw Errors.forbidden(`start workflow ${workflowId}`, SCOPES.runOne(workflowId));
  }

  /** Whose run a start makes: a user's own, always (the token's `sub`, never the request's); an admin's as the request says. */
  startedBy(principal: Principal, requested: string | undefined): string | undefined {
    if (principal.kind === "admin") return requested ?? principal.userId ?? undefined;
    return principal.userId ?? undefined;
  }

  /** A start's idempotency key as stored: a user's own keys never find another user's run. */
  idempotencyKey(principal: Principal, key: string | undefined): string | undefined {
    // As JSON, so that no user id and key can spell another's ("a" + "b:c" against "a:b" + "c").
    return key === undefined || principal.kind !== "user" ? key : `user:${JSON.stringify([principal.userId, key])}`;
  }

  /** The run, if the principal may know it exists: RUN_NOT_FOUND as for an unknown id otherwise. */
  see(principal: Principal, runId: string, run: RunRow | undefined): RunRow {
    // Before the lookup: a read token tells nothing of other runs, not even whether they exist.
    if (principal.kind === "reader" && principal.runId !== runId) throw Errors.readTokenOnly(principal.runId);
    if (!run) throw Errors.runNotFound(runId);
    if (principal.kind === "user" && this.isolation && run.userId !== principal.userId) throw Errors.runNotFound(runId);
    return run;
  }

  /** Reading a run it may see: its row and its events. */
  read(principal: Principal, run: RunRow): void {
    if (principal.kind !== "user") return;
    if (run.userId === principal.userId || principal.scopes.has(SCOPES.read)) return;
    throw Errors.forbidden(`read run ${run.runId} of another user`, SCOPES.read);
  }

  /** Reading a run's row (a read token reads only its events). */
  readRow(principal: Principal, run: RunRow): void {
    if (principal.kind === "reader") throw Errors.readTokenOnly(principal.runId);
    this.read(principal, run);
  }

  /**
   * Cancelling, continuing or signalling a run it may see: what running its workflow
   * takes, and reading the run (the answers show it, and continue streams its events).
   */
  act(principal: Principal, run: RunRow): void {
    if (principal.kind === "admin") return;
    if (principal.kind === "reader") throw Errors.readTokenOnly(principal.runId);
    if (!mayRun(principal.scopes, run.workflowId)) throw Errors.forbidden(`act on run ${run.runId} of workflow ${run.workflowId}`, SCOPES.runOne(run.workflowId));
    this.read(principal, run);
  }

  /** Deleting a run it may see: its owner with the workflow's scope, or an admin. */
  delete(principal: Principal, run: RunRow): void {
    this.act(principal, run);
    if (principal.kind === "user" && run.userId !== principal.userId) throw Errors.forbidden(`delete run ${run.runId} of another user`, SCOPES.admin);
  }

  /** What is not about one run: pruning. */
  administer(principal: Principal, what: string): void {
    if (principal.kind === "admin") return;
    if (principal.kind === "reader") throw Errors.readTokenOnly(principal.runId);
    throw Errors.forbidden(what, SCOPES.admin);
  }

  /** Reading the server's metrics: an admin, or a scraper's token with `metrics:read`. */
  metrics(principal: Principal): void {
    if (principal.kind === "admin") return;
    if (principal.kind === "reader") throw Errors.readTokenOnly(principal.runId);
    if (!principal.scopes.has(SCOPES.metrics)) throw Errors.forbidden("read the server's metrics", SCOPES.metrics);
  }

  /** Listing workflows and runs (a read token lists nothing). */
  list(principal: Principal): void {
    if (principal.kind === "reader") throw Errors.readTokenOnly(principal.runId);
  }

  /** Whose runs a list shows: everyone's (null), or only the caller's own. */
  listedUser(principal: Principal): string | null {
    if (principal.kind !== "user") return null;
    return this.isolation || !principal.scopes.has(SCOPES.read) ? principal.userId : null;
  }
}

function mayRun(scopes: ReadonlySet<string>, workflowId: string): boolean {
  return scopes.has(SCOPES.runAny) || scopes.has(SCOPES.runEvery) || scopes.has(SCOPES.runOne(workflowId));
}
