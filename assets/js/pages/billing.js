// Billing: the project's plan, its limits and how much of them is used.
// Plans change only through signed Stripe events, never from this page.
// Until the server has the billing route (it answers 404) the page says so.

import { api, isMissingRoute } from "../api.js";
import { add, clear, errorBox, formatNumber, h, PRODUCT } from "../dom.js";
import { badge, dataTable, messageOf, pageHeader, unavailable } from "../ui.js";

function limitText(limit) {
  return limit === null || limit === undefined ? "Unlimited" : formatNumber(limit);
}

function usageMeter(label, used, limit) {
  const id = `meter-${label.toLowerCase().replace(/[^a-z]+/g, "-")}`;
  const unlimited = limit === null || limit === undefined;
  return h("div", { class: "usage-meter" },
    h("div", { class: "row-between" },
      h("label", { for: id }, label),
      h("span", { class: "muted" }, unlimited ? `${formatNumber(used)} used, no limit` : `${formatNumber(used)} of ${formatNumber(limit)}`)),
    unlimited
      ? h("meter", { id, min: 0, max: 1, value: 0 })
      : h("meter", { id, min: 0, max: Math.max(1, limit), low: limit * 0.8, high: limit * 0.95, optimum: 0, value: Math.min(used, limit) }));
}

async function plansTable() {
  try {
    const catalog = await api("GET", "/api/v1/catalog", { project: false });
    if (!catalog.plans || !catalog.plans.length) return null;
    return h("section", { class: "stack-tight" },
      h("h2", null, "Plans on this server"),
      dataTable({
        caption: "Plans",
        columns: [
          { label: "Plan", cell: (p) => h("span", null, p.name, p.default ? " " : null, p.default ? badge("default", "muted") : null) },
          { label: "API keys", cell: (p) => limitText(p.max_keys) },
          { label: "Verifications a month", cell: (p) => limitText(p.monthly_verifications) },
        ],
        items: catalog.plans,
        empty: "No plans.",
      }));
  } catch {
    return null;
  }
}

export async function render(ctx) {
  const error = errorBox();
  const area = h("div", { class: "stack" });
  add(ctx.main, 
    pageHeader("Billing", `The plan of ${ctx.project.name} and what it allows.`),
    error.el,
    area,
  );
  let billing;
  try {
    billing = await api("GET", "/api/v1/billing");
  } catch (err) {
    if (isMissingRoute(err)) {
      clear(area).append(
        unavailable("Billing",
          `Billing is not configured on this ${PRODUCT} server, so ${ctx.project.name} has no plan limits (plan \u201c${ctx.project.plan}\u201d).`),
      );
      const plans = await plansTable();
      if (plans) area.append(plans);
    } else {
      error.show(messageOf(err));
    }
    return;
  }
  clear(area).append(
    h("section", { class: "card", id: "billing-plan" },
      h("div", { class: "row-between" },
        h("h2", null, "Current plan"),
        badge(billing.plan, "accent")),
      usageMeter("API keys", billing.usage.keys, billing.limits.max_keys),
      usageMeter("Verifications this month", billing.usage.verifications_this_month, billing.limits.monthly_verifications),
      h("p", { class: "hint" }, "The plan changes when your Stripe subscription changes. Past a limit, creating keys fails with plan_limit and verifications with quota_exceeded.")),
  );
  const plans = await plansTable();
  if (plans) area.append(plans);
}
