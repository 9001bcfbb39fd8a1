// API keys: the project's keys (revoked and expired ones on request), the
// create dialog, and rotate/revoke behind a confirmation. A new key's
// plaintext is shown once and leaves the document when its dialog closes.

import { api } from "../api.js";
import { add, busy, clear, errorBox, field, h, statusBox, timeEl } from "../dom.js";
import { badge, confirmAction, dataTable, messageOf, modal, pageHeader, pager, revealSecret } from "../ui.js";

const EXPIRY_CHOICES = [
  ["", "Never"],
  ["7", "In 7 days"],
  ["30", "In 30 days"],
  ["90", "In 90 days"],
  ["180", "In 180 days"],
  ["365", "In 1 year"],
];

const GRACE_CHOICES = [
  [0, "Now", "The current key stops working at once."],
  [3600, "In 1 hour", "Both keys work for an hour while you deploy the new one."],
  [86400, "In 24 hours", "Both keys work for a day."],
  [604800, "In 7 days", "Both keys work for a week."],
];

function keyStatus(key) {
  if (key.revoked_at) return ["Revoked", "danger"];
  if (key.expires_at && new Date(key.expires_at) <= new Date()) return ["Expired", "muted"];
  if (!key.is_active) return ["Inactive", "muted"];
  return ["Active", "ok"];
}

function scopesCell(scopes) {
  if (!scopes.length) return h("span", { class: "muted" }, "None");
  return h("ul", { class: "chips" }, scopes.map((sc) => h("li", null, h("code", null, sc))));
}

const WARNING = "Copy this key now and store it somewhere safe. Gatehouse keeps only a hash of it: it will not be shown again, and if you lose it you will need to rotate the key.";

function showPlaintext(created, title) {
  return revealSecret({
    title,
    label: `Secret for \u201c${created.name}\u201d`,
    secret: created.plaintext_key,
    warning: WARNING,
    details: h("dl", { class: "facts" },
      h("dt", null, "Prefix"), h("dd", null, h("code", null, created.prefix)),
      h("dt", null, "Type"), h("dd", null, created.type),
      h("dt", null, "Scopes"), h("dd", null, scopesCell(created.scopes))),
  });
}

function radio(name, value, label, description, checked) {
  const input = h("input", { type: "radio", name, value, checked, id: `${name}-${value}` });
  return h("div", { class: "choice" },
    input,
    h("label", { for: input.id }, h("span", { class: "choice-title" }, label),
      description ? h("span", { class: "choice-text" }, description) : null));
}

function createDialog(catalog, onCreated) {
  const error = errorBox();
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 100, autocomplete: "off" });
  const environment = h("input", { type: "text", name: "environment", value: "production", list: "environment-choices", maxlength: 32, autocomplete: "off" });
  const expiry = h("select", { name: "expiry" }, EXPIRY_CHOICES.map(([v, l]) => h("option", { value: v }, l)));
  const rateLimit = h("input", { type: "number", name: "rate_limit", min: 1, step: 1, inputmode: "numeric", placeholder: String(catalog.default_rate_limit.limit) });
  const rateWindow = h("input", { type: "number", name: "rate_window", min: 1, max: 86400, step: 1, inputmode: "numeric", placeholder: String(catalog.default_rate_limit.window_secs) });
  const owner = h("input", { type: "text", name: "owner_id", maxlength: 200, autocomplete: "off", placeholder: "e.g. cus_42" });
  const credits = h("input", { type: "number", name: "credits", min: 0, step: 1, inputmode: "numeric" });
  const refill = h("select", { name: "refill" },
    h("option", { value: "" }, "No refill"),
    h("option", { value: "daily" }, "Refill daily"),
    h("option", { value: "monthly" }, "Refill monthly"));

  const types = h("fieldset", { class: "choices choices-columns" },
    h("legend", null, "Type"),
    catalog.key_types.map((t, i) => radio("type", t.type, `${t.type[0].toUpperCase()}${t.type.slice(1)} (${t.prefix}\u2026)`, t.description, i === 0)));
  const scopes = h("fieldset", { class: "choices choices-columns" },
    h("legend", null, "Scopes"),
    h("p", { class: "hint" }, "What the key may do. A service checking the key can require any of these."),
    catalog.scopes.map((sc) => {
      const input = h("input", { type: "checkbox", name: "scopes", value: sc.name, id: `scope-${sc.name.replace(/[^a-z0-9]/g, "-")}` });
      return h("div", { class: "choice" }, input,
        h("label", { for: input.id }, h("code", { class: "choice-title" }, sc.name), h("span", { class: "choice-text" }, sc.description)));
    }));

  const form = h("form", { class: "stack", id: "create-key-form" },
    error.el,
    field("Name", name, "Shown in lists and the audit log, e.g. \u201cBilling service\u201d."),
    types,
    h("div", { class: "grid-2" },
      field("Environment", environment, "A short tag such as production, staging or ci."),
      field("Expires", expiry)),
    scopes,
    h("fieldset", { class: "group" },
      h("legend", null, "Rate limit"),
      h("div", { class: "grid-2" },
        field("Requests", rateLimit),
        field("Per window (seconds)", rateWindow)),
      h("p", { class: "hint" }, `Leave empty for the default: ${catalog.default_rate_limit.limit} requests per ${catalog.default_rate_limit.window_secs} seconds.`)),
    h("div", { class: "grid-2" },
      field("Owner id", owner, "Optional: your own id for whoever holds the key."),
      h("div", { class: "stack-tight" },
        field("Credits", credits, "Optional: verifications allowed. Empty means unlimited."),
        field("Credit refill", refill))),
    h("datalist", { id: "environment-choices" },
      ["production", "staging", "development", "ci"].map((v) => h("option", { value: v }))),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.clear();
    const body = {
      name: name.value.trim(),
      type: form.elements.type.value,
      environment: environment.value.trim() || "production",
      scopes: [...form.querySelectorAll("input[name=scopes]:checked")].map((c) => c.value),
      expires_in_days: expiry.value ? Number(expiry.value) : null,
      rate_limit: null,
      owner_id: owner.value.trim() || null,
      credits: null,
    };
    if (rateLimit.value || rateWindow.value) {
      body.rate_limit = {
        limit: Number(rateLimit.value || catalog.default_rate_limit.limit),
        window_secs: Number(rateWindow.value || catalog.default_rate_limit.window_secs),
      };
    }
    if (credits.value !== "") {
      const amount = Number(credits.value);
      body.credits = { remaining: amount };
      if (refill.value) body.credits.refill = { amount, interval: refill.value };
    }
    await busy(form, async () => {
      try {
        const created = await api("POST", "/api/v1/api-keys", { body });
        dialog.close();
        await onCreated(created);
      } catch (err) {
        error.show(messageOf(err));
        error.el.scrollIntoView({ block: "nearest" });
      }
    });
  });

  // The buttons sit in the dialog's footer, outside the scrolling form.
  const dialog = modal({
    title: "Create an API key",
    body: form,
    className: "dialog-wide",
    actions: [
      h("button", { type: "button", class: "button", onclick: () => dialog.close() }, "Cancel"),
      h("button", { type: "submit", form: form.id, class: "button button-primary" }, "Create key"),
    ],
  });
  name.focus();
  return dialog;
}

export async function render(ctx) {
  const params = new URLSearchParams(location.search);
  const state = {
    page: Number(params.get("page")) || 1,
    inactive: params.get("show") === "all",
    owner: params.get("owner"),
  };
  const canManage = ctx.atLeast("admin");
  const error = errorBox();
  const status = statusBox();
  const listArea = h("div", { class: "list-area" });
  let catalog = null;

  const createButton = h("button", {
    type: "button",
    class: "button button-primary",
    id: "create-key",
    disabled: !canManage,
    onclick: async () => {
      try {
        catalog = catalog || (await api("GET", "/api/v1/catalog", { project: false }));
      } catch (err) {
        error.show(messageOf(err));
        return;
      }
      createDialog(catalog, async (created) => {
        state.page = 1;
        await load();
        await showPlaintext(created, "Key created");
        status.show(`Key \u201c${created.name}\u201d created.`);
        createButton.focus();
      });
    },
  }, "Create key");

  const showAll = h("input", { type: "checkbox", id: "show-inactive", checked: state.inactive });
  showAll.addEventListener("change", () => {
    state.inactive = showAll.checked;
    state.page = 1;
    load();
  });
  const ownerFilter = h("input", { type: "search", id: "owner-filter", value: state.owner, placeholder: "Owner id", autocomplete: "off" });
  const filterForm = h("form", { class: "toolbar", role: "search" },
    h("div", { class: "check" }, showAll, h("label", { for: "show-inactive" }, "Show revoked and expired keys")),
    h("div", { class: "inline-field" },
      h("label", { for: "owner-filter" }, "Owner"),
      ownerFilter,
      h("button", { type: "submit", class: "button" }, "Filter")));
  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    state.owner = ownerFilter.value.trim();
    state.page = 1;
    load();
  });

  add(ctx.main, 
    pageHeader("API keys", `Keys for ${ctx.project.name}. Your services check them with the verify API or forward-auth.`, createButton),
    canManage ? null : h("p", { class: "alert alert-info" }, `Your role (${ctx.role}) can view keys. Owners and admins create, rotate and revoke them.`),
    status.el,
    error.el,
    filterForm,
    listArea,
  );

  function syncUrl() {
    const q = new URLSearchParams();
    if (state.inactive) q.set("show", "all");
    if (state.owner) q.set("owner", state.owner);
    if (state.page > 1) q.set("page", String(state.page));
    const qs = q.toString();
    history.replaceState(null, "", qs ? `${location.pathname}?${qs}` : location.pathname);
  }

  function actions(key) {
    if (!canManage || key.revoked_at || !key.is_active) return h("span", { class: "muted" }, "\u2014");
    return h("div", { class: "row-actions" },
      h("button", { type: "button", class: "button button-small", "aria-label": `Rotate ${key.name}`, onclick: () => rotate(key) }, "Rotate"),
      h("button", { type: "button", class: "button button-small button-danger-quiet", "aria-label": `Revoke ${key.name}`, onclick: () => revoke(key) }, "Revoke"));
  }

  async function revoke(key) {
    const done = await confirmAction({
      title: "Revoke this key?",
      message: h("p", null, "Requests with ", h("strong", null, key.name), " (", h("code", null, key.prefix), "\u2026) will be refused as soon as you confirm. This cannot be undone."),
      confirmLabel: "Revoke key",
      danger: true,
      action: () => api("DELETE", `/api/v1/api-keys/${encodeURIComponent(key.id)}`),
    });
    if (done) {
      status.show(`Key \u201c${key.name}\u201d revoked.`);
      await load();
    }
  }

  async function rotate(key) {
    const grace = h("fieldset", { class: "choices" },
      h("legend", null, "Retire the current key"),
      GRACE_CHOICES.map(([secs, label, text], i) => radio("grace", secs, label, text, i === 0)));
    const created = await confirmAction({
      title: "Rotate this key?",
      message: h("p", null, "A new key with the same settings replaces ", h("strong", null, key.name), " (", h("code", null, key.prefix), "\u2026)."),
      extra: grace,
      confirmLabel: "Rotate key",
      action: (form) => api("POST", `/api/v1/api-keys/${encodeURIComponent(key.id)}/rotate`, {
        body: { expire_previous_in_secs: Number(form.elements.grace.value) },
      }),
    });
    if (created) {
      await load();
      await showPlaintext(created, "Key rotated");
      status.show(`Key \u201c${key.name}\u201d rotated.`);
    }
  }

  async function load() {
    syncUrl();
    error.clear();
    listArea.setAttribute("aria-busy", "true");
    let list;
    try {
      list = await api("GET", "/api/v1/api-keys", {
        query: { page: state.page, limit: 20, include_inactive: state.inactive, owner_id: state.owner || null },
      });
    } catch (err) {
      error.show(messageOf(err));
      listArea.removeAttribute("aria-busy");
      return;
    }
    const columns = [
      { label: "Name", cell: (k) => h("strong", { class: "key-name" }, k.name) },
      { label: "Prefix", cell: (k) => h("code", { class: "nowrap" }, `${k.prefix}\u2026`) },
      { label: "Type", cell: (k) => k.type },
      { label: "Environment", cell: (k) => k.environment },
      { label: "Scopes", cell: (k) => scopesCell(k.scopes) },
      { label: "Owner", cell: (k) => (k.owner_id ? h("code", null, k.owner_id) : h("span", { class: "muted" }, "\u2014")) },
      { label: "Created", cell: (k) => timeEl(k.created_at) },
      { label: "Last used", cell: (k) => timeEl(k.last_used_at) },
      { label: "Expires", cell: (k) => timeEl(k.expires_at) },
      { label: "Status", cell: (k) => badge(...keyStatus(k)) },
    ];
    if (canManage) columns.push({ label: "Actions", cell: actions, className: "actions" });
    add(clear(listArea), 
      dataTable({
        caption: "API keys",
        columns,
        items: list.items,
        rowAttrs: (k) => ({ "data-key-id": k.id, class: k.is_active && !k.revoked_at ? null : "inactive" }),
        empty: state.owner
          ? "No keys for that owner."
          : canManage ? "No keys yet. Create one to let a service call your API." : "No keys yet.",
      }),
      pager(list.pagination, (page) => {
        state.page = page;
        load();
      }),
    );
    listArea.removeAttribute("aria-busy");
  }

  await load();
}
