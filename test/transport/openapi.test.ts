import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkDescribed, ROUTES, routeShape } from "../../src/transport/http/api-description.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

let t: TestServer;
beforeAll(async () => {
  t = await startServer({ securityKey: "docs-key-123456" });
});
afterAll(async () => {
  await t.close();
});

type Document = { openapi: string; paths: Record<string, Record<string, { parameters: { name: string; in: string }[]; responses: Record<string, unknown> }>> };

describe("GET /openapi.json", () => {
  it("is an OpenAPI 3.1 document a validator accepts, served without a key", async () => {
    const response = await fetch(`${t.url}/openapi.json`);
    expect(response.status).toBe(200);
    const document = (await response.json()) as Document;
    expect(document.openapi).toBe("3.1.0");
    const result = await new Validator().validate(document as never);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    // The validator does check: the same document with a response that lacks its description fails.
    const broken = structuredClone(document);
    delete (broken.paths["/runs"]!.get!.responses["200"] as { description?: string }).description;
    expect((await new Validator().validate(broken as never)).valid).toBe(false);
  });

  it("describes every route the server answers, with its parameters, and no route it does not", async () => {
    const document = (await (await fetch(`${t.url}/openapi.json`)).json()) as Document;
    const described = Object.entries(document.paths).flatMap(([path, operations]) => Object.keys(operations).map((method) => `${method.toUpperCase()} ${path}`));
    expect(described.sort()).toEqual(ROUTES.map((route) => `${route.method} ${route.path}`).sort());
    // Each described route is routed (with the key): it may refuse the made-up run, never answer "no route".
    const headers = { accept: "application/json", authorization: "Bearer docs-key-123456" };
    for (const entry of described) {
      const [method, path] = entry.split(" ") as [string, string];
      const url = `${t.url}${path.replace("{workflow_id}", "ticker").replace("{run_id}", "r1").replace("{name}", "go")}`;
      const response = await fetch(url, { method, headers });
      const body = response.headers.get("content-type")?.includes("json") ? ((await response.json()) as { code?: string }) : {};
      expect(body.code, entry).not.toBe("NOT_FOUND");
      expect(response.status, entry).not.toBe(401);
    }
    // The check itself can fail: a route nobody registered is "no route".
    expect(((await (await fetch(`${t.url}/runs/r1/nothing`, { headers })).json()) as { code: string }).code).toBe("NOT_FOUND");
    expect(document.paths["/runs"]!.get!.parameters.map((p) => `${p.in}:${p.name}`).sort()).toEqual(["query:limit", "query:offset", "query:session_id", "query:status", "query:workflow_id"]);
    expect(document.paths["/workflows/{workflow_id}/runs"]!.post!.parameters.map((p) => `${p.in}:${p.name}`)).toEqual(["path:workflow_id", "header:idempotency-key", "header:traceparent"]);
  });

  it("a server with a route the description lacks refuses to start, naming it", () => {
    const registered = ROUTES.map((route) => ({ method: route.method, url: route.path.replace(/\{([^}]+)\}/g, ":$1") }));
    expect(() => checkDescribed(registered)).not.toThrow();
    expect(() => checkDescribed([...registered, { method: "PUT", url: "/runs/:runId" }])).toThrow(/PUT \/runs\/:runId is not in the API description/);
    expect(routeShape("/runs/:runId/signals/:name")).toBe(routeShape("/runs/{run_id}/signals/{name}"));
  });
});

describe("GET /docs", () => {
  it("serves the interactive page and its script from the package, without a key", async () => {
    const page = await fetch(`${t.url}/docs`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('SwaggerUIBundle({ url: "/openapi.json"');
    expect(html).not.toMatch(/https?:\/\//);
    const script = await fetch(`${t.url}/docs/swagger-ui-bundle.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get("content-type")).toContain("javascript");
    expect((await script.arrayBuffer()).byteLength).toBeGreaterThan(100_000);
    expect(page.headers.get("content-security-policy")).toBe("frame-ancestors 'none'");
    for (const name of ["package.json", "constructor", "toString", "__proto__"]) expect((await fetch(`${t.url}/docs/${name}`)).status, name).toBe(404);
    for (const name of ["constructor", "toString", "main.tsx"]) expect((await fetch(`${t.url}/assets/${name}`)).status, name).toBe(404);
    expect((await fetch(`${t.url}/docs/..%2Fpackage.json`)).status).toBe(404);
  });
});
