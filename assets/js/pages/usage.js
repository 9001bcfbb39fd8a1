// Usage: verifications over time for the project or one key, as a chart
// (stacked bars, or lines for long periods), totals, and the same figures
// as a table.

import { api } from "../api.js";
import { add, clear, errorBox, field, formatDateTime, formatNumber, h, PRODUCT } from "../dom.js";
import { SERIES, usageChart } from "../chart.js";
import { dataTable, messageOf, pageHeader } from "../ui.js";

const RANGES = {
  "24h": { label: "Last 24 hours", secs: 86400, granularity: "hour" },
  "7d": { label: "Last 7 days", secs: 7 * 86400, granularity: "hour" },
  "30d": { label: "Last 30 days", secs: 30 * 86400, granularity: "day" },
  "90d": { label: "Last 90 days", secs: 90 * 86400, granularity: "day" },
};

function stat(label, value, className) {
  return h("div", { class: ["stat", className] },
    h("span", { class: "stat-label" }, label),
    h("span", { class: "stat-value" }, formatNumber(value)));
}

export async function render(ctx) {
  const params = new URLSearchParams(location.search);
  const state = {
    key: params.get("key"),
    range: RANGES[params.get("range")] ? params.get("range") : "24h",
    // Bars read best over a day or a week; lines over months. The choice
    // made here is kept in the address.
    kind: ["bar", "line"].includes(params.get("chart")) ? params.get("chart") : null,
  };
  const kindOf = () => state.kind || (RANGES[state.range].granularity === "day" ? "line" : "bar");
  const error = errorBox();
  const keySelect = h("select", { id: "usage-key", name: "key" }, h("option", { value: "" }, "All keys"));
  const rangeSelect = h("select", { id: "usage-range", name: "range" },
    Object.entries(RANGES).map(([id, r]) => h("option", { value: id, selected: id === state.range }, r.label)));
  const totalsArea = h("div", { class: "stats" });
  const chartArea = h("div", { class: "chart-area", id: "usage-chart" });
  const tableArea = h("div");
  const kindButtons = [["bar", "Bars"], ["line", "Lines"]].map(([kind, label]) =>
    h("button", { type: "button", dataset: { kind }, "aria-pressed": String(kindOf() === kind), onclick: () => {
      state.kind = kind;
      syncKind();
      syncUrl();
      draw();
    } }, label));
  function syncKind() {
    for (const b of kindButtons) b.setAttribute("aria-pressed", String(b.dataset.kind === kindOf()));
  }
  const filters = h("form", { class: "toolbar" },
    field("Key", keySelect),
    field("Period", rangeSelect));
  filters.addEventListener("submit", (event) => event.preventDefault());

  add(ctx.main, 
    pageHeader("Usage", `Key verifications for ${ctx.project.name}, through the verify API, forward-auth and calls to ${PRODUCT}'s own API.`),
    error.el,
    filters,
    totalsArea,
    h("section", { class: "card chart-card", "aria-labelledby": "chart-title" },
      h("div", { class: "chart-head" },
        h("h2", { id: "chart-title" }, "Verifications over time"),
        h("div", { class: "chart-tools" },
          h("ul", { class: "legend" }, SERIES.map(({ key, label }) =>
            h("li", null, h("span", { class: `swatch swatch-${key.replace("_", "-")}`, "aria-hidden": "true" }), label))),
          h("div", { class: "segmented", role: "group", "aria-label": "Chart style", id: "chart-kind" }, kindButtons))),
      chartArea,
      h("details", { class: "chart-table" }, h("summary", null, "Show the figures as a table"), tableArea)),
  );

  try {
    const keys = await api("GET", "/api/v1/api-keys", { query: { include_inactive: true, limit: 100 } });
    for (const k of keys.items) {
      const suffix = k.revoked_at ? " (revoked)" : !k.is_active ? " (inactive)" : "";
      keySelect.append(h("option", { value: k.id, selected: k.id === state.key }, `${k.name} \u00b7 ${k.prefix}\u2026${suffix}`));
    }
    if (state.key && keySelect.value !== state.key) state.key = "";
  } catch (err) {
    error.show(messageOf(err));
  }

  let report = null;

  function draw() {
    if (!report) return;
    const range = RANGES[state.range];
    const width = Math.max(280, Math.floor(chartArea.clientWidth));
    const height = width < 500 ? 220 : 280;
    const keyName = state.key ? keySelect.selectedOptions[0].textContent : "all keys";
    const t = report.totals;
    clear(chartArea).append(usageChart(report.series, {
      width,
      height,
      granularity: range.granularity,
      kind: kindOf(),
      label: `Verifications for ${keyName}, ${range.label.toLowerCase()}: ${t.valid} valid, ${t.invalid} invalid, ${t.rate_limited} rate-limited, ${t.refused} other refusals.`,
    }));
  }

  function syncUrl() {
    const q = new URLSearchParams();
    if (state.key) q.set("key", state.key);
    if (state.range !== "24h") q.set("range", state.range);
    if (state.kind) q.set("chart", state.kind);
    history.replaceState(null, "", q.toString() ? `${location.pathname}?${q}` : location.pathname);
  }

  async function load() {
    const range = RANGES[state.range];
    syncUrl();
    syncKind();
    error.clear();
    chartArea.setAttribute("aria-busy", "true");
    const to = new Date();
    const from = new Date(to.getTime() - range.secs * 1000);
    try {
      report = await api("GET", "/api/v1/usage", {
        query: {
          from: from.toISOString().replace(/\.\d+Z$/, "Z"),
          to: to.toISOString().replace(/\.\d+Z$/, "Z"),
          granularity: range.granularity,
          key_id: state.key || null,
        },
      });
    } catch (err) {
      error.show(messageOf(err));
      chartArea.removeAttribute("aria-busy");
      return;
    }
    chartArea.removeAttribute("aria-busy");
    const t = report.totals;
    clear(totalsArea).append(
      stat("Valid", t.valid, "stat-valid"),
      stat("Invalid", t.invalid, "stat-invalid"),
      stat("Rate-limited", t.rate_limited, "stat-rate-limited"),
      stat("Other refusals", t.refused, "stat-refused"),
    );
    draw();
    const rows = report.series.filter((p) => p.valid || p.invalid || p.rate_limited || p.refused);
    clear(tableArea).append(dataTable({
      caption: "Verifications per period",
      columns: [
        { label: range.granularity === "day" ? "Day (UTC)" : "Hour starting", cell: (p) => (range.granularity === "day" ? p.t.slice(0, 10) : formatDateTime(p.t)) },
        { label: "Valid", cell: (p) => formatNumber(p.valid), className: "num" },
        { label: "Invalid", cell: (p) => formatNumber(p.invalid), className: "num" },
        { label: "Rate-limited", cell: (p) => formatNumber(p.rate_limited), className: "num" },
        { label: "Other refusals", cell: (p) => formatNumber(p.refused), className: "num" },
      ],
      items: rows,
      empty: "No verifications in this period.",
    }));
  }

  keySelect.addEventListener("change", () => {
    state.key = keySelect.value;
    load();
  });
  rangeSelect.addEventListener("change", () => {
    state.range = rangeSelect.value;
    load();
  });

  // Redraw at the new width when the window is resized (the chart is drawn
  // in real pixels so its text stays readable on a phone).
  let lastWidth = 0;
  let pending = null;
  function onResize() {
    if (!chartArea.isConnected) {
      window.removeEventListener("resize", onResize);
      return;
    }
    clearTimeout(pending);
    pending = setTimeout(() => {
      const w = Math.floor(chartArea.clientWidth);
      if (w !== lastWidth) {
        lastWidth = w;
        draw();
      }
    }, 150);
  }
  window.addEventListener("resize", onResize);
  await load();
}
