#!/usr/bin/env node
// Runs the TypeScript CLI as-is through tsx, which also lets `--workflows` load .ts modules.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/flowd.ts");
