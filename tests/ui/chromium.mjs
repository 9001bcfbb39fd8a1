// Starting Debian's /usr/bin/chromium for the browser tests (admin.mjs,
// docs.mjs) with playwright-core, and reporting Content-Security-Policy
// violations from inside every page (some never reach the console).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

/**
 * A headless Chromium on a throwaway profile. `onCspViolation(text)` is called
 * for every violation on any page. Close it with the returned `close()`.
 */
export async function launch({ viewport, onCspViolation }) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "gatehouse-ui-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    headless: true,
    viewport,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  await context.exposeBinding("__reportCspViolation", ({ page }, detail) => {
    onCspViolation(`[${page.url()}] CSP violation: ${detail}`);
  });
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__reportCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} (${e.sourceFile || ""}:${e.lineNumber || 0})`);
    });
  });
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}
