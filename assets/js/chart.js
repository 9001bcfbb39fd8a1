// The usage chart: verifications per time bucket in every series the
// totals show (valid, invalid, rate-limited, other refusals), drawn as
// inline SVG, either as stacked bars or as one line per series (easier to
// read over long periods). Colours come from CSS classes, not attributes,
// so the stylesheet owns them (and the dark theme). Every bucket carries
// its counts as data attributes and a <title> (the tooltip).

import { formatNumber, s } from "./dom.js";

export const SERIES = [
  { key: "valid", label: "Valid" },
  { key: "invalid", label: "Invalid" },
  { key: "rate_limited", label: "Rate-limited" },
  { key: "refused", label: "Other refusals" },
];

const cls = (key) => key.replace("_", "-");

/** A round upper bound for the y axis and its tick step. */
function scale(max) {
  if (max <= 4) return { top: 4, step: 1 };
  const rough = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((v) => v >= rough);
  return { top: step * Math.ceil(max / step), step };
}

/**
 * `series`: [{t, valid, invalid, rate_limited, refused}], `granularity`:
 * "hour" | "day", `kind`: "bar" (stacked, the default) or "line".
 * Returns an <svg> sized `width` x `height` pixels.
 */
export function usageChart(series, { width, height, granularity, label, kind = "bar" }) {
  const pad = { top: 12, right: 12, bottom: 28, left: 44 };
  const plotW = Math.max(10, width - pad.left - pad.right);
  const plotH = Math.max(10, height - pad.top - pad.bottom);
  const totals = { valid: 0, invalid: 0, rate_limited: 0, refused: 0 };
  let max = 0;
  for (const p of series) {
    let sum = 0;
    for (const { key } of SERIES) {
      const v = p[key] || 0;
      totals[key] += v;
      sum = kind === "line" ? Math.max(sum, v) : sum + v;
    }
    max = Math.max(max, sum);
  }
  const { top, step } = scale(max);
  const y = (v) => pad.top + plotH - (v / top) * plotH;

  const svg = s("svg", {
    class: "chart",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": label,
    dataset: {
      kind,
      valid: totals.valid,
      invalid: totals.invalid,
      rateLimited: totals.rate_limited,
      refused: totals.refused,
      buckets: series.length,
    },
  });
  svg.append(s("title", null, label));

  const grid = s("g", { class: "chart-grid" });
  for (let v = 0; v <= top + 1e-9; v += step) {
    grid.append(
      s("line", { x1: pad.left, x2: pad.left + plotW, y1: y(v), y2: y(v) }),
      s("text", { x: pad.left - 6, y: y(v), "text-anchor": "end", "dominant-baseline": "middle", class: "chart-label" }, formatNumber(v)),
    );
  }
  svg.append(grid);

  const n = Math.max(1, series.length);
  const slot = plotW / n;
  const barW = Math.max(1, Math.min(28, slot * 0.72));
  const hourFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
  const longFmt = granularity === "day"
    ? new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric", timeZone: "UTC" })
    : new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

  const bars = s("g", { class: "chart-bars" });
  series.forEach((p, i) => {
    const x = pad.left + i * slot + (slot - barW) / 2;
    const when = new Date(p.t);
    const group = s("g", {
      class: "bucket",
      dataset: { t: p.t, valid: p.valid, invalid: p.invalid, rateLimited: p.rate_limited, refused: p.refused || 0 },
    });
    group.append(s("title", null,
      `${longFmt.format(when)}${granularity === "day" ? " (UTC)" : ""}: ${SERIES.map(({ key, label: l }) => `${l.toLowerCase()} ${formatNumber(p[key])}`).join(", ")}`));
    // A transparent full-height target so the tooltip works on empty buckets too.
    group.append(s("rect", { class: "bucket-hit", x: pad.left + i * slot, y: pad.top, width: slot, height: plotH }));
    if (kind === "bar") {
      let base = 0;
      for (const { key } of SERIES) {
        const v = p[key];
        if (!v) continue;
        const y0 = y(base);
        const y1 = y(base + v);
        group.append(s("rect", { class: `bar bar-${cls(key)}`, x, y: y1, width: barW, height: Math.max(1, y0 - y1) }));
        base += v;
      }
    }
    bars.append(group);
  });
  svg.append(bars);

  if (kind === "line") {
    const cx = (i) => pad.left + i * slot + slot / 2;
    const lines = s("g", { class: "chart-lines" });
    for (const { key } of SERIES) {
      // A series with nothing in the period stays on the axis, drawn once.
      const points = series.map((p, i) => `${cx(i).toFixed(1)},${y(p[key] || 0).toFixed(1)}`);
      if (points.length) lines.append(s("polyline", { class: `line line-${cls(key)}`, points: points.join(" "), dataset: { series: key } }));
      // Dots where there is something, when they fit.
      if (slot >= 6) {
        series.forEach((p, i) => {
          if (p[key]) lines.append(s("circle", { class: `dot dot-${cls(key)}`, cx: cx(i), cy: y(p[key]), r: 2.5 }));
        });
      }
    }
    svg.insertBefore(lines, bars);
  }

  const axis = s("g", { class: "chart-axis" });
  axis.append(s("line", { x1: pad.left, x2: pad.left + plotW, y1: pad.top + plotH, y2: pad.top + plotH }));
  const labelEvery = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(plotW / 70))));
  series.forEach((p, i) => {
    if (i % labelEvery !== 0) return;
    const when = new Date(p.t);
    axis.append(s("text", {
      x: pad.left + i * slot + slot / 2,
      y: pad.top + plotH + 18,
      "text-anchor": "middle",
      class: "chart-label",
    }, granularity === "day" ? dayFmt.format(when) : hourFmt.format(when)));
  });
  svg.append(axis);

  if (max === 0) {
    svg.append(s("text", { x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle", class: "chart-empty" },
      "No verifications in this period"));
  }
  return svg;
}
