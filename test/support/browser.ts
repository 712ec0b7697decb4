/**
 * Real-browser fixtures: Debian's Chromium (/usr/bin/chromium, installed by
 * .ci/run) driven by playwright-core, which downloads no browser. Each launch
 * uses a fresh profile and the flags this machine's closed network needs
 * (no background networking, component updates or sync, which would try to
 * reach Google's hosts). Screenshots go to test-artifacts/ (ignored by git,
 * kept by CI as the run's artifacts).
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { type Browser, type LaunchOptions, type Page, chromium } from "playwright-core";

/** CHROMIUM is the browser binary; CHROMIUM_PATH overrides it. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** ARTIFACTS is where screenshots are saved (relative to the repository root, where npm runs the tests). */
export const ARTIFACTS = process.env.TEST_ARTIFACTS_DIR ?? "test-artifacts";

/** BASE_ARGS are the flags every launch gets: headless as root on a machine with no GPU and no internet. */
const BASE_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

/** launchBrowser starts headless Chromium; `extraArgs` are appended (e.g. `--ignore-certificate-errors-spki-list=...`). */
export async function launchBrowser(extraArgs: readonly string[] = [], options: LaunchOptions = {}): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, ...options, args: [...BASE_ARGS, ...extraArgs] });
}

/** saveScreenshot writes `<ARTIFACTS>/<name>.png` (the name is made file-safe) and returns its path. */
export async function saveScreenshot(page: Page, name: string): Promise<string> {
  await mkdir(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name.replace(/[^A-Za-z0-9._-]+/g, "-")}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** pageLog collects a page's console messages and uncaught errors, for a failing test's message. */
export function pageLog(page: Page): string[] {
  const lines: string[] = [];
  page.on("console", (m) => lines.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => lines.push(`[pageerror] ${e.message}`));
  return lines;
}
