/**
 * Makes docs/inspector.png, the README's picture of the web inspector: a flowd server on a
 * scratch database, a run of the built-in content-creation workflow (the offline demo
 * model), and the run's page in headless Chromium (Debian's `chromium`, or CHROMIUM_PATH).
 *
 *   npm run build && npx tsx docs/screenshot.ts
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { createClient } from "../src/client/index.ts";
import { serve } from "../src/serve.ts";
import { launchChromium } from "../test/helpers/browser.ts";

const out = fileURLToPath(new URL("inspector.png", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "flowd-screenshot-"));
const server = await serve({ port: 0, host: "127.0.0.1", db: join(dir, "flowd.db"), demoPaceMs: 5, logger: pino({ level: "silent" }) });
const browser = await launchChromium();
try {
  const client = createClient({ url: server.url });
  const run = await client.start("content-creation-workflow", "Durable logs for LLM agents");
  for await (const _ of client.watch(run.run_id)) {
    // Until the run ends.
  }
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 }, deviceScaleFactor: 1 });
  await page.goto(`${server.url}/#/runs/${run.run_id}`);
  await page.waitForSelector('[data-status="completed"]');
  await page.waitForTimeout(300);
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
