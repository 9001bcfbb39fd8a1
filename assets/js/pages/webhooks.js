// Outgoing webhooks (owners and admins): endpoints, the events they get,
// their deliveries, and a new endpoint's signing secret shown once. Until the
// server has the webhooks routes (they answer 404) the page says so.

import { api, isMissingRoute } from "../api.js";
import { add, busy, clear, errorBox, field, h, statusBox, timeEl, PRODUCT } from "../dom.js";
import { badge, confirmAction, dataTable, messageOf, modal, pageHeader, revealSecret, unavailable } from "../ui.js";

const EVENTS = [
  ["key.created", "A key was created"],
  ["key.updated", "A key's settings changed"],
  ["key.revoked", "A key was revoked"],
  ["key.rotated", "A key was rotated"],
  ["key.leaked", "A leaked key was reported and revoked"],
  ["member.added", "A member was added"],
  ["member.removed", "A member was removed"],
  ["billing.plan_changed", "The project's plan changed"],
];

/** The first present field among `names` (delivery records vary in naming). */
function pick(obj, ...names) {
  for (const n of names) if (obj[n] !== undefined && obj[n] !== null) return obj[n];
  return null;
}

function deliveryStatus(d) {
  const status = pick(d, "status", "state");
  if (status) {
    const tone = /deliver|success|ok/i.test(status) ? "ok" : /fail|gave|dead|error/i.test(status) ? "danger" : "muted";
    return badge(String(status), tone);
  }
  if (d.delivered_at) return badge("delivered", "ok");
  return badge("pending", "muted");
}

/** Every attempt of a delivery (the server lists them in order). */
function attemptsOf(d) {
  return Array.isArray(d.attempts) ? d.attempts : [];
}

/** The last attempt's HTTP status, or its error (timeouts, refused connections). */
function lastResponse(d) {
  const last = attemptsOf(d).at(-1);
  if (!last) return "\u2014";
  if (last.response_status !== null && last.response_status !== undefined) return String(last.response_status);
  return last.error || "\u2014";
}

async function showDeliveries(hook) {
  const area = h("div", { class: "list-area" }, h("p", { class: "muted" }, "Loading\u2026"));
  modal({ title: "Deliveries", className: "dialog-wide", body: h("div", { class: "stack" }, h("p", null, h("code", null, hook.url)), area) });
  try {
    const list = await api("GET", `/api/v1/webhooks/${encodeURIComponent(hook.id)}/deliveries`);
    const items = Array.isArray(list) ? list : list.items || [];
    clear(area).append(dataTable({
      caption: "Deliveries",
      columns: [
        { label: "Event", cell: (d) => h("code", { class: "nowrap" }, pick(d, "event", "type", "event_type") || "\u2014") },
        { label: "Status", cell: deliveryStatus },
        { label: "Attempts", cell: (d) => String(attemptsOf(d).length), className: "num" },
        { label: "Last response", cell: (d) => lastResponse(d) },
        { label: "Created", cell: (d) => timeEl(pick(d, "created_at"), "\u2014") },
        { label: "Next attempt", cell: (d) => timeEl(pick(d, "next_attempt_at"), "\u2014") },
      ],
      items,
      empty: "No deliveries yet.",
    }));
  } catch (err) {
    clear(area).append(h("p", { class: "alert alert-error", role: "alert" }, messageOf(err)));
  }
}

export async function render(ctx) {
  const canManage = ctx.atLeast("admin");
  const error = errorBox();
  const status = statusBox();
  const listArea = h("div", { class: "list-area" });
  const formArea = h("div");
  add(ctx.main, 
    pageHeader("Webhooks", `${PRODUCT} posts signed events about ${ctx.project.name} to your endpoints (Standard Webhooks signatures).`),
    status.el,
    error.el,
    formArea,
    listArea,
  );

  function createForm() {
    const url = h("input", { type: "url", name: "url", required: true, placeholder: "https://example.com/hooks/gatehouse", autocomplete: "off", spellcheck: "false" });
    const formError = errorBox();
    const events = h("fieldset", { class: "choices choices-columns" },
      h("legend", null, "Events"),
      EVENTS.map(([name, text]) => {
        const input = h("input", { type: "checkbox", name: "events", value: name, id: `event-${name.replace(/[^a-z]/g, "-")}`, checked: true });
        return h("div", { class: "choice" }, input,
          h("label", { for: input.id }, h("code", { class: "choice-title" }, name), h("span", { class: "choice-text" }, text)));
      }));
    const form = h("form", { class: "card stack", id: "webhook-form" },
      h("h2", null, "Add an endpoint"),
      formError.el,
      field("Endpoint URL", url, "Only a 2xx answer counts as delivered; failures are retried with backoff."),
      events,
      h("div", null, h("button", { type: "submit", class: "button button-primary" }, "Add endpoint")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      formError.clear();
      const chosen = [...form.querySelectorAll("input[name=events]:checked")].map((c) => c.value);
      await busy(form, async () => {
        try {
          const created = await api("POST", "/api/v1/webhooks", { body: { url: url.value.trim(), events: chosen } });
          url.value = "";
          await load();
          if (created && created.secret) {
            await revealSecret({
              title: "Endpoint added",
              label: "Signing secret",
              secret: created.secret,
              warning: "Copy the signing secret now: your endpoint needs it to check signatures, and it will not be shown again.",
            });
          }
          status.show("Endpoint added.");
        } catch (err) {
          formError.show(messageOf(err));
        }
      });
    });
    return form;
  }

  async function remove(hook) {
    const done = await confirmAction({
      title: "Delete this endpoint?",
      message: h("p", null, `${PRODUCT} stops sending events to `, h("code", null, hook.url), "."),
      confirmLabel: "Delete endpoint",
      danger: true,
      action: () => api("DELETE", `/api/v1/webhooks/${encodeURIComponent(hook.id)}`).then(() => true),
    });
    if (done) {
      status.show("Endpoint deleted.");
      await load();
    }
  }

  async function load() {
    error.clear();
    let list;
    try {
      list = await api("GET", "/api/v1/webhooks");
    } catch (err) {
      clear(formArea);
      if (isMissingRoute(err)) {
        add(clear(listArea), unavailable("Webhooks",
          `This ${PRODUCT} server does not offer outgoing webhooks yet. Once it does, you can add endpoints here.`));
      } else {
        clear(listArea);
        error.show(messageOf(err));
      }
      return;
    }
    if (canManage && !formArea.firstChild) formArea.append(createForm());
    const items = Array.isArray(list) ? list : list.items || [];
    add(clear(listArea), dataTable({
      caption: "Webhook endpoints",
      columns: [
        { label: "Endpoint", cell: (w) => h("code", { class: "wrap" }, w.url) },
        { label: "Events", cell: (w) => h("ul", { class: "chips" }, (w.events || []).map((e) => h("li", null, h("code", null, e)))) },
        {
          label: "Status",
          cell: (w) => (w.disabled_at || w.is_active === false || w.enabled === false ? badge("disabled", "muted") : badge("active", "ok")),
        },
        { label: "Created", cell: (w) => timeEl(w.created_at, "\u2014") },
        {
          label: "Actions",
          className: "actions",
          cell: (w) => h("div", { class: "row-actions" },
            h("button", { type: "button", class: "button button-small", onclick: () => showDeliveries(w) }, "Deliveries"),
            canManage
              ? h("button", { type: "button", class: "button button-small button-danger-quiet", "aria-label": `Delete ${w.url}`, onclick: () => remove(w) }, "Delete")
              : null),
        },
      ],
      items,
      empty: "No endpoints yet.",
    }));
  }
  await load();
}
