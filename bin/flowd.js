#!/usr/bin/env node
// The flowd command. Runs the bundle built from src/ by `npm run build` (npm start, npm test
// and npm install build it): plain JS starts in a fraction of the time TypeScript-on-the-fly takes.
import { existsSync } from "node:fs";

const entry = new URL("../dist/cli/flowd.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("flowd: dist/ is missing; run `npm run build` (npm install and npm start do it for you).\n");
  process.exit(1);
}
process.setSourceMapsEnabled(true);
await import(entry.href);
