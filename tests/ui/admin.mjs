// End-to-end test of the admin UI in a real headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core; no browser is downloaded).
//
//   node tests/ui/admin.mjs <base_url> <screenshot_dir>
//
// Run by tests/api/ui.rs against an in-process Gatehouse in local mode.
// Exits 0 when every step passes, 1 on the first failure. Any JavaScript
// error, console error or Content-Security-Policy violation on any page
// fails the run; the only console errors allowed are Chromium's own
// "Failed to load resource" lines for responses a step expects (the 401 of
// the expired-session check, the 404s of routes this server does not have).

import fs from "node:fs";
import path from "node:path";
import { launch } from "./chromium.mjs";

const [base, shotDir] = process.argv.slice(2);
if (!base || !shotDir) {
  console.error("usage: node admin.mjs <base_url> <screenshot_dir>");
  process.exit(2);
}
const TIMEOUT = 20_000;
const KEY_RE = /^gate_sk_[0-9A-Za-z]{38}$/;

fs.mkdirSync(shotDir, { recursive: true });

/** Reports a finished step, failing it if the browser reported a problem during it. */
function passed(message) {
  assertNoProblems(message);
  console.log(`ui: ${message}`);
}

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

// --- Problems collected from every page -----------------------------------

const problems = [];
/** Console errors a step expects: [{status, path}] of HTTP answers. */
let expectedHttpErrors = [];

function watch(page, label) {
  page.on("pageerror", (err) => problems.push(`[${label}] JavaScript error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    const where = msg.location().url || "";
    const http = /^Failed to load resource: the server responded with a status of (\d{3})/.exec(text);
    if (http) {
      const status = Number(http[1]);
      let pathname = "";
      try {
        pathname = new URL(where).pathname;
      } catch {
        pathname = where;
      }
      if (expectedHttpErrors.some((e) => e.status === status && e.path === pathname)) return;
      problems.push(`[${label}] unexpected HTTP ${status} for ${where}`);
      return;
    }
    problems.push(`[${label}] console error: ${text}${where ? ` (${where})` : ""}`);
  });
}

async function newPage(context, label) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  watch(page, label);
  return page;
}

function assertNoProblems(step) {
  check(problems.length === 0, `${step}: browser reported problems:\n  ${problems.join("\n  ")}`);
}

// --- API calls made by the test itself (outside the browser) ---------------

async function verify(key, scopes) {
  const res = await fetch(`${base}/api/v1/keys/verify`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ key, scopes }),
  });
  check(res.status === 200, `verify answered ${res.status}`);
  return res.json();
}

/** Logs `email` in through the API (code from the JSON mailbox); returns its session cookies. */
async function cookieLogin(email) {
  const post = (path, body) => fetch(`${base}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  check((await post("/api/v1/auth/send-code", { email })).status === 202, "send-code answers 202");
  const box = await (await fetch(`${base}/api/v1/dev/mailbox`)).json();
  const mail = box.items.find((m) => m.to === email);
  check(mail, `a message to ${email} in the mailbox`);
  const code = mail.body.split("\n").map((l) => l.trim()).find((l) => /^[0-9]{6,10}$/.test(l));
  const res = await post("/api/v1/auth/verify-code", { email, code, cookie: true });
  check(res.status === 200, `verify-code answers 200, got ${res.status}`);
  return res.headers.getSetCookie().map((line) => {
    const [pair] = line.split(";");
    const at = pair.indexOf("=");
    return { name: pair.slice(0, at), value: pair.slice(at + 1), url: base };
  });
}

// --- The run -----------------------------------------------------------------

const { context, close } = await launch({
  viewport: { width: 1280, height: 860 },
  onCspViolation: (text) => problems.push(text),
});

let exitCode = 0;
const email = `ui-${Date.now().toString(36)}@acme.test`;
const teammate = `teammate-${Date.now().toString(36)}@acme.test`;

let page = null;
try {
  // A persistent context opens with one blank tab; use it.
  for (const extra of context.pages()) await extra.close();
  page = await newPage(context, "main");

  // 1. Not logged in: / leads to the login page, which links to the mailbox.
  await page.goto(`${base}/`);
  await page.waitForURL((u) => u.pathname === "/login");
  const mailboxLink = page.locator("#mailbox-link");
  await mailboxLink.waitFor({ state: "visible" });
  check((await mailboxLink.getAttribute("href")) === "/dev/mailbox", "the mailbox link points at /dev/mailbox");
  await page.screenshot({ path: path.join(shotDir, "login.png"), fullPage: true });
  passed("login page shows the local mailbox link");

  // 2. Ask for a code, read it on the mailbox page, log in.
  await page.getByLabel("Email address").fill(email);
  await page.getByRole("button", { name: "Send code" }).click();
  await page.getByLabel("Login code").waitFor();
  const notice = (await page.locator(".auth-card [role=status]").first().textContent()).trim();
  check(notice === "We sent a code. It is valid for 10 minutes.",
    `the code step states the lifetime the email states (auth.code_ttl_secs), got ${notice}`);
  const [mailbox] = await Promise.all([context.waitForEvent("page"), mailboxLink.click()]);
  watch(mailbox, "mailbox");
  mailbox.setDefaultTimeout(TIMEOUT);
  await mailbox.waitForLoadState();
  check(new URL(mailbox.url()).pathname === "/dev/mailbox", "the link opens /dev/mailbox");
  const codeEl = mailbox.locator(`article.mail[data-to="${email}"] .mail-code`).first();
  await codeEl.waitFor();
  const code = (await codeEl.textContent()).trim();
  check(/^[0-9]{6}$/.test(code), `a 6-digit code on the mailbox page, got ${code}`);
  await mailbox.close();
  passed("read the login code from the mailbox page");

  await page.getByLabel("Login code").fill(code);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL((u) => u.pathname === "/keys");
  await page.getByRole("heading", { name: "API keys" }).waitFor();
  const selected = await page.locator("#project-select option:checked").textContent();
  check(selected.startsWith("Personal"), `the personal project is selected, got ${selected}`);
  await page.locator(".list-area .empty").waitFor();
  passed("logged in and landed on the keys page of the personal project");

  // 3. Create a secret key with a scope through the dialog.
  await page.getByRole("button", { name: "Create key" }).click();
  const dialog = page.locator("dialog[open]");
  await dialog.getByLabel("Name").fill("Billing service");
  await dialog.getByLabel("analytics:read").check();
  await dialog.getByLabel("Owner id").fill("cus_42");
  await dialog.locator(".dialog-body").evaluate((body) => {
    body.scrollTop = 0;
  });
  await page.screenshot({ path: path.join(shotDir, "keys-create-dialog.png") });
  await dialog.getByRole("button", { name: "Create key" }).click();
  const secretEl = page.locator("dialog[open] #secret-value");
  await secretEl.waitFor();
  const plaintext = (await secretEl.textContent()).trim();
  check(KEY_RE.test(plaintext), `the plaintext key has the documented shape, got ${plaintext}`);
  const warning = await page.locator("dialog[open] .alert-warn").textContent();
  check(/not be shown again/.test(warning), "the dialog warns the key will not be shown again");
  await page.locator("dialog[open]").getByRole("button", { name: "Copy" }).waitFor();
  await page.screenshot({ path: path.join(shotDir, "keys-created.png") });
  const good = await verify(plaintext, ["analytics:read"]);
  check(good.valid === true, `the new key verifies: ${JSON.stringify(good)}`);
  await page.locator("dialog[open]").getByRole("button", { name: "Done" }).click();
  await page.locator("dialog").waitFor({ state: "detached" });
  const html = await page.evaluate(() => document.documentElement.outerHTML);
  check(!html.includes(plaintext), "after closing the dialog the plaintext key is nowhere in the page");
  const row = page.locator("tr", { hasText: "Billing service" });
  await row.waitFor();
  check((await row.textContent()).includes(plaintext.slice(0, 16)), "the table shows the key's prefix");
  passed("created a key; it verifies and is gone from the page after the dialog closed");

  // 4. Revoke it (with the confirmation); verify now refuses it.
  await row.getByRole("button", { name: "Revoke Billing service" }).click();
  const confirm = page.locator("dialog[open]");
  await confirm.getByRole("heading", { name: "Revoke this key?" }).waitFor();
  await confirm.getByRole("button", { name: "Revoke key" }).click();
  await page.locator("dialog").waitFor({ state: "detached" });
  await page.locator("tr", { hasText: "Billing service" }).waitFor({ state: "detached" });
  const revoked = await verify(plaintext, []);
  check(revoked.valid === false && revoked.code === "invalid_key", `verify refuses the revoked key: ${JSON.stringify(revoked)}`);
  await page.getByLabel("Show revoked and expired keys").check();
  await page.locator("tr", { hasText: "Billing service" }).getByText("Revoked").waitFor();
  passed("revoked the key through the UI; verify answers invalid_key");

  // 5. Invite a member; the list shows them. Then look through their eyes:
  //    controls a member may not use are disabled or absent.
  await page.getByRole("link", { name: "Members" }).click();
  await page.waitForURL((u) => u.pathname === "/members");
  const invite = page.locator("#invite-form");
  await invite.getByLabel("Email address").fill(teammate);
  await invite.getByLabel("Role").selectOption("member");
  await invite.getByRole("button", { name: "Add member" }).click();
  const memberRow = page.locator(`tr[data-email="${teammate}"]`);
  await memberRow.waitFor();
  check((await memberRow.locator("select").inputValue()) === "member", "the new member has the member role");
  passed("added a member through the members page");

  const ownerCookies = (await context.cookies(base)).filter((c) => c.name.startsWith("gatehouse_"));
  await context.clearCookies();
  await context.addCookies(await cookieLogin(teammate));
  await page.goto(`${base}/keys?show=all`);
  await page.locator("tr", { hasText: "Billing service" }).waitFor();
  check(await page.getByRole("button", { name: "Create key" }).isDisabled(), "a member cannot create keys");
  check((await page.getByRole("button", { name: /^(Revoke|Rotate) / }).count()) === 0, "a member sees no revoke or rotate");
  await page.goto(`${base}/members`);
  await page.locator(`tr[data-email="${email}"]`).waitFor();
  check((await page.locator("#invite-form").count()) === 0, "a member cannot add members");
  check((await page.locator("table.data select").count()) === 0, "a member cannot change roles");
  check((await page.locator(`tr[data-email="${email}"] button`).count()) === 0, "a member cannot remove the owner");
  await page.locator(`tr[data-email="${teammate}"]`).getByRole("button", { name: "Leave this project" }).waitFor();
  expectedHttpErrors = [{ status: 403, path: "/api/v1/audit-log" }];
  await page.goto(`${base}/audit`);
  const refusal = page.locator(".alert-error");
  await refusal.waitFor();
  check((await refusal.textContent()).trim().length > 0, "the audit page shows the server's refusal to a member");
  await page.waitForLoadState("networkidle");
  expectedHttpErrors = [];
  await context.clearCookies();
  await context.addCookies(ownerCookies);
  passed("as a member: no create, revoke, rotate, invite, role or remove controls; the audit log shows the 403 message");

  // 6. The usage chart shows the verification made above.
  await page.getByRole("link", { name: "Usage" }).click();
  await page.waitForURL((u) => u.pathname === "/usage");
  const chart = page.locator("#usage-chart svg.chart");
  await chart.waitFor();
  const totals = await chart.evaluate((svg) => ({
    valid: Number(svg.dataset.valid),
    invalid: Number(svg.dataset.invalid),
    bars: svg.querySelectorAll("rect.bar").length,
    buckets: svg.querySelectorAll("g.bucket").length,
  }));
  check(totals.valid >= 1, `the chart counts the valid verification: ${JSON.stringify(totals)}`);
  check(totals.bars >= 1 && totals.buckets >= 24, `the chart draws bars over the period: ${JSON.stringify(totals)}`);
  await page.screenshot({ path: path.join(shotDir, "usage.png"), fullPage: true });
  passed(`usage chart drawn (${totals.buckets} buckets, ${totals.valid} valid, ${totals.invalid} invalid)`);

  // 7. The other pages load without errors.
  for (const [name, heading] of [["audit", "Audit log"], ["webhooks", "Webhooks"], ["billing", "Billing"], ["projects", "Projects"]]) {
    await page.goto(`${base}/${name}`);
    await page.getByRole("heading", { name: heading, level: 1 }).waitFor();
    await page.waitForLoadState("networkidle");
  }
  await page.goto(`${base}/audit`);
  await page.locator("table.data code", { hasText: "key.revoked" }).first().waitFor();
  passed("audit, webhooks, billing and projects pages render");

  // 7b. Webhooks and billing against the real routes.
  await page.goto(`${base}/billing`);
  await page.locator("#billing-plan").waitFor();
  check((await page.locator("#billing-plan").textContent()).includes("free"), "the billing page names the plan");
  await page.getByLabel("API keys").waitFor();
  await page.goto(`${base}/webhooks`);
  const hookForm = page.locator("#webhook-form");
  await hookForm.getByLabel("Endpoint URL").fill("http://127.0.0.1:9/gatehouse-hook");
  await hookForm.getByLabel("member.removed").uncheck();
  await hookForm.getByRole("button", { name: "Add endpoint" }).click();
  const hookSecret = page.locator("dialog[open] #secret-value");
  await hookSecret.waitFor();
  const webhookSecret = (await hookSecret.textContent()).trim();
  check(/^whsec_[A-Za-z0-9+/]+=*$/.test(webhookSecret), `a signing secret is shown once: ${webhookSecret.slice(0, 8)}...`);
  await page.locator("dialog[open]").getByRole("button", { name: "Done" }).click();
  await page.locator("dialog").waitFor({ state: "detached" });
  check(!(await page.evaluate(() => document.documentElement.outerHTML)).includes(webhookSecret), "the signing secret is gone after closing");
  // Ask the server itself (from the page, with its session and project).
  const hooks = await page.evaluate(async () => {
    const project = Object.keys(localStorage).map((k) => localStorage.getItem(k)).find((v) => /^prj_/.test(v || ""));
    const res = await fetch("/api/v1/webhooks", { headers: project ? { "X-Project-Id": project } : {} });
    return res.json();
  });
  const created = hooks.items.find((h) => h.url === "http://127.0.0.1:9/gatehouse-hook");
  check(created && !created.events.includes("member.removed") && created.events.includes("key.created"), "the chosen events are stored");
  const hookRow = page.locator("tr", { hasText: "http://127.0.0.1:9/gatehouse-hook" });
  await hookRow.getByRole("button", { name: "Deliveries" }).click();
  await page.locator("dialog[open] table, dialog[open] .empty, dialog[open] p").first().waitFor();
  await page.keyboard.press("Escape");
  await page.locator("dialog").waitFor({ state: "detached" });
  passed("webhooks and billing pages work against the server");

  // 8. Without the access cookie a page load shows "Session expired";
  //    Continue renews the session and comes back to the same page.
  const cookies = await context.cookies(base);
  check(cookies.some((c) => c.name === "gatehouse_access"), "the access cookie is set");
  check(cookies.some((c) => c.name === "gatehouse_refresh"), "the refresh cookie is set");
  await context.clearCookies({ name: "gatehouse_access" });
  expectedHttpErrors = [{ status: 401, path: "/api/v1/me" }];
  const target = "/usage?range=7d";
  await page.goto(`${base}${target}`);
  const panel = page.locator("#session-expired");
  await panel.waitFor({ state: "visible" });
  check((await panel.getByRole("heading").textContent()).includes("Session expired"), "the panel says the session expired");
  check((await page.locator("#session-expired-form input[name=next]").inputValue()) === target, "the panel returns to the same page");
  await panel.getByRole("button", { name: "Continue" }).click();
  await page.waitForURL((u) => u.pathname + u.search === target);
  await page.locator("#usage-chart svg.chart").waitFor();
  check(await panel.isHidden(), "the panel is gone after renewing");
  expectedHttpErrors = [];
  check((await context.cookies(base)).some((c) => c.name === "gatehouse_access"), "a fresh access cookie is set");
  passed("expired session: the panel renewed it and returned to the same page");

  // 9. A phone-width look at the keys page, then log out.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/keys?show=all`);
  await page.locator("tr", { hasText: "Billing service" }).waitFor();
  await page.screenshot({ path: path.join(shotDir, "keys-phone.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 860 });
  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForURL((u) => u.pathname === "/login");
  passed("logged out");

  passed("no JavaScript errors, console errors or CSP violations on any page");
  console.log("ui: all steps passed");
} catch (err) {
  exitCode = 1;
  console.error(`ui: FAILED: ${err instanceof Failure ? err.message : err.stack || err}`);
  if (problems.length) console.error(`ui: browser problems so far:\n  ${problems.join("\n  ")}`);
  try {
    if (page) await page.screenshot({ path: path.join(shotDir, "failure.png"), fullPage: true });
    console.error(`ui: screenshot of the failing page: ${path.join(shotDir, "failure.png")}`);
  } catch {
    // The browser may be gone.
  }
} finally {
  await close();
}
process.exit(exitCode);
