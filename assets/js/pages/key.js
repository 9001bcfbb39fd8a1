// A key's own page (/keys/{id}): its settings, limits and balance, its use
// over time, the audit entries about it, and edit, rotate and revoke.

import { api, ApiError } from "../api.js";
import { add, clear, dateEl, errorBox, formatNumber, h, statusBox, timeEl } from "../dom.js";
import { usageChart } from "../chart.js";
import { dataTable, messageOf } from "../ui.js";
import {
  confirmRevoke, confirmRotate, editDialog, isLive, keyHref, keyUsage, scopesCell, showPlaintext, statusBadge,
} from "../keyparts.js";
import { actionLabel, auditEntries, describeActor, describeTarget, loadDirectory } from "./audit.js";

const RANGE_DAYS = 30;

function fact(label, value) {
  return [h("dt", null, label), h("dd", null, value)];
}

function none(text = "\u2014") {
  return h("span", { class: "muted" }, text);
}

function windowText(secs) {
  if (secs % 86400 === 0) return secs === 86400 ? "day" : `${secs / 86400} days`;
  if (secs % 3600 === 0) return secs === 3600 ? "hour" : `${secs / 3600} hours`;
  if (secs % 60 === 0) return secs === 60 ? "minute" : `${secs / 60} minutes`;
  return secs === 1 ? "second" : `${secs} seconds`;
}

export async function render(ctx) {
  const id = decodeURIComponent(location.pathname.split("/")[2] || "");
  const canManage = ctx.atLeast("admin");
  const error = errorBox();
  const status = statusBox();
  let key;
  try {
    key = await api("GET", `/api/v1/api-keys/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      add(ctx.main,
        h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/keys" }, "API keys")),
        h("div", { class: "panel" },
          h("h1", null, "No such key"),
          h("p", null, `There is no key with this id in ${ctx.project.name}. It may belong to another project: choose it above.`)));
      return;
    }
    throw err;
  }
  document.title = `${key.name} \u00b7 ${document.title.split(" \u00b7 ").slice(-1)[0]}`;
  let catalog = null;

  const header = h("div");
  const settings = h("section", { class: "card", "aria-labelledby": "settings-title" });
  const limits = h("section", { class: "card", "aria-labelledby": "limits-title" });
  const chartArea = h("div", { class: "chart-area", id: "key-usage-chart" });
  const usageTotals = h("p", { class: "muted", id: "key-usage-totals" });
  const auditArea = h("div", { id: "key-audit" });

  add(ctx.main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/keys" }, "API keys")),
    header,
    status.el,
    error.el,
    h("div", { class: "key-grid" },
      settings,
      limits,
      h("section", { class: "card span-2 chart-card", "aria-labelledby": "key-usage-title" },
        h("div", { class: "card-head" },
          h("h2", { id: "key-usage-title" }, `Verifications, last ${RANGE_DAYS} days`),
          h("a", { href: `/usage?key=${encodeURIComponent(key.id)}&range=30d` }, "Open in Usage")),
        usageTotals,
        chartArea),
      h("section", { class: "card span-2", "aria-labelledby": "key-audit-title" },
        h("div", { class: "card-head" },
          h("h2", { id: "key-audit-title" }, "Recent activity"),
          ctx.atLeast("admin") ? h("a", { href: `/audit?target=${encodeURIComponent(key.id)}` }, "All entries in the audit log") : null),
        auditArea)),
  );

  async function ensureCatalog() {
    catalog = catalog || (await api("GET", "/api/v1/catalog", { project: false }));
    return catalog;
  }

  async function edit() {
    try {
      const updated = await editDialog(key, await ensureCatalog());
      if (updated) {
        key = updated;
        draw();
        status.show("Changes saved.");
        loadAudit();
      }
    } catch (err) {
      error.show(messageOf(err));
    }
  }

  async function rotate() {
    const created = await confirmRotate(key);
    if (created) {
      await showPlaintext(created, "Key rotated");
      location.assign(keyHref(created));
    }
  }

  async function revoke() {
    if (await confirmRevoke(key)) {
      key = await api("GET", `/api/v1/api-keys/${encodeURIComponent(key.id)}`);
      draw();
      status.show(`Key \u201c${key.name}\u201d revoked.`);
      loadAudit();
      document.getElementById("main").focus();
    }
  }

  function draw() {
    const live = isLive(key);
    const actions = canManage && live
      ? h("div", { class: "page-actions" },
        h("button", { type: "button", class: "button", id: "edit-key", onclick: edit }, "Edit"),
        h("button", { type: "button", class: "button", id: "rotate-key", onclick: rotate }, "Rotate"),
        h("button", { type: "button", class: "button button-danger", id: "revoke-key", onclick: revoke }, "Revoke"))
      : null;
    add(clear(header), 
      h("div", { class: "page-header" },
        h("div", null,
          h("div", { class: "key-title" }, h("h1", null, key.name), statusBadge(key)),
          h("p", { class: "lead" }, h("code", null, `${key.prefix}\u2026`), ` \u00b7 ${key.type} key \u00b7 ${key.environment}`)),
        actions),
      canManage || !live ? null : h("p", { class: "alert alert-info" }, `Your role (${ctx.role}) can view this key. Owners and admins edit, rotate and revoke it.`),
    );

    const metadata = key.metadata && Object.keys(key.metadata).length
      ? h("details", { class: "json" }, h("summary", null, `${Object.keys(key.metadata).length} field(s)`), h("pre", null, JSON.stringify(key.metadata, null, 2)))
      : none("None");
    add(clear(settings), 
      h("h2", { id: "settings-title" }, "Settings"),
      h("dl", { class: "facts" },
        fact("Id", h("code", null, key.id)),
        fact("Scopes", scopesCell(key.scopes)),
        fact("Owner id", key.owner_id ? h("code", null, key.owner_id) : none()),
        fact("Allowed IPs", key.allowed_ips && key.allowed_ips.length
          ? h("ul", { class: "chips" }, key.allowed_ips.map((ip) => h("li", null, h("code", null, ip))))
          : none("Any address")),
        fact("Metadata", metadata),
        fact("Created", timeEl(key.created_at)),
        fact("Last used", timeEl(key.last_used_at)),
        fact("Expires", timeEl(key.expires_at)),
        key.revoked_at ? fact("Revoked", timeEl(key.revoked_at)) : null));

    const rl = key.rate_limit;
    const credits = key.credits;
    let balance;
    if (!credits) {
      balance = [h("p", { class: "balance", id: "key-balance" }, "Unlimited"), h("p", { class: "hint" }, "Every successful check is allowed until a balance is set.")];
    } else {
      const refill = credits.refill;
      const meter = refill && refill.amount > 0
        ? h("meter", { class: "balance-meter", min: 0, max: refill.amount, value: Math.min(credits.remaining, refill.amount), "aria-label": "Balance left of the refill amount" })
        : null;
      balance = [
        h("p", { class: "balance", id: "key-balance" }, formatNumber(credits.remaining), h("span", { class: "muted" }, " credits left")),
        meter,
        h("p", { class: "hint" }, refill ? `Refilled to ${formatNumber(refill.amount)} ${refill.interval === "daily" ? "every day" : "every month"} (UTC).` : "No refill: the balance only goes down."),
      ];
    }
    add(clear(limits), 
      h("h2", { id: "limits-title" }, "Limits and balance"),
      h("dl", { class: "facts" },
        fact("Rate limit", rl ? `${formatNumber(rl.limit)} requests per ${windowText(rl.window_secs)}` : none("Default"))),
      h("h3", { class: "subhead" }, "Credits"),
      balance);
  }

  async function loadUsage() {
    chartArea.setAttribute("aria-busy", "true");
    try {
      const report = await keyUsage(key.id, RANGE_DAYS);
      const t = report.totals;
      usageTotals.textContent = `${formatNumber(t.valid)} valid, ${formatNumber(t.invalid)} invalid, ${formatNumber(t.rate_limited)} rate-limited, ${formatNumber(t.refused)} other refusals.`;
      const width = Math.max(260, Math.floor(chartArea.clientWidth));
      add(clear(chartArea), usageChart(report.series, {
        width,
        height: width < 500 ? 200 : 240,
        granularity: "day",
        kind: "line",
        label: `Verifications of ${key.name} per day over the last ${RANGE_DAYS} days: ${usageTotals.textContent}`,
      }));
    } catch (err) {
      add(clear(chartArea), h("p", { class: "alert alert-error" }, messageOf(err)));
    }
    chartArea.removeAttribute("aria-busy");
  }

  async function loadAudit() {
    if (!ctx.atLeast("admin")) {
      add(clear(auditArea), h("p", { class: "muted" }, "Owners and admins see the audit log."));
      return;
    }
    try {
      const directory = await loadDirectory();
      const { items } = await auditEntries({ target: key.id }, 10);
      add(clear(auditArea), dataTable({
        caption: "Recent audit entries for this key",
        columns: [
          { label: "When", cell: (e) => dateEl(e.created_at) },
          { label: "Action", cell: (e) => actionLabel(e.action) },
          { label: "Actor", cell: (e) => describeActor(e.actor, ctx.me.user, directory) },
          { label: "Target", cell: (e) => describeTarget(e.target, directory) },
        ],
        items,
        empty: "Nothing recorded about this key yet.",
      }));
    } catch (err) {
      add(clear(auditArea), h("p", { class: "alert alert-error" }, messageOf(err)));
    }
  }

  draw();
  await Promise.all([loadUsage(), loadAudit()]);
}
