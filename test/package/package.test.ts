import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../testkit/server-process.ts";
import { tempDir } from "../helpers/server.ts";

const temp = tempDir("flowd-package-");
afterAll(() => temp.remove());

const run = (command: string, args: string[], cwd: string): string =>
  execFileSync(command, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, npm_config_audit: "false", npm_config_fund: "false" } });

/** The package as `npm pack` makes it, from a copy of the repository (its own dist/ is in use by other tests). */
function pack(): string {
  const stage = join(temp.dir, "stage");
  for (const entry of ["package.json", "README.md", "bin", "dist", "src", "migrations", "tsconfig.json", "tsconfig.build.json"]) {
    cpSync(join(REPO_ROOT, entry), join(stage, entry), { recursive: true, filter: (source) => !source.includes(`${join("dist", "types")}`) });
  }
  symlinkSync(join(REPO_ROOT, "node_modules"), join(stage, "node_modules"), "dir");
  // What `prepare` adds to the bundle: the type declarations (the bundle itself is the one `npm test` built).
  run(process.execPath, [join(REPO_ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"], stage);
  const out = join(temp.dir, "out");
  mkdirSync(out);
  run("npm", ["pack", "--ignore-scripts", "--pack-destination", out], stage);
  return join(out, readdirSync(out).find((name) => name.endsWith(".tgz"))!);
}

describe("the npm package", () => {
  it("installs into a plain TypeScript project (tsc --init, module nodenext), whose workflow file and client script compile", async () => {
    const tarball = pack();
    const project = join(temp.dir, "consumer");
    mkdirSync(join(project, "src"), { recursive: true });
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }, null, 2));
    const tsc = join(REPO_ROOT, "node_modules/typescript/bin/tsc");
    // The defaults of `tsc --init` (module nodenext, strict, exactOptionalPropertyTypes, types: []), and where the files are.
    run(process.execPath, [tsc, "--init", "--rootDir", "src", "--outDir", "build"], project);
    // Its dependencies come from npm's cache where they are there (CI's `npm ci` filled it); no install script runs.
    run("npm", ["install", "--ignore-scripts", "--prefer-offline", "--no-save", tarball], project);

    writeFileSync(
      join(project, "src/workflows.ts"),
      `import { Step, Workflow } from "flowd";

export default Workflow({
  id: "greeter",
  steps: [
    Step({ name: "greet", executor: (input) => \`Hello, \${input.message}!\` }),
    Step({ name: "shout", executor: (input) => String(input.previousOutput).toUpperCase() }),
  ],
});
`,
    );
    writeFileSync(
      join(project, "src/watch.ts"),
      `import { createClient, FlowdError, type RunEvent } from "flowd/client";

const client = createClient({ url: "http://127.0.0.1:7777" });
try {
  const run = await client.start("greeter", "world");
  for await (const event of client.watch(run.run_id)) {
    if (event.event === "StepCompleted") console.log(event.step_name, event.content);
    const seen: RunEvent = event;
    console.log(seen.event_index);
  }
} catch (error) {
  if (error instanceof FlowdError) console.error(error.code, error.message);
}
`,
    );
    let output = "";
    try {
      output = run(process.execPath, [tsc, "-p", "."], project);
    } catch (error) {
      output = String((error as { stdout?: string }).stdout) + String((error as { stderr?: string }).stderr);
    }
    expect(output).toBe("");
    expect(readdirSync(join(project, "build")).sort()).toEqual(["watch.d.ts", "watch.d.ts.map", "watch.js", "watch.js.map", "workflows.d.ts", "workflows.d.ts.map", "workflows.js", "workflows.js.map"]);
  }, 240_000);
});
