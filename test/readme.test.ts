import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ERROR_CODES } from "../src/errors.ts";
import { REPO_ROOT } from "../testkit/server-process.ts";

const README = readFileSync(`${REPO_ROOT}README.md`, "utf8");

/** The rows of the table under a `## heading`, as arrays of cells. */
function tableUnder(heading: string): string[][] {
  const section = README.split(`\n## ${heading}\n`)[1]?.split("\n## ")[0] ?? "";
  return section
    .split("\n")
    .filter((line) => line.startsWith("| ") && !line.startsWith("| code") && !line.startsWith("| what"))
    .map((line) => line.split("|").slice(1, -1).map((cell) => cell.trim()));
}

describe("the README as the user's manual", () => {
  it("lists every error code of the catalog, with its HTTP status, and no other", () => {
    const documented = tableUnder("Error codes").map(([code, status]) => [code?.replaceAll("`", ""), Number(status)]);
    expect(documented).toEqual(Object.entries(ERROR_CODES));
  });

  it("names every environment variable the server reads", () => {
    const config = readFileSync(`${REPO_ROOT}src/config.ts`, "utf8");
    const variables = new Set([...config.matchAll(/"(FLOWD_[A-Z_]+)"|env\.(FLOWD_[A-Z_]+)/g)].map((m) => m[1] ?? m[2]));
    expect(variables.size).toBeGreaterThan(10);
    for (const variable of variables) expect(README, `${variable} is not documented`).toContain(`\`${variable}\``);
  });
});
