// The API reference page (/docs) in a real headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core; no browser is downloaded).
//
//   node tests/ui/docs.mjs <base_url> <screenshot_dir>
//
// Run by tests/api/ui.rs against an in-process Gatehouse. Exits 0 when every
// step passes, 1 on the first failure. Any JavaScript error, console error,
// failed request or Content-Security-Policy violation fails the run.

import fs from "node:fs";
import path from "node:path";
import { launch } from "./chromium.mjs";

const [base, shotDir] = process.argv.slice(2);
if (!base || !shotDir) {
  console.error("usage: node docs.mjs <base_url> <screenshot_dir>");
  process.exit(2);
}
const METHODS = ["get", "put", "post", "patch", "delete", "head", "options", "trace"];

fs.mkdirSync(shotDir, { recursive: true });

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

const problems = [];
function passed(message) {
  check(problems.length === 0, `${message}: browser reported problems:\n  ${problems.join("\n  ")}`);
  console.log(`docs: ${message}`);
}

// The document as the server serves it, read outside the browser.
const spec = await (await fetch(`${base}/api/v1/openapi.json`)).json();
const operations = [];
for (const [p, item] of Object.entries(spec.paths)) {
  for (const method of METHODS) {
    if (item[method]) operations.push({ method, path: p });
  }
}

/** The article drawn for an operation. */
function operationOn(page, op) {
  return page.locator(`article.docs-operation[data-method="${op.method}"][data-path="${op.path}"]`);
}

const { context, close } = await launch({
  viewport: { width: 1280, height: 900 },
  onCspViolation: (text) => problems.push(text),
});

let exitCode = 0;
let page;
try {
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (err) => problems.push(`JavaScript error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  page.on("requestfailed", (req) => problems.push(`request failed: ${req.url()} (${req.failure()?.errorText})`));
  const offsite = [];
  page.on("request", (req) => {
    if (!req.url().startsWith(base)) offsite.push(req.url());
  });

  // 1. The page loads, under the strict CSP, and renders every operation.
  const res = await page.goto(`${base}/docs`);
  check(res.status() === 200, `/docs answered ${res.status()}`);
  const csp = res.headers()["content-security-policy"] || "";
  check(csp.includes("script-src 'self'") && csp.includes("style-src 'self'") && !csp.includes("unsafe-inline"), `strict CSP on /docs: ${csp}`);
  await page.locator("#docs-count").waitFor();
  const articles = await page.locator("article.docs-operation").count();
  check(articles === operations.length, `${articles} operations drawn, the document has ${operations.length}`);
  for (const op of operations) {
    const article = operationOn(page, op);
    check((await article.count()) === 1, `${op.method} ${op.path} is drawn once`);
    const heading = (await article.locator("h3").textContent()).replace(/\s+/g, " ").trim();
    check(heading.startsWith(`${op.method.toUpperCase()} ${op.path}`), `heading of ${op.method} ${op.path}: ${heading}`);
  }
  check(offsite.length === 0, `no request leaves the server: ${offsite.join(", ")}`);
  await page.screenshot({ path: path.join(shotDir, "docs.png") });
  passed(`renders all ${operations.length} operations under the CSP`);

  // 2. An operation shows its parameters, body, responses and authentication.
  const verifyOp = operations.find((o) => o.method === "post" && o.path === "/api/v1/keys/verify");
  check(verifyOp, "the document has POST /api/v1/keys/verify");
  const verify = operationOn(page, verifyOp);
  check((await verify.locator("h4", { hasText: "Request body" }).count()) === 1, "verify shows its request body");
  const verifyText = await verify.textContent();
  check(verifyText.includes("application/json"), "the body's content type is shown");
  check(/\b200\b/.test(verifyText), "the 200 response is listed");
  const listKeys = operations.find((o) => o.method === "get" && o.path === "/api/v1/api-keys");
  const list = operationOn(page, listKeys);
  check((await list.locator("h4", { hasText: "Parameters" }).count()) === 1, "listing keys shows its parameters");
  check((await list.locator("td code", { hasText: /^limit$/ }).count()) === 1, "the limit parameter is listed");
  check((await list.textContent()).includes("Authentication:"), "the operation names its authentication");
  const health = operations.find((o) => o.path === "/healthz");
  if (health) {
    check((await operationOn(page, health).textContent()).includes("No authentication"), "healthz needs no authentication");
  }
  passed("operations show parameters, bodies, responses and authentication");

  // 3. Schema links lead to the schema's fields.
  const schemaLink = list.locator(".docs-type a").first();
  const target = (await schemaLink.getAttribute("href")).slice(1);
  await schemaLink.click();
  await page.waitForFunction((id) => location.hash === `#${id}`, target);
  const schema = page.locator(`[id="${target}"]`);
  check(await schema.isVisible(), `the schema ${target} is on the page`);
  check((await schema.locator("table tbody tr").count()) > 0, `the schema ${target} lists its fields`);
  passed(`schema links work (${target})`);

  // 4. The filter narrows the operations and the table of contents.
  await page.fill("#docs-filter", "verify");
  const visible = await page.locator("article.docs-operation:visible").count();
  check(visible > 0 && visible < operations.length, `the filter shows some operations (${visible})`);
  const shown = await page.locator("article.docs-operation:visible").evaluateAll((els) =>
    els.map((el) => `${el.closest("section").dataset.tag} ${el.textContent}`.toLowerCase()),
  );
  for (const text of shown) check(text.includes("verify"), `a shown operation matches: ${text.slice(0, 80)}`);
  check(await verify.isVisible(), "the verify operation matches `verify`");
  check(!(await list.isVisible()), "listing keys does not match `verify`");
  check((await page.locator("#docs-count").textContent()).includes(`${visible} operations match`), "the count follows the filter");
  await page.fill("#docs-filter", "");
  check((await page.locator("article.docs-operation:visible").count()) === operations.length, "clearing the filter shows everything");
  passed("the filter narrows the list");

  // 5. A phone-width look.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: path.join(shotDir, "docs-phone.png") });
  passed("no JavaScript errors, console errors or CSP violations");
  console.log("docs: all steps passed");
} catch (err) {
  exitCode = 1;
  console.error(`docs: FAILED: ${err instanceof Failure ? err.message : err.stack || err}`);
  if (problems.length) console.error(`docs: browser problems:\n  ${problems.join("\n  ")}`);
  try {
    if (page) await page.screenshot({ path: path.join(shotDir, "docs-failure.png"), fullPage: true });
  } catch {
    // The browser may be gone.
  }
} finally {
  await close();
}
process.exit(exitCode);
