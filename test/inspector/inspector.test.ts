import { join } from "node:path";
import { SignJWT } from "jose";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "../../src/client/index.ts";
import { REPO_ROOT, startServerProcess, type ServerProcess } from "../../testkit/server-process.ts";
import { CHROMIUM_PATH, launchChromium, NO_CHROMIUM } from "../helpers/browser.ts";
import { freshDatabaseEachTest, range, startServer, waitFor, type TestServer } from "../helpers/server.ts";
import { TcpProxy } from "../helpers/tcp-proxy.ts";

const FIXTURES = join(REPO_ROOT, "test/fixtures/workflows.ts");

/** What the run page shows of its events: the count, and the indices of the rows rendered (scrolled to the end). */
async function shownEvents(page: Page): Promise<{ count: number; rows: number; indices: number[] }> {
  return page.$eval(".event-table", (table) => ({
    count: Number(table.ownerDocument.querySelector("[data-events]")?.getAttribute("data-events")),
    rows: Number(table.getAttribute("data-rows")),
    indices: [...table.querySelectorAll(".event-row")].map((row) => Number(row.getAttribute("data-index"))),
  }));
}

/** The text the page assembled for a step, without what it marks superseded. */
async function assembledText(page: Page, stepPath: string): Promise<string> {
  return page.$$eval(`.stream[data-step="${stepPath}"] .stream-text > span`, (spans) => spans.map((span) => span.textContent).join(""));
}

describe.skipIf(!CHROMIUM_PATH)(`the web inspector in Chromium${CHROMIUM_PATH ? "" : ` (${NO_CHROMIUM})`}`, () => {
  let browser: Browser;
  let t: TestServer;
  beforeAll(async () => {
    [browser, t] = await Promise.all([launchChromium(), startServer()]);
  });
  afterAll(async () => {
    await browser?.close();
    await t?.close();
  });

  async function open(url: string): Promise<Page> {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(error.message));
    (page as Page & { errors: string[] }).errors = errors;
    await page.goto(url);
    return page;
  }

  it("lists runs live: a run started elsewhere appears, and its status changes as it ends", async () => {
    const page = await open(`${t.url}/`);
    await page.waitForSelector(".runs-page");
    const client = createClient({ url: t.url });
    const run = await client.start("ticker", "", { additionalData: { count: 60, delayMs: 30 } });
    const row = `tr[data-run="${run.run_id}"]`;
    await page.waitForSelector(`${row}[data-status="running"]`, { timeout: 5000 });
    await page.waitForSelector(`${row}[data-status="completed"]`, { timeout: 15_000 });
    // The filters narrow it: another status hides it.
    await page.selectOption("select[name=filter-status]", "cancelled");
    await page.waitForSelector(row, { state: "detached", timeout: 5000 });
    await page.selectOption("select[name=filter-status]", "completed");
    await page.waitForSelector(row, { timeout: 5000 });
    expect((page as Page & { errors: string[] }).errors).toEqual([]);
    await page.close();
  });

  it("assembles a step's streamed text as it streams, equal to the run's stored output, and shows every event with its index", async () => {
    const chunks = Array.from({ length: 80 }, (_, i) => `piece ${i} "quoted" \\ ünïcode ✓\n`);
    const client = createClient({ url: t.url });
    const run = await client.start("verbatim", "", { additionalData: { chunks, delayMs: 20 } });
    const page = await open(`${t.url}/#/runs/${run.run_id}`);
    await page.waitForSelector(".event-table");
    // Part of it while it streams …
    await waitFor("some text while streaming", async () => ((await assembledText(page, "0")).length > 0 ? true : undefined));
    expect(chunks.join("").startsWith(await assembledText(page, "0"))).toBe(true);
    // … all of it once done.
    await page.waitForSelector('[data-status="completed"]', { timeout: 15_000 });
    const stored = await client.runs.get(run.run_id);
    expect(await assembledText(page, "0")).toBe(stored.content);
    const shown = await shownEvents(page);
    expect(shown.count).toBe(stored.event_count);
    expect(shown.rows).toBe(stored.event_count);
    expect(shown.indices.at(-1)).toBe(stored.event_count - 1);
    await page.close();
  });

  it("continues a paused run from its form, signals a waiting one, and cancels a running one", async () => {
    const client = createClient({ url: t.url });
    const paused = await client.start("approval", "draft this");
    const page = await open(`${t.url}/#/runs/${paused.run_id}`);
    await page.waitForSelector('.continue-form[data-step="1"]', { timeout: 10_000 });
    await page.click('.continue-form button[data-answer="yes"]');
    await page.waitForSelector('[data-status="completed"]', { timeout: 10_000 });
    expect((await client.runs.get(paused.run_id)).content).toBe("receipt for sent (Draft: draft this)");

    const waiting = await client.start("signalled");
    await page.goto(`${t.url}/#/runs/${waiting.run_id}`);
    await page.waitForSelector(".signal-form", { timeout: 10_000 });
    expect(await page.inputValue(".signal-form input[name=signal]")).toBe("approved");
    await page.fill(".signal-form textarea[name=payload]", '{"by": "ada"}');
    await page.click(".signal-form button[type=submit]");
    await page.waitForSelector('[data-status="completed"]', { timeout: 10_000 });
    expect((await client.runs.get(waiting.run_id)).content).toBe("approved by ada");

    const long = await client.start("ticker", "", { additionalData: { count: 10_000, delayMs: 20 } });
    await page.goto(`${t.url}/#/runs/${long.run_id}`);
    await page.click('button[data-action="cancel"]', { timeout: 10_000 });
    await page.waitForSelector('[data-status="cancelled"]', { timeout: 10_000 });
    expect((await client.runs.get(long.run_id)).status).toBe("cancelled");
    await page.close();
  });

  it("asks for the key when the server has one, loads nothing without it, and works once given a key or a user's JWT", async () => {
    const secret = "inspector-jwt-secret-0123456789-0123456789";
    const locked = await startServer({ securityKey: "inspector-key-0123456789", settings: { jwtSecret: secret, userIsolation: true } });
    try {
      const apiAnswers: number[] = [];
      const page = await browser.newPage();
      page.on("response", (response) => {
        if (!/\/(assets|docs)\/|\/$/.test(new URL(response.url()).pathname)) apiAnswers.push(response.status());
      });
      await page.goto(`${locked.url}/`);
      await page.waitForSelector(".key-prompt");
      expect(await page.$(".runs-page")).toBeNull();
      expect(apiAnswers.length).toBeGreaterThan(0);
      expect(apiAnswers.every((status) => status === 401)).toBe(true);

      await page.fill(".key-prompt input", "wrong-key-0000000000");
      await page.click(".key-prompt button");
      await page.waitForSelector(".key-prompt .problem");
      expect(await page.$(".runs-page")).toBeNull();

      await page.fill(".key-prompt input", "inspector-key-0123456789");
      await page.click(".key-prompt button");
      await page.waitForSelector(".runs-page");
      // Kept for the tab: a reload does not ask again.
      await page.reload();
      await page.waitForSelector(".runs-page");
      await page.close();

      // A user's JWT: the inspector shows that user's runs, and only theirs (FLOWD_USER_ISOLATION).
      const jwt = (sub: string) =>
        new SignJWT({ scopes: ["workflows:run"] }).setProtectedHeader({ alg: "HS256" }).setSubject(sub).setExpirationTime("1h").sign(new TextEncoder().encode(secret));
      const mine = await createClient({ url: locked.url, token: await jwt("alice") }).start("ticker", "", { additionalData: { count: 3 } });
      const theirs = await createClient({ url: locked.url, token: await jwt("bob") }).start("ticker", "", { additionalData: { count: 3 } });
      const userPage = await browser.newPage();
      await userPage.goto(`${locked.url}/`);
      await userPage.waitForSelector(".key-prompt");
      await userPage.fill(".key-prompt input", await jwt("alice"));
      await userPage.click(".key-prompt button");
      await userPage.waitForSelector(`a[href="#/runs/${mine.run_id}"]`);
      expect(await userPage.$(`a[href="#/runs/${theirs.run_id}"]`)).toBeNull();
      await userPage.close();
    } finally {
      await locked.close();
    }
  });

  describe("across a SIGKILL of the server", () => {
    const files = freshDatabaseEachTest();
    let server: ServerProcess | null = null;
    afterAll(async () => {
      await server?.stop();
    });

    it("the run page catches up by itself after the restart: every stored event shown once, with the interrupted attempt's text marked superseded", async () => {
      server = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
      const proxy = await TcpProxy.start(server.port);
      try {
        const client = createClient({ url: proxy.url });
        const chunks = Array.from({ length: 150 }, (_, i) => `chunk ${i}. `);
        const run = await client.start("verbatim", "", { additionalData: { chunks, delayMs: 20 } });
        const page = await open(`${proxy.url}/#/runs/${run.run_id}`);
        await page.waitForSelector(".event-table");
        await waitFor("40 events on the page", async () => ((await shownEvents(page)).count >= 40 ? true : undefined));
        server.child.kill("SIGKILL");
        await server.exited;
        server = await startServerProcess(["--workflows", FIXTURES, "--db", files.db]);
        proxy.target = server.port;
        await page.waitForSelector('[data-status="completed"]', { timeout: 20_000 });
        const stored = await client.runs.get(run.run_id);
        expect(stored.attempt).toBe(2);
        const shown = await shownEvents(page);
        expect(shown.count).toBe(stored.event_count);
        expect(shown.rows).toBe(stored.event_count);
        expect(shown.indices).toEqual(range(shown.indices.length).map((i) => shown.indices[0]! + i));
        expect(shown.indices.at(-1)).toBe(stored.event_count - 1);
        expect(await page.$$(".stream del.superseded")).not.toHaveLength(0);
        expect(await assembledText(page, "0")).toBe(stored.content);
        await page.close();
      } finally {
        await proxy.close();
      }
    });
  });
});
