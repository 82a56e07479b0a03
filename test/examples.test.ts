import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "./helpers/server.ts";
import { REPO_ROOT, startServerProcess, type ServerProcess } from "./helpers/server-process.ts";
import { TestClient } from "./helpers/ws-client.ts";

let temp: ReturnType<typeof tempDir>;
beforeEach(() => {
  temp = tempDir();
});
afterEach(() => {
  temp.remove();
});

async function runGreeter(server: ServerProcess): Promise<void> {
  const { client } = await TestClient.connect(server.wsUrl);
  client.send({ action: "start-workflow", workflow_id: "greeter", message: "hi there" });
  const frames = await client.untilTerminal();
  await client.close();
  expect(frames.at(-1)).toMatchObject({ event: "WorkflowCompleted", content: { count: 8, stream: "Hello, HI THERE" } });
  expect(frames.some((f) => f.event === "CustomEvent" && f.name === "progress")).toBe(true);
}

describe("the README's runnable examples", () => {
  it("npx flowd serve --workflows ./examples/greeter.ts serves the greeter", async () => {
    const server = await startServerProcess(["--workflows", "./examples/greeter.ts", "--db", join(temp.dir, "a.db")]);
    try {
      await runGreeter(server);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it("examples/serve.ts serves the greeter from code with serve()", async () => {
    const tsxCli = join(REPO_ROOT, "node_modules/tsx/dist/cli.mjs");
    const server = await startServerProcess([], {
      nodeArgs: [tsxCli, "examples/serve.ts"],
      env: { PORT: "0", FLOWD_DB: join(temp.dir, "b.db") },
    });
    try {
      await runGreeter(server);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});
