import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

/** Debian's Chromium (`apt-get install chromium`), or the one CHROMIUM_PATH names; null if there is none. */
export const CHROMIUM_PATH: string | null = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"].find((path): path is string => !!path && existsSync(path)) ?? null;

/** Why browser tests are skipped on this machine, for the skip's name. */
export const NO_CHROMIUM = "skipped: no Chromium here (apt-get install chromium, or set CHROMIUM_PATH)";

/** Headless Chromium; as root it needs --no-sandbox. */
export async function launchChromium(): Promise<Browser> {
  if (!CHROMIUM_PATH) throw new Error(NO_CHROMIUM);
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: process.getuid?.() === 0 ? ["--no-sandbox"] : [] });
}
