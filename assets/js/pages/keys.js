// API keys: the project's keys (revoked and expired ones on request) with
// their use over the last 30 days, the create dialog, and rotate/revoke
// behind a confirmation. A row leads to the key's own page. A new key's
// plaintext is shown once and leaves the document when its dialog closes.

import { api } from "../api.js";
import { add, busy, clear, dateEl, errorBox, field, formatNumber, h, s, statusBox } from "../dom.js";
import { dataTable, messageOf, modal, pageHeader, pager } from "../ui.js";
import {
  confirmRevoke, confirmRotate, eachLimited, isLive, keyHref, keyUsage, radio, scopesCell, showPlaintext, statusBadge,
} from "../keyparts.js";

/** Verifications per day as a row of small bars (valid ones). */
function sparkline(series) {
  const width = 84;
  const height = 18;
  const max = Math.max(1, ...series.map((p) => p.valid));
  const w = width / Math.max(1, series.length);
  return s("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, "aria-hidden": "true" },
    series.map((p, i) => {
      const bh = p.valid ? Math.max(1, (p.valid / max) * height) : 0;
      return s("rect", { x: (i * w).toFixed(2), y: (height - bh).toFixed(2), width: Math.max(0.5, w - 0.6).toFixed(2), height: bh.toFixed(2) });
    }));
}

const EXPIRY_CHOICES = [
  ["", "Never"],
  ["7", "In 7 days"],
  ["30", "In 30 days"],
  ["90", "In 90 days"],
  ["180", "In 180 days"],
  ["365", "In 1 year"],
];

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
    if (!canManage || !isLive(key)) return h("span", { class: "muted" }, "\u2014");
    return h("div", { class: "row-actions" },
      h("button", { type: "button", class: "button button-small", "aria-label": `Rotate ${key.name}`, onclick: () => rotate(key) }, "Rotate"),
      h("button", { type: "button", class: "button button-small button-danger-quiet", "aria-label": `Revoke ${key.name}`, onclick: () => revoke(key) }, "Revoke"));
  }

  async function revoke(key) {
    if (await confirmRevoke(key)) {
      status.show(`Key \u201c${key.name}\u201d revoked.`);
      await load();
    }
  }

  async function rotate(key) {
    const created = await confirmRotate(key);
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
    const usageCells = new Map();
    const columns = [
      {
        label: "Name",
        cell: (k) => h("div", { class: "key-cell" },
          h("a", { href: keyHref(k), class: "key-link" }, k.name),
          h("code", { title: "Display prefix" }, `${k.prefix}\u2026`)),
      },
      { label: "Type", cell: (k) => h("span", { class: "kind" }, k.type, h("span", { class: "muted" }, k.environment)) },
      { label: "Scopes", cell: (k) => scopesCell(k.scopes) },
      { label: "Owner", cell: (k) => (k.owner_id ? h("code", null, k.owner_id) : h("span", { class: "muted" }, "\u2014")) },
      {
        label: "30 days",
        className: "usage",
        cell: (k) => {
          const cell = h("span", { class: "usage-figure", dataset: { keyUsage: k.id } }, h("span", { class: "muted" }, "\u2026"));
          usageCells.set(k.id, cell);
          return cell;
        },
      },
      { label: "Created", cell: (k) => dateEl(k.created_at) },
      { label: "Last used", cell: (k) => dateEl(k.last_used_at) },
      { label: "Expires", cell: (k) => dateEl(k.expires_at) },
      { label: "Status", cell: (k) => statusBadge(k) },
    ];
    if (canManage) columns.push({ label: "Actions", cell: actions, className: "actions" });
    add(clear(listArea), 
      dataTable({
        caption: "API keys",
        columns,
        items: list.items,
        rowAttrs: (k) => ({
          "data-key-id": k.id,
          class: ["clickable", isLive(k) ? null : "inactive"],
          // The whole row opens the key's page with a pointer; the name is
          // the link for the keyboard and screen readers.
          onclick: (event) => {
            if (event.target.closest("a, button, input, select, summary")) return;
            if (window.getSelection().toString()) return;
            location.assign(keyHref(k));
          },
        }),
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
    // Each key's use over the last 30 days, filled in as it arrives.
    eachLimited(list.items, 4, async (k) => {
      const cell = usageCells.get(k.id);
      try {
        const report = await keyUsage(k.id, 30);
        const t = report.totals;
        const refused = t.invalid + t.rate_limited + t.refused;
        add(clear(cell), 
          h("span", { title: `${formatNumber(t.valid)} valid, ${formatNumber(refused)} refused in the last 30 days` },
            formatNumber(t.valid), refused ? h("span", { class: "muted" }, ` (+${formatNumber(refused)} refused)`) : null),
          sparkline(report.series));
      } catch {
        clear(cell).append(h("span", { class: "muted" }, "\u2014"));
      }
    });
  }

  await load();
}
