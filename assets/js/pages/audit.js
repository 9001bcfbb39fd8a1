// The audit log (owners and admins): who did what, newest first, with
// targets and actors by name (keys by name and prefix, people by email),
// and filters by action, actor, target and period. Members get the
// server's refusal, shown as it is.
//
// The API filters by action, actor and period; a search by target (a key's
// name, an email or an id) looks through the latest SCAN_LIMIT entries
// that pass those filters, and says so when there are more.

import { api } from "../api.js";
import { add, clear, dateEl, errorBox, field, formatNumber, h, timeEl } from "../dom.js";
import { dataTable, messageOf, pageHeader, pager } from "../ui.js";

const PAGE_SIZE = 50;
const SCAN_PAGE = 100;
export const SCAN_LIMIT = 1000;

const ACTIONS = {
  "login.succeeded": "Logged in",
  "login.failed": "Login failed",
  logout: "Logged out",
  "session.token_reused": "Refresh token reused",
  "project.created": "Project created",
  "member.added": "Member added",
  "member.removed": "Member removed",
  "member.role_changed": "Role changed",
  "key.created": "Key created",
  "key.updated": "Key updated",
  "key.revoked": "Key revoked",
  "key.rotated": "Key rotated",
  "key.leaked": "Key reported leaked",
  "key.imported": "Key imported",
  "billing.plan_changed": "Plan changed",
  "billing.customer_linked": "Billing customer linked",
  "billing.customer_unlinked": "Billing customer unlinked",
  "billing.stripe_event_ignored": "Stripe event ignored",
};

/** An action as a person reads it, with its code beside. */
export function actionLabel(action) {
  const label = ACTIONS[action];
  return h("span", { class: "target-name" }, label || action, label ? h("code", null, action) : null);
}

/** Names for ids: the project's keys and members (what the API lets us see). */
export async function loadDirectory() {
  const directory = { keys: new Map(), users: new Map() };
  const [keys, members] = await Promise.allSettled([
    api("GET", "/api/v1/api-keys", { query: { include_inactive: true, limit: 100 } }),
    api("GET", "/api/v1/members", { query: { limit: 100 } }),
  ]);
  if (keys.status === "fulfilled") for (const k of keys.value.items) directory.keys.set(k.id, k);
  if (members.status === "fulfilled") for (const m of members.value.items) directory.users.set(m.user.id, m.user.email);
  return directory;
}

export function describeTarget(target, directory) {
  if (!target) return h("span", { class: "muted" }, "\u2014");
  const key = directory.keys.get(target);
  if (key) {
    return h("span", { class: "target-name" },
      h("a", { href: `/keys/${encodeURIComponent(key.id)}` }, key.name),
      h("code", null, `${key.prefix}\u2026`));
  }
  const email = directory.users.get(target);
  if (email) return h("span", { class: "target-name" }, email, h("code", null, target));
  return h("code", null, target);
}

export function describeActor(a, me, directory) {
  if (!a) return "\u2014";
  if (a.type === "user" && a.id === me.id) return h("span", { class: "actor" }, "you");
  if (a.type === "user" && directory.users.has(a.id)) return h("span", { class: "target-name" }, directory.users.get(a.id), h("code", null, a.id));
  if (a.type === "key" && directory.keys.has(a.id)) {
    const k = directory.keys.get(a.id);
    return h("span", { class: "target-name" }, `key ${k.name}`, h("code", null, `${k.prefix}\u2026`));
  }
  return h("span", { class: "actor" }, h("span", { class: "muted" }, `${a.type} `), a.id ? h("code", null, a.id) : null);
}

function targetText(target, directory) {
  if (!target) return "";
  const key = directory.keys.get(target);
  if (key) return `${target} ${key.name} ${key.prefix}`;
  return `${target} ${directory.users.get(target) || ""}`;
}

/** Whether an entry passes the filter (all fields optional). */
function matches(e, f, directory) {
  if (f.action && e.action !== f.action) return false;
  if (f.actor) {
    const [type, id] = f.actor.split(":");
    if (e.actor.type !== type) return false;
    if (id && e.actor.id !== id) return false;
  }
  if (f.target) {
    const needle = f.target.toLowerCase();
    if (!targetText(e.target, directory).toLowerCase().includes(needle)) return false;
  }
  const t = Date.parse(e.created_at);
  if (f.from && t < Date.parse(`${f.from}T00:00:00`)) return false;
  if (f.to && t >= Date.parse(`${f.to}T00:00:00`) + 86400000) return false;
  return true;
}

/**
 * The parts of the filter the API applies itself (action, actor, period):
 * only the target, matched by name as well as id, is looked for here.
 */
function serverFilter(f) {
  const q = {};
  if (f.action) q.action = f.action;
  if (f.actor) {
    const [type, id] = f.actor.split(":");
    q.actor_type = type;
    if (id) q.actor_id = id;
  }
  if (f.from) q.from = new Date(`${f.from}T00:00:00`).toISOString();
  if (f.to) q.to = new Date(Date.parse(`${f.to}T00:00:00`) + 86400000).toISOString();
  return q;
}

function filterActive(f) {
  return Boolean(f.action || f.actor || f.target || f.from || f.to);
}

/**
 * Entries that pass `filter`, newest first, looking through at most the
 * latest SCAN_LIMIT entries. `{items, scanned, total, complete}`.
 */
export async function auditEntries(filter, want = Infinity, directory = null) {
  const dir = directory || { keys: new Map(), users: new Map() };
  const items = [];
  let page = 1;
  let total = 0;
  let scanned = 0;
  for (;;) {
    const list = await api("GET", "/api/v1/audit-log", { query: { page, limit: SCAN_PAGE, ...serverFilter(filter) } });
    total = list.pagination.total;
    scanned += list.items.length;
    for (const e of list.items) if (matches(e, filter, dir)) items.push(e);
    if (items.length >= want || page >= list.pagination.pages || scanned >= SCAN_LIMIT || !list.items.length) break;
    page += 1;
  }
  return { items: items.slice(0, want), scanned, total, complete: scanned >= total };
}

function details(value) {
  if (!value || (typeof value === "object" && !Object.keys(value).length)) return h("span", { class: "muted" }, "\u2014");
  return h("details", { class: "json" },
    h("summary", null, "Details"),
    h("pre", null, JSON.stringify(value, null, 2)));
}

export async function render(ctx) {
  const params = new URLSearchParams(location.search);
  const filter = {
    action: params.get("action") || "",
    actor: params.get("actor") || "",
    target: params.get("target") || "",
    from: params.get("from") || "",
    to: params.get("to") || "",
  };
  let page = Number(params.get("page")) || 1;
  const error = errorBox();
  const listArea = h("div", { class: "list-area", id: "audit-list" });
  const note = h("p", { class: "hint filter-note", role: "status", id: "audit-filter-note" });

  const actionSelect = h("select", { name: "action", id: "audit-action" },
    h("option", { value: "" }, "Any action"),
    Object.entries(ACTIONS).map(([code, label]) => h("option", { value: code, selected: code === filter.action }, label)));
  const actorSelect = h("select", { name: "actor", id: "audit-actor" },
    h("option", { value: "" }, "Anyone"),
    h("option", { value: `user:${ctx.me.user.id}` }, `You (${ctx.me.user.email})`));
  const targetInput = h("input", { type: "search", name: "target", id: "audit-target", value: filter.target, autocomplete: "off", placeholder: "Key name, email or id" });
  const fromInput = h("input", { type: "date", name: "from", id: "audit-from", value: filter.from });
  const toInput = h("input", { type: "date", name: "to", id: "audit-to", value: filter.to });
  const clearButton = h("button", { type: "button", class: "button", id: "audit-clear" }, "Clear");
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter the audit log", id: "audit-filters" },
    field("Action", actionSelect),
    field("Actor", actorSelect),
    field("Target", targetInput),
    field("From", fromInput),
    field("To", toInput),
    h("div", { class: "filter-buttons" },
      h("button", { type: "submit", class: "button button-primary" }, "Filter"),
      clearButton));

  add(ctx.main,
    pageHeader("Audit log", `Sign-ins, key and member changes and plan changes in ${ctx.project.name}, newest first.`),
    error.el,
    form,
    note,
    listArea,
  );

  let directory = { keys: new Map(), users: new Map() };
  try {
    directory = await loadDirectory();
  } catch {
    // Names are a convenience: ids are shown without them.
  }
  for (const [id, email] of directory.users) {
    if (id !== ctx.me.user.id) actorSelect.append(h("option", { value: `user:${id}` }, email));
  }
  actorSelect.append(
    h("option", { value: "key" }, "Any API key"),
    h("option", { value: "system" }, "The system"));
  actorSelect.value = filter.actor;
  if (actorSelect.value !== filter.actor) filter.actor = "";

  function syncUrl() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
    if (page > 1) q.set("page", String(page));
    const qs = q.toString();
    history.replaceState(null, "", qs ? `${location.pathname}?${qs}` : location.pathname);
  }

  function table(items) {
    return dataTable({
      caption: "Audit log",
      columns: [
        { label: "When", cell: (e) => timeEl(e.created_at) },
        { label: "Action", cell: (e) => actionLabel(e.action) },
        { label: "Actor", cell: (e) => describeActor(e.actor, ctx.me.user, directory) },
        { label: "Target", cell: (e) => describeTarget(e.target, directory) },
        { label: "IP address", cell: (e) => e.ip || h("span", { class: "muted" }, "\u2014") },
        { label: "Request", cell: (e) => (e.request_id ? h("code", { class: "small" }, e.request_id) : h("span", { class: "muted" }, "\u2014")) },
        { label: "Details", cell: (e) => details(e.details) },
      ],
      items,
      empty: filterActive(filter) ? "No entries match these filters." : "Nothing has been recorded yet.",
    });
  }

  async function load() {
    syncUrl();
    error.clear();
    listArea.setAttribute("aria-busy", "true");
    try {
      if (!filterActive(filter)) {
        note.textContent = "";
        const list = await api("GET", "/api/v1/audit-log", { query: { page, limit: PAGE_SIZE } });
        add(clear(listArea), table(list.items), pager(list.pagination, (p) => {
          page = p;
          load();
        }));
      } else {
        const found = await auditEntries(filter, Infinity, directory);
        const pages = Math.max(1, Math.ceil(found.items.length / PAGE_SIZE));
        page = Math.min(page, pages);
        note.textContent = found.complete
          ? `${formatNumber(found.items.length)} matching ${found.items.length === 1 ? "entry" : "entries"}.`
          : `${formatNumber(found.items.length)} matching ${found.items.length === 1 ? "entry" : "entries"} among the latest ${formatNumber(found.scanned)} of ${formatNumber(found.total)}. Older entries are not searched.`;
        add(clear(listArea),
          table(found.items.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE)),
          pager({ page, pages, total: found.items.length }, (p) => {
            page = p;
            load();
          }));
      }
    } catch (err) {
      clear(listArea);
      note.textContent = "";
      error.show(messageOf(err));
    }
    listArea.removeAttribute("aria-busy");
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filter.action = actionSelect.value;
    filter.actor = actorSelect.value;
    filter.target = targetInput.value.trim();
    filter.from = fromInput.value;
    filter.to = toInput.value;
    page = 1;
    load();
  });
  clearButton.addEventListener("click", () => {
    form.reset();
    actionSelect.value = "";
    actorSelect.value = "";
    targetInput.value = "";
    fromInput.value = "";
    toInput.value = "";
    for (const k of Object.keys(filter)) filter[k] = "";
    page = 1;
    load();
  });
  await load();
}
