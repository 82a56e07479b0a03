import { isIP } from "node:net";
import type { IncomingHttpHeaders } from "node:http";
import { Errors, FlowdError } from "../errors.ts";

/** Whether an address (one the server is bound to, or a client's) is this machine's own. */
export function isLoopback(address: string | undefined): boolean {
  return address !== undefined && (address === "::1" || address.startsWith("127.") || address.startsWith("::ffff:127."));
}

/** Who may address the server, and from which web pages. */
export interface AccessSettings {
  /** The address or name the server listens on: a name there is answered too. */
  host: string;
  /** Host names requests may be addressed to beside IP addresses and `localhost`; `*` for any. */
  allowedHosts: readonly string[];
  /** Origins whose pages may call the server (CORS and WebSocket); `*` for any. */
  allowedOrigins: readonly string[];
}

/** The host of a `Host` header, lower case, without its port or IPv6 brackets. */
function hostName(header: string): string {
  const host = header.trim().toLowerCase();
  if (host.startsWith("[")) return host.slice(1, host.indexOf("]") === -1 ? undefined : host.indexOf("]"));
  const colon = host.lastIndexOf(":");
  return colon === -1 ? host : host.slice(0, colon);
}

/**
 * Guards a server that usually listens on loopback against the web pages its user
 * visits. A page cannot choose the `Host` it sends except through DNS rebinding (a name
 * of its own that resolves to 127.0.0.1), so only IP addresses, `localhost` and the
 * configured names are answered. A page's requests carry its `Origin` (form posts and
 * WebSocket upgrades included), so any origin but the server's own and the configured
 * ones is refused before anything runs.
 */
export class AccessPolicy {
  private readonly anyHost: boolean;
  private readonly hosts: ReadonlySet<string>;
  private readonly anyOrigin: boolean;
  private readonly origins: ReadonlySet<string>;

  constructor(settings: AccessSettings) {
    this.anyHost = settings.allowedHosts.includes("*");
    this.hosts = new Set(["localhost", hostName(settings.host), ...settings.allowedHosts.map((host) => hostName(host))]);
    this.anyOrigin = settings.allowedOrigins.includes("*");
    this.origins = new Set(settings.allowedOrigins);
  }

  /** Whether a page of `origin` may call the server (also what CORS answers with). */
  originAllowed(origin: string): boolean {
    return this.anyOrigin || this.origins.has(origin);
  }

  /** Whether requests addressed to `host` are answered without FLOWD_ALLOWED_HOSTS=*: an IP address or a known name. */
  private hostNamed(host: string): boolean {
    const name = hostName(host);
    return isIP(name) !== 0 || this.hosts.has(name);
  }

  /** Why a request with these headers is refused, or null if it may go on. */
  refusal(headers: IncomingHttpHeaders): FlowdError | null {
    const host = headers.host;
    if (host !== undefined && !this.anyHost && !this.hostNamed(host)) {
      return Errors.hostNotAllowed(host);
    }
    const origin = headers.origin;
    if (origin !== undefined) {
      // A page's own server is its Host; with FLOWD_ALLOWED_HOSTS=* any page could claim that
      // of a rebound name, so only a host flowd knows by name makes a page same-origin.
      if (this.originAllowed(origin) || (host !== undefined && this.hostNamed(host) && sameOrigin(origin, host))) return null;
      return Errors.originNotAllowed(origin);
    }
    // Browsers that send no Origin still say where a request comes from.
    const site = headers["sec-fetch-site"];
    if (site === "cross-site" || site === "same-site") {
      return Errors.originNotAllowed(null);
    }
    return null;
  }
}

/** A page served by this server itself (the origin names the host the request is addressed to). */
function sameOrigin(origin: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    const url = new URL(origin);
    return (url.protocol === "http:" || url.protocol === "https:") && url.host === host.trim().toLowerCase();
  } catch {
    return false;
  }
}
