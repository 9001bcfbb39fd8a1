// What the keys list and a key's own page share: a key's status, its
// scopes, the plaintext shown once, the rotate, revoke and edit dialogs,
// and a key's usage over the last days.

import { api } from "./api.js";
import { busy, errorBox, field, h, PRODUCT } from "./dom.js";
import { badge, confirmAction, messageOf, modal, revealSecret } from "./ui.js";

export const GRACE_CHOICES = [
  [0, "Now", "The current key stops working at once."],
  [3600, "In 1 hour", "Both keys work for an hour while you deploy the new one."],
  [86400, "In 24 hours", "Both keys work for a day."],
  [604800, "In 7 days", "Both keys work for a week."],
];

export function keyStatus(key) {
  if (key.revoked_at) return ["Revoked", "danger"];
  if (key.expires_at && new Date(key.expires_at) <= new Date()) return ["Expired", "muted"];
  if (!key.is_active) return ["Inactive", "muted"];
  return ["Active", "ok"];
}

export function statusBadge(key) {
  return badge(...keyStatus(key));
}

export function isLive(key) {
  return key.is_active && !key.revoked_at;
}

export function scopesCell(scopes) {
  if (!scopes.length) return h("span", { class: "muted" }, "None");
  return h("ul", { class: "chips" }, scopes.map((sc) => h("li", null, h("code", null, sc))));
}

export function keyHref(key) {
  return `/keys/${encodeURIComponent(key.id)}`;
}

const WARNING = `Copy this key now and store it somewhere safe. ${PRODUCT} keeps only a hash of it: it will not be shown again, and if you lose it you will need to rotate the key.`;

export function showPlaintext(created, title) {
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

export function radio(name, value, label, description, checked) {
  const input = h("input", { type: "radio", name, value, checked, id: `${name}-${value}` });
  return h("div", { class: "choice" },
    input,
    h("label", { for: input.id }, h("span", { class: "choice-title" }, label),
      description ? h("span", { class: "choice-text" }, description) : null));
}

/** Asks, then revokes; resolves to true when the key was revoked. */
export async function confirmRevoke(key) {
  const done = await confirmAction({
    title: "Revoke this key?",
    message: h("p", null, "Requests with ", h("strong", null, key.name), " (", h("code", null, key.prefix), "\u2026) will be refused as soon as you confirm. This cannot be undone."),
    confirmLabel: "Revoke key",
    danger: true,
    action: () => api("DELETE", `/api/v1/api-keys/${encodeURIComponent(key.id)}`),
  });
  return Boolean(done);
}

/** Asks, then rotates; resolves to the new key (with its plaintext) or null. */
export function confirmRotate(key) {
  const grace = h("fieldset", { class: "choices" },
    h("legend", null, "Retire the current key"),
    GRACE_CHOICES.map(([secs, label, text], i) => radio("grace", secs, label, text, i === 0)));
  return confirmAction({
    title: "Rotate this key?",
    message: h("p", null, "A new key with the same settings replaces ", h("strong", null, key.name), " (", h("code", null, key.prefix), "\u2026)."),
    extra: grace,
    confirmLabel: "Rotate key",
    action: (form) => api("POST", `/api/v1/api-keys/${encodeURIComponent(key.id)}/rotate`, {
      body: { expire_previous_in_secs: Number(form.elements.grace.value) },
    }),
  });
}

function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/**
 * The edit dialog: name, scopes, rate limit, owner, credits, allowed IPs,
 * expiry and metadata (PATCH sends only what changed). Resolves to the
 * updated key, or null when cancelled.
 */
export function editDialog(key, catalog) {
  return new Promise((resolve) => {
    let result = null;
    const error = errorBox();
    const name = h("input", { type: "text", name: "name", required: true, maxlength: 100, value: key.name, autocomplete: "off" });
    const rl = key.rate_limit || catalog.default_rate_limit;
    const rateLimit = h("input", { type: "number", name: "rate_limit", min: 1, step: 1, inputmode: "numeric", value: String(rl.limit) });
    const rateWindow = h("input", { type: "number", name: "rate_window", min: 1, max: 86400, step: 1, inputmode: "numeric", value: String(rl.window_secs) });
    const owner = h("input", { type: "text", name: "owner_id", maxlength: 200, autocomplete: "off", value: key.owner_id || "" });
    const credits = h("input", { type: "number", name: "credits", min: 0, step: 1, inputmode: "numeric", value: key.credits ? String(key.credits.remaining) : "" });
    const refillNow = key.credits && key.credits.refill ? key.credits.refill.interval : "";
    const refill = h("select", { name: "refill" },
      [["", "No refill"], ["daily", "Refill daily"], ["monthly", "Refill monthly"]].map(([v, l]) => h("option", { value: v, selected: v === refillNow }, l)));
    const refillAmount = h("input", { type: "number", name: "refill_amount", min: 1, step: 1, inputmode: "numeric", value: key.credits && key.credits.refill ? String(key.credits.refill.amount) : "" });
    const ips = h("textarea", { name: "allowed_ips", rows: 3, spellcheck: "false" });
    ips.value = (key.allowed_ips || []).join("\n");
    const expires = h("input", { type: "datetime-local", name: "expires_at", value: toLocalInput(key.expires_at) });
    const metadata = h("textarea", { name: "metadata", rows: 4, spellcheck: "false" });
    metadata.value = JSON.stringify(key.metadata || {}, null, 2);
    const scopes = h("fieldset", { class: "choices choices-columns" },
      h("legend", null, "Scopes"),
      catalog.scopes.map((sc) => {
        const input = h("input", { type: "checkbox", name: "scopes", value: sc.name, checked: key.scopes.includes(sc.name), id: `edit-scope-${sc.name.replace(/[^a-z0-9]/g, "-")}` });
        return h("div", { class: "choice" }, input,
          h("label", { for: input.id }, h("code", { class: "choice-title" }, sc.name), h("span", { class: "choice-text" }, sc.description)));
      }));
    const form = h("form", { class: "stack", id: "edit-key-form" },
      error.el,
      field("Name", name),
      scopes,
      h("fieldset", { class: "group" },
        h("legend", null, "Rate limit"),
        h("div", { class: "grid-2" }, field("Requests", rateLimit), field("Per window (seconds)", rateWindow))),
      h("fieldset", { class: "group" },
        h("legend", null, "Credits"),
        h("div", { class: "grid-2" },
          field("Balance", credits, "Empty means unlimited."),
          h("div", { class: "stack-tight" }, field("Refill", refill), field("Refill amount", refillAmount, "Empty: the balance above.")))),
      h("div", { class: "grid-2" },
        field("Owner id", owner, "Your own id for whoever holds the key."),
        field("Expires", expires, "Empty: never. In your local time.")),
      field("Allowed IP addresses", ips, "One address or CIDR network a line. Empty: any address."),
      field("Metadata (JSON object)", metadata, "Returned by verify with every valid check."));

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.clear();
      const body = {};
      if (name.value.trim() !== key.name) body.name = name.value.trim();
      const chosen = [...form.querySelectorAll("input[name=scopes]:checked")].map((c) => c.value);
      if (chosen.join(" ") !== key.scopes.join(" ")) body.scopes = chosen;
      const limit = Number(rateLimit.value);
      const windowSecs = Number(rateWindow.value);
      if (limit !== rl.limit || windowSecs !== rl.window_secs) body.rate_limit = { limit, window_secs: windowSecs };
      const ownerValue = owner.value.trim() || null;
      if (ownerValue !== (key.owner_id || null)) body.owner_id = ownerValue;
      const newCredits = credits.value === "" ? null : {
        remaining: Number(credits.value),
        refill: refill.value ? { amount: Number(refillAmount.value || credits.value), interval: refill.value } : null,
      };
      if (JSON.stringify(newCredits) !== JSON.stringify(key.credits ? { remaining: key.credits.remaining, refill: key.credits.refill || null } : null)) {
        body.credits = newCredits;
      }
      const ipList = ips.value.split(/[\s,]+/).map((v) => v.trim()).filter(Boolean);
      if (ipList.join(" ") !== (key.allowed_ips || []).join(" ")) body.allowed_ips = ipList.length ? ipList : null;
      const expiresValue = expires.value ? new Date(expires.value).toISOString().replace(/\.\d+Z$/, "Z") : null;
      if (expires.value !== toLocalInput(key.expires_at)) body.expires_at = expiresValue;
      let meta;
      try {
        meta = JSON.parse(metadata.value || "{}");
      } catch {
        error.show("Metadata must be a JSON object, for example {\"plan\": \"pro\"}.");
        metadata.focus();
        return;
      }
      if (JSON.stringify(meta) !== JSON.stringify(key.metadata || {})) body.metadata = meta;
      if (!Object.keys(body).length) {
        dialog.close();
        return;
      }
      await busy(form, async () => {
        try {
          result = await api("PATCH", `/api/v1/api-keys/${encodeURIComponent(key.id)}`, { body });
          dialog.close();
        } catch (err) {
          error.show(messageOf(err));
          error.el.scrollIntoView({ block: "nearest" });
        }
      });
    });
    const dialog = modal({
      title: `Edit \u201c${key.name}\u201d`,
      body: form,
      className: "dialog-wide",
      onClose: () => resolve(result),
      actions: [
        h("button", { type: "button", class: "button", onclick: () => dialog.close() }, "Cancel"),
        h("button", { type: "submit", form: form.id, class: "button button-primary" }, "Save changes"),
      ],
    });
    name.focus();
  });
}

function isoSeconds(d) {
  return d.toISOString().replace(/\.\d+Z$/, "Z");
}

/** A key's usage report over the last `days` days, by day. */
export function keyUsage(keyId, days = 30) {
  const to = new Date();
  const from = new Date(to.getTime() - days * 86400 * 1000);
  return api("GET", "/api/v1/usage", {
    query: { key_id: keyId, from: isoSeconds(from), to: isoSeconds(to), granularity: "day" },
  });
}

/** Runs `work` over `items`, at most `limit` at a time. */
export async function eachLimited(items, limit, work) {
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next;
      next += 1;
      await work(items[i], i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
