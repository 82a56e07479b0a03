/** B13: the web inspector in Chromium (Debian's, through playwright-core), against a real server. */
import { chromium, type Browser, type Page } from "playwright-core";
import { CHROMIUM_PATH } from "../../test/helpers/browser.ts";

export { CHROMIUM_PATH };

export async function launch(): Promise<Browser> {
  if (!CHROMIUM_PATH) throw new Error("B13 needs Chromium: apt-get install chromium (or set CHROMIUM_PATH)");
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: process.getuid?.() === 0 ? ["--no-sandbox"] : [] });
}

/** Records, in page time (ms since navigation), when the first event row showed and when `count` events were shown. */
const WATCH_ROWS = `
  window.__b13 = { firstRow: null, allRows: null, longTasks: [] };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__b13.longTasks.push([entry.startTime, entry.duration]);
  }).observe({ type: "longtask", buffered: true });
  new MutationObserver(() => {
    const marks = window.__b13;
    if (marks.firstRow === null && document.querySelector(".event-row")) marks.firstRow = performance.now();
    const shown = document.querySelector("[data-events]");
    if (marks.allRows === null && shown && Number(shown.getAttribute("data-events")) >= window.__b13Count) marks.allRows = performance.now();
  }).observe(document, { subtree: true, childList: true, attributes: true });
`;

/** Opens a finished run of `count` events: first row shown, all shown, and how long a scroll to its middle takes to show those rows. */
export interface Opened {
  firstRowMs: number;
  allRowsMs: number;
  /** Lighthouse's rule: from the first row on, once no task of 50 ms or more holds the main thread (the end of the last one, or the first row). */
  interactiveMs: number;
  longestTaskMs: number;
  scrollMs: number;
}

export async function openFinishedRun(browser: Browser, url: string, runId: string, count: number): Promise<Opened> {
  const page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
  await page.addInitScript(`window.__b13Count = ${count}; ${WATCH_ROWS}`);
  await page.goto(`${url}/#/runs/${runId}`);
  await page.waitForFunction("window.__b13.allRows !== null", undefined, { timeout: 60_000 });
  // Long tasks are reported after they end: a moment for the last ones.
  await page.waitForTimeout(200);
  const marks = (await page.evaluate("window.__b13")) as { firstRow: number; allRows: number; longTasks: [number, number][] };
  const scrollMs = await scrollToMiddle(page, count);
  await page.close();
  const ends = marks.longTasks.map(([start, duration]) => start + duration);
  return {
    firstRowMs: marks.firstRow,
    allRowsMs: marks.allRows,
    interactiveMs: Math.max(marks.firstRow, ...ends),
    longestTaskMs: Math.max(0, ...marks.longTasks.map(([, duration]) => duration)),
    scrollMs,
  };
}

/** A scroll of the events table to its middle, until the rows there are on screen (one input answered). */
async function scrollToMiddle(page: Page, count: number): Promise<number> {
  const middle = Math.floor(count / 2);
  return (await page.evaluate(`new Promise((resolve) => {
    const table = document.querySelector(".event-table");
    const started = performance.now();
    table.scrollTop = table.scrollHeight / 2;
    const check = () => {
      const rows = [...table.querySelectorAll(".event-row")].map((row) => Number(row.getAttribute("data-index")));
      if (rows.some((index) => Math.abs(index - ${middle}) < 100)) resolve(performance.now() - started);
      else requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  })`)) as number;
}

/** The same browser fetching the run's events as JSON pages (as the page does) and parsing them, nothing rendered: the floor under openFinishedRun. */
export async function rawReceive(browser: Browser, url: string, runId: string, count: number): Promise<number> {
  const page = await browser.newPage();
  await page.goto(`${url}/docs`);
  const ms = (await page.evaluate(`(async () => {
    const started = performance.now();
    let after = -1;
    let received = 0;
    for (;;) {
      const response = await fetch("/runs/" + ${JSON.stringify(runId)} + "/events?limit=10000&after=" + after, { headers: { accept: "application/json" } });
      const body = await response.json();
      received += body.events.length;
      after = body.next_after;
      if (!body.has_more) break;
    }
    if (received !== ${count}) throw new Error("received " + received);
    return performance.now() - started;
  })()`)) as number;
  await page.close();
  return ms;
}

/** Share of wall time the page's main thread was busy (Chrome's TaskDuration) while a run streamed to it for `seconds`. */
export async function busyWhileStreaming(browser: Browser, url: string, runId: string, seconds: number): Promise<{ busy: number; events: number }> {
  const page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable");
  await page.goto(`${url}/#/runs/${runId}`);
  await page.waitForSelector(".event-row");
  const taskSeconds = async (): Promise<number> => {
    const { metrics } = await cdp.send("Performance.getMetrics");
    return metrics.find((metric) => metric.name === "TaskDuration")?.value ?? 0;
  };
  const before = await taskSeconds();
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const busy = (await taskSeconds()) - before;
  const elapsed = (performance.now() - started) / 1000;
  const events = Number(await page.getAttribute("[data-events]", "data-events"));
  await page.close();
  return { busy: busy / elapsed, events };
}
