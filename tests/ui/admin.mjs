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
import { axeViolations, NARROWEST, outOfReach, overflow, THEMES, WIDTHS } from "./a11y.mjs";

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

async function verify(key, scopes, extra = {}) {
  const res = await fetch(`${base}/api/v1/keys/verify`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ key, scopes, ...extra }),
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

/** The newest login code mailed to `email`, read from the JSON mailbox. */
async function mailedCode(email) {
  const box = await (await fetch(`${base}/api/v1/dev/mailbox`)).json();
  const mail = box.items.find((m) => m.to === email);
  check(mail, `a message to ${email} in the mailbox`);
  return mail.body.split("\n").map((l) => l.trim()).find((l) => /^[0-9]{6,10}$/.test(l));
}

/** Calls the API from inside the page, with its session, CSRF token and project. */
function apiInPage(page, method, url, body) {
  return page.evaluate(async ({ method, url, body }) => {
    const me = await (await fetch("/api/v1/me")).json();
    const project = localStorage.getItem("gatehouse.project") || me.memberships[0].project.id;
    const res = await fetch(url, {
      method,
      headers: { "content-type": "application/json", "x-csrf-token": me.csrf_token, "x-project-id": project },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  }, { method, url, body });
}

// --- Keyboard only ---------------------------------------------------------

/** What has the focus: its tag, accessible text and whether its focus shows. */
function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return { tag: "body", text: "", visible: false };
    const text = (el.getAttribute("aria-label") || el.labels?.[0]?.textContent || el.textContent || el.value || "").trim();
    return { tag: el.tagName.toLowerCase(), id: el.id, text, visible: el.matches(":focus-visible") };
  });
}

/** Presses Tab until `wanted(focus)` holds; fails after `max` presses. */
async function tabTo(page, what, wanted, max = 60) {
  for (let i = 0; i < max; i += 1) {
    const f = await focused(page);
    if (wanted(f)) {
      check(f.visible, `${what} shows that it has the keyboard focus`);
      return f;
    }
    await page.keyboard.press("Tab");
  }
  throw new Failure(`${what} cannot be reached with the Tab key`);
}

// --- Every page, both widths, both themes -----------------------------------

/** Loads `url` and waits until the page has drawn what it loads. */
async function settle(page, url) {
  await page.goto(`${base}${url}`);
  await page.waitForLoadState("networkidle");
  await page.locator("#boot-status, #docs-status").waitFor({ state: "detached" });
  await page.waitForFunction(() => !document.querySelector("[aria-busy=true]"));
}

const failures = [];

/** Checks the page as it is now and photographs it as `name`. */
async function inspect(page, name, { width, theme, shoot = true }) {
  const label = `${name} at ${width} px, ${theme}`;
  const violations = await axeViolations(page);
  for (const v of violations) {
    failures.push(`${label}: axe ${v.impact} ${v.id} (${v.help})\n      ${v.nodes.join("\n      ")}`);
  }
  const wide = await overflow(page);
  if (wide) failures.push(`${label}: the page is ${wide.document} px wide in a ${wide.viewport} px window: ${wide.culprits.join(", ")}`);
  if (width < 800) {
    for (const p of await outOfReach(page)) failures.push(`${label}: ${p}`);
  }
  if (shoot) await page.screenshot({ path: path.join(shotDir, `${name}-${width}-${theme}.png`), fullPage: true });
}

// --- The run -----------------------------------------------------------------

const { context, close } = await launch({
  viewport: { width: 1280, height: 900 },
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

  // 4b. The keys table at 1280 px: the whole display prefix on one line,
  //     dates on one line, and the use of each key over 30 days.
  const reporting = await apiInPage(page, "POST", "/api/v1/api-keys", {
    name: "Reporting",
    scopes: ["analytics:read"],
    environment: "staging",
    credits: { remaining: 500, refill: { amount: 500, interval: "monthly" } },
    metadata: { team: "finance" },
  });
  check(reporting.status === 201, `a second key is created: ${JSON.stringify(reporting.body)}`);
  const reportingKey = reporting.body.plaintext_key;
  for (let i = 0; i < 3; i += 1) check((await verify(reportingKey, ["analytics:read"])).valid, "the second key verifies");
  const wrongScope = await verify(reportingKey, ["webhooks:manage"]);
  check(wrongScope.code === "insufficient_scope", `a check for a scope it lacks is refused: ${JSON.stringify(wrongScope)}`);
  await page.goto(`${base}/keys`);
  const reportingRow = page.locator(`tr[data-key-id="${reporting.body.id}"]`);
  await reportingRow.waitFor();
  await page.waitForLoadState("networkidle");
  const layout = await reportingRow.evaluate((tr) => {
    const code = tr.querySelector(".key-cell code");
    const times = [...tr.querySelectorAll("time")];
    const lineHeight = (el) => parseFloat(getComputedStyle(el).lineHeight) || 20;
    return {
      prefix: code.textContent,
      prefixCut: code.scrollWidth > code.clientWidth + 1 || code.getBoundingClientRect().right > tr.closest(".table-wrap").getBoundingClientRect().right,
      prefixLines: Math.round(code.getBoundingClientRect().height / lineHeight(code)),
      dateLines: times.map((t) => Math.round(t.getBoundingClientRect().height / lineHeight(t))),
      usage: tr.querySelector("[data-key-usage]").textContent,
    };
  });
  check(layout.prefix.startsWith(reportingKey.slice(0, 16)) && !layout.prefixCut && layout.prefixLines === 1,
    `the display prefix shows whole on one line: ${JSON.stringify(layout)}`);
  check(layout.dateLines.length >= 1 && layout.dateLines.every((n) => n === 1), `dates take one line: ${JSON.stringify(layout)}`);
  check(/^3\b/.test(layout.usage) && layout.usage.includes("1 refused"), `the row shows the key's use over 30 days: ${JSON.stringify(layout)}`);
  passed(`the keys table shows the whole prefix, one-line dates and use per key (${layout.usage})`);

  // 4c. A key's own page: a click on the row opens it.
  await reportingRow.locator("td").nth(1).click();
  await page.waitForURL((u) => u.pathname === `/keys/${reporting.body.id}`);
  await page.getByRole("heading", { name: "Reporting", level: 1 }).waitFor();
  await page.waitForLoadState("networkidle");
  const keyPage = await page.evaluate(() => ({
    balance: document.getElementById("key-balance").textContent,
    settings: document.querySelector("[aria-labelledby=settings-title]").textContent,
    limits: document.querySelector("[aria-labelledby=limits-title]").textContent,
    chart: (() => {
      const svg = document.querySelector("#key-usage-chart svg.chart");
      return svg ? { ...svg.dataset, lines: svg.querySelectorAll("polyline").length } : null;
    })(),
    audit: [...document.querySelectorAll("#key-audit tbody tr")].map((tr) => tr.textContent),
  }));
  check(keyPage.balance.includes("497") && keyPage.balance.includes("credits left"), `the balance, less the 3 valid checks: ${keyPage.balance}`);
  check(keyPage.limits.includes("100 requests per minute") && keyPage.limits.includes("every month"), `limits: ${keyPage.limits}`);
  check(keyPage.settings.includes("analytics:read") && keyPage.settings.includes("team"), `settings: ${keyPage.settings}`);
  check(keyPage.chart && keyPage.chart.valid === "3" && keyPage.chart.refused === "1" && keyPage.chart.lines === 4,
    `the key's usage chart: ${JSON.stringify(keyPage.chart)}`);
  check(keyPage.audit.some((t) => t.includes("Key created")), `recent activity lists the creation: ${JSON.stringify(keyPage.audit)}`);
  passed("a key's page shows its settings, limits, balance, usage chart and recent activity");

  await page.getByRole("button", { name: "Edit", exact: true }).click();
  const editor = page.locator("dialog[open]");
  await editor.getByLabel("Name", { exact: true }).fill("Reporting v2");
  await editor.getByLabel("Balance").fill("250");
  await editor.getByRole("button", { name: "Save changes" }).click();
  await page.locator("dialog").waitFor({ state: "detached" });
  await page.getByRole("heading", { name: "Reporting v2", level: 1 }).waitFor();
  check((await page.locator("#key-balance").textContent()).includes("250"), "the new balance shows");
  await page.locator("#key-audit tbody tr", { hasText: "Key updated" }).first().waitFor();
  const stored = await apiInPage(page, "GET", `/api/v1/api-keys/${reporting.body.id}`);
  check(stored.body.name === "Reporting v2" && stored.body.credits.remaining === 250, `the edit is stored: ${JSON.stringify(stored.body)}`);
  passed("edited the key on its page; the change is stored and in its activity");

  await page.getByRole("button", { name: "Rotate", exact: true }).click();
  await page.locator("dialog[open]").getByRole("button", { name: "Rotate key" }).click();
  const rotatedSecret = page.locator("dialog[open] #secret-value");
  await rotatedSecret.waitFor();
  const rotatedKey = (await rotatedSecret.textContent()).trim();
  await page.locator("dialog[open]").getByRole("button", { name: "Done" }).click();
  await page.waitForURL((u) => u.pathname.startsWith("/keys/") && u.pathname !== `/keys/${reporting.body.id}`);
  await page.getByRole("heading", { name: "Reporting v2", level: 1 }).waitFor();
  check((await verify(rotatedKey, [])).valid, "the rotated key verifies");
  check((await verify(reportingKey, [])).code === "invalid_key", "the previous key no longer does");
  const newKeyPage = new URL(page.url()).pathname;
  passed("rotated the key from its page; the new key's page opened");

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
    kind: svg.dataset.kind,
    valid: Number(svg.dataset.valid),
    invalid: Number(svg.dataset.invalid),
    refused: Number(svg.dataset.refused),
    bars: svg.querySelectorAll("rect.bar").length,
    refusedBars: svg.querySelectorAll("rect.bar-refused").length,
    buckets: svg.querySelectorAll("g.bucket").length,
  }));
  check(totals.kind === "bar" && totals.valid >= 1, `the chart counts the valid verifications: ${JSON.stringify(totals)}`);
  check(totals.refused >= 1 && totals.refusedBars >= 1, `"other refusals" are a series of the chart: ${JSON.stringify(totals)}`);
  check(totals.bars >= 1 && totals.buckets >= 24, `the chart draws bars over the period: ${JSON.stringify(totals)}`);
  const legend = await page.locator(".legend li").allTextContents();
  check(JSON.stringify(legend) === JSON.stringify(["Valid", "Invalid", "Rate-limited", "Other refusals"]), `the legend names every series the totals show: ${legend}`);
  await page.screenshot({ path: path.join(shotDir, "usage.png"), fullPage: true });
  await page.getByLabel("Period").selectOption("90d");
  await page.waitForFunction(() => document.querySelector("#usage-chart svg.chart")?.dataset.buckets >= 90);
  check((await page.locator("#usage-chart svg.chart").getAttribute("data-kind")) === "line", "a long period is drawn as lines");
  await page.getByRole("group", { name: "Chart style" }).getByRole("button", { name: "Bars" }).click();
  await page.waitForFunction(() => document.querySelector("#usage-chart svg.chart")?.dataset.kind === "bar");
  await page.getByRole("group", { name: "Chart style" }).getByRole("button", { name: "Lines" }).click();
  await page.waitForFunction(() => document.querySelector("#usage-chart svg.chart")?.dataset.kind === "line");
  check((await page.locator("#usage-chart svg.chart polyline").count()) === 4, "one line per series");
  check(new URL(page.url()).search.includes("chart=line"), "the choice is kept in the address");
  passed(`usage chart drawn with every series (${totals.buckets} buckets, ${totals.valid} valid, ${totals.refused} other refusals), as bars or lines`);

  // 7. The other pages load without errors.
  for (const [name, heading] of [["audit", "Audit log"], ["webhooks", "Webhooks"], ["billing", "Billing"], ["projects", "Projects"]]) {
    await page.goto(`${base}/${name}`);
    await page.getByRole("heading", { name: heading, level: 1 }).waitFor();
    await page.waitForLoadState("networkidle");
  }
  await page.goto(`${base}/audit`);
  await page.locator("table.data code", { hasText: "key.revoked" }).first().waitFor();
  passed("audit, webhooks, billing and projects pages render");

  // 7a. The audit log names targets and filters by action, actor, target and period.
  check((await page.locator("#audit-list tbody tr", { hasText: "Billing service" }).count()) >= 1, "a key is named in the audit log, not only by id");
  const filtered = (query) => page.waitForFunction((q) => new URL(location.href).search === q
    && !document.querySelector("#audit-list[aria-busy]"), query);
  await page.getByLabel("Action").selectOption("key.revoked");
  await page.getByRole("button", { name: "Filter" }).click();
  await filtered("?action=key.revoked");
  const revokedRows = await page.locator("#audit-list tbody tr").allTextContents();
  check(revokedRows.length >= 1 && revokedRows.every((t) => t.includes("key.revoked")), `only revocations: ${revokedRows.length}`);
  await page.getByLabel("Action").selectOption("");
  await page.getByLabel("Target").fill("Reporting v2");
  await page.getByRole("button", { name: "Filter" }).click();
  await filtered("?target=Reporting+v2");
  const targetRows = await page.locator("#audit-list tbody tr").allTextContents();
  check(targetRows.length >= 3 && targetRows.every((t) => t.includes("Reporting v2")), `only entries about that key: ${JSON.stringify(targetRows.map((t) => t.slice(0, 60)))}`);
  await page.getByLabel("Actor").selectOption("system");
  await page.getByRole("button", { name: "Filter" }).click();
  await filtered("?actor=system&target=Reporting+v2");
  await page.locator("#audit-list .empty").waitFor();
  await page.getByLabel("Actor").selectOption("");
  await page.getByLabel("Target").fill("");
  const tomorrow = new Date(Date.now() + 86400000).toISOString().slice(0, 10);
  await page.getByLabel("From").fill(tomorrow);
  await page.getByRole("button", { name: "Filter" }).click();
  await filtered(`?from=${tomorrow}`);
  await page.locator("#audit-list .empty").waitFor();
  await page.getByRole("button", { name: "Clear" }).click();
  await page.waitForFunction(() => document.getElementById("audit-filter-note").textContent === "" && document.querySelectorAll("#audit-list tbody tr").length > 3);
  passed("audit log filters by action, actor, target and period");

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
  await inspect(page, "session-expired", { width: 1280, theme: "light" });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.setViewportSize({ width: 390, height: 844 });
  await inspect(page, "session-expired", { width: 390, theme: "dark" });
  await page.emulateMedia({ colorScheme: "light" });
  await page.setViewportSize({ width: 1280, height: 900 });
  check(failures.length === 0, `the session-expired panel:\n  ${failures.join("\n  ")}`);
  await panel.getByRole("button", { name: "Continue" }).click();
  await page.waitForURL((u) => u.pathname + u.search === target);
  await page.locator("#usage-chart svg.chart").waitFor();
  check(await panel.isHidden(), "the panel is gone after renewing");
  expectedHttpErrors = [];
  check((await context.cookies(base)).some((c) => c.name === "gatehouse_access"), "a fresh access cookie is set");
  passed("expired session: the panel renewed it and returned to the same page");

  // 9. Every page at 1280x900 and 390x844, light and dark: no serious or
  //    critical axe-core violation, no horizontal overflow, every section in
  //    reach; each photographed. Then the same at 360 px without photographs.
  const sweep = [
    ["login", "/login"],
    ["keys", "/keys?show=all"],
    ["key", newKeyPage],
    ["members", "/members"],
    ["usage", "/usage"],
    ["audit", "/audit"],
    ["webhooks", "/webhooks"],
    ["billing", "/billing"],
    ["projects", "/projects"],
    ["mailbox", "/dev/mailbox"],
    ["docs", "/docs"],
  ];
  let inspected = 0;
  for (const theme of THEMES) {
    await page.emulateMedia({ colorScheme: theme });
    for (const size of [...WIDTHS, NARROWEST]) {
      await page.setViewportSize({ width: size.width, height: size.height });
      const shoot = size !== NARROWEST;
      for (const [name, url] of sweep) {
        await settle(page, url);
        await inspect(page, name, { width: size.width, theme, shoot });
        inspected += 1;
      }
      // The create-key dialog, open.
      await settle(page, "/keys");
      await page.getByRole("button", { name: "Create key" }).click();
      await page.locator("dialog[open]").waitFor();
      await inspect(page, "keys-create-dialog", { width: size.width, theme, shoot });
      await page.keyboard.press("Escape");
      await page.locator("dialog").waitFor({ state: "detached" });
      inspected += 1;
    }
  }
  await page.emulateMedia({ colorScheme: "light" });
  check(failures.length === 0, `pages that fail:\n  ${failures.join("\n  ")}`);
  passed(`${inspected} page views pass axe-core (no serious or critical violation) and fit their width, light and dark, at 1280, 390 and 360 px`);

  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(`${base}/keys`);
  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForURL((u) => u.pathname === "/login");
  passed("logged out");

  // 10. Keyboard only: log in, create a key, revoke it.
  const kbEmail = `keyboard-${Date.now().toString(36)}@acme.test`;
  await page.goto(`${base}/login`);
  await tabTo(page, "the email field", (f) => f.tag === "input" && f.text === "Email address");
  await page.keyboard.type(kbEmail);
  await page.keyboard.press("Enter");
  await page.getByLabel("Login code").waitFor();
  await tabTo(page, "the code field", (f) => f.tag === "input" && f.text === "Login code");
  await page.keyboard.type(await mailedCode(kbEmail));
  await page.keyboard.press("Enter");
  await page.waitForURL((u) => u.pathname === "/keys");
  await page.locator(".list-area .empty").waitFor();
  passed("keyboard only: logged in");

  await tabTo(page, "the Create key button", (f) => f.tag === "button" && f.text === "Create key");
  await page.keyboard.press("Enter");
  await page.locator("dialog[open]").waitFor();
  check((await focused(page)).text === "Name", "the dialog opens with the focus on the name");
  await page.keyboard.type("Keyboard key");
  await tabTo(page, "the dialog's Create key button", (f) => f.tag === "button" && f.text === "Create key");
  await page.keyboard.press("Enter");
  const kbSecret = page.locator("dialog[open] #secret-value");
  await kbSecret.waitFor();
  const kbKey = (await kbSecret.textContent()).trim();
  check((await focused(page)).text === "Done", "the secret dialog puts the focus on Done");
  await page.keyboard.press("Enter");
  await page.locator("dialog").waitFor({ state: "detached" });
  check((await verify(kbKey, [])).valid, "the key made with the keyboard verifies");
  check((await focused(page)).text === "Create key", "the focus returns to Create key");
  passed("keyboard only: created a key");

  await tabTo(page, "the key's Revoke button", (f) => f.tag === "button" && f.text === "Revoke Keyboard key");
  await page.keyboard.press("Enter");
  await page.locator("dialog[open]").getByRole("heading", { name: "Revoke this key?" }).waitFor();
  await tabTo(page, "the Revoke key button", (f) => f.tag === "button" && f.text === "Revoke key");
  await page.keyboard.press("Enter");
  await page.locator("dialog").waitFor({ state: "detached" });
  const kbRevoked = await verify(kbKey, []);
  check(kbRevoked.code === "invalid_key", `the key revoked with the keyboard no longer verifies: ${JSON.stringify(kbRevoked)}`);
  passed("keyboard only: revoked the key");

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
