import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ERROR_CODES, Errors, FlowdError } from "../src/errors.ts";
import { REPO_ROOT } from "../testkit/server-process.ts";

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : [],
  );
}

describe("the error catalog", () => {
  it("is the only place flowd's errors are made: no FlowdError is built anywhere else in src/", () => {
    const offenders = sourceFiles(join(REPO_ROOT, "src"))
      .filter((file) => !file.endsWith(join("src", "errors.ts")))
      .flatMap((file) =>
        readFileSync(file, "utf8")
          .split("\n")
          .map((line, i) => ({ file: file.slice(REPO_ROOT.length), line: i + 1, text: line }))
          // (Plain Errors remain only for failures inside a run: a step's, a tool's, which become StepError data.)
          .filter(({ text }) => /new FlowdError\(/.test(text)),
      );
    expect(offenders).toEqual([]);
  });

  it("makes errors whose code is a catalogued code and whose status is the code's", () => {
    const samples = [Errors.runNotFound("r"), Errors.tooManyRuns(3), Errors.databaseReadOnly("/x.db", new Error("EROFS")), Errors.fromServer("nope", "m")];
    for (const error of samples) {
      expect(error).toBeInstanceOf(FlowdError);
      expect(error.httpStatus).toBe(ERROR_CODES[error.code]);
    }
    expect(Errors.fromServer("nope", "m").code).toBe("INTERNAL");
    expect(Errors.fromServer("RUN_NOT_FOUND", "m").code).toBe("RUN_NOT_FOUND");
  });
});
