import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { FastifyInstance } from "fastify";
import { Errors } from "../../errors.ts";
import { MIGRATIONS_DIR } from "../../store/db.ts";
import { sendError } from "./app.ts";

/** Where `npm run build` puts the inspector's bundle (src/inspector, bundled by esbuild). */
const INSPECTOR_DIR = join(dirname(MIGRATIONS_DIR), "dist", "inspector");

const ASSETS = new Map<string, string>([
  ["inspector.js", "text/javascript; charset=utf-8"],
  ["inspector.css", "text/css; charset=utf-8"],
  ["inspector.js.map", "application/json"],
]);

/** Headers that keep a page out of other sites' frames. */
export const NOT_FRAMED = { "content-security-policy": "frame-ancestors 'none'", "x-frame-options": "DENY" };

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flowd inspector</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/inspector.css">
</head>
<body>
<div id="app"></div>
<script type="module" src="/assets/inspector.js"></script>
</body>
</html>
`;

/** The web inspector at `/`: a page and its bundle, which hold no data (the page asks the API, with the key if one is set). */
export function registerInspectorRoutes(app: FastifyInstance): void {
  const files = new Map<string, Buffer>();
  // Never inside another site's frame: its buttons start and cancel runs (clickjacking).
  app.get("/", async (_request, reply) => reply.type("text/html; charset=utf-8").header("cache-control", "no-cache").headers(NOT_FRAMED).send(PAGE));
  app.get<{ Params: { file: string } }>("/assets/:file", async (request, reply) => {
    const { file } = request.params;
    const type = ASSETS.get(file);
    if (!type) return reply.callNotFound();
    let content = files.get(file);
    if (!content) {
      const path = join(INSPECTOR_DIR, file);
      if (!existsSync(path)) return sendError(reply, Errors.broken(`the inspector is not built (${path} is missing): run npm run build`));
      content = readFileSync(path);
      files.set(file, content);
    }
    return reply.type(type).header("cache-control", "no-cache").send(content);
  });
}
