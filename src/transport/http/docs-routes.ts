import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { FastifyInstance } from "fastify";
import { MIGRATIONS_DIR } from "../../store/db.ts";
import { openApiDocument } from "./api-description.ts";
import { NOT_FRAMED } from "./inspector-routes.ts";

/** The files of Swagger UI that /docs serves (from the swagger-ui-dist package: nothing from a CDN). */
const SWAGGER_FILES = new Map<string, string>([
  ["swagger-ui.css", "text/css; charset=utf-8"],
  ["swagger-ui-bundle.js", "text/javascript; charset=utf-8"],
  ["favicon-32x32.png", "image/png"],
]);

const DOCS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flowd HTTP API</title>
<link rel="icon" href="/docs/favicon-32x32.png">
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="api"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({ url: "/openapi.json", dom_id: "#api", deepLinking: true, tryItOutEnabled: true });</script>
</body>
</html>
`;

/** `GET /openapi.json` (built once, from the route descriptions) and the interactive page at `/docs`. */
export function registerDocsRoutes(app: FastifyInstance): void {
  const { version } = JSON.parse(readFileSync(join(dirname(MIGRATIONS_DIR), "package.json"), "utf8")) as { version: string };
  let document: string | null = null;
  app.get("/openapi.json", async (_request, reply) => reply.type("application/json").send((document ??= JSON.stringify(openApiDocument(version)))));

  const swaggerDir = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
  const files = new Map<string, Buffer>();
  app.get("/docs", async (_request, reply) => reply.type("text/html; charset=utf-8").headers(NOT_FRAMED).send(DOCS_PAGE));
  app.get<{ Params: { file: string } }>("/docs/:file", async (request, reply) => {
    const { file } = request.params;
    const type = SWAGGER_FILES.get(file);
    if (!type) return reply.callNotFound();
    let content = files.get(file);
    if (!content) {
      content = readFileSync(join(swaggerDir, file));
      files.set(file, content);
    }
    return reply.type(type).header("cache-control", "public, max-age=3600").send(content);
  });
}
