import { pino, type Logger } from "pino";

/** The server's JSON logger (one line per record, `runId` on run records). */
export function createLogger(level: string): Logger {
  return pino({ name: "flowd", level, base: { pid: process.pid } });
}
