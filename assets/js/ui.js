// Building blocks shared by the pages: page headers, responsive tables,
// pagination, and the dialogs (confirmation, a secret shown once).

import { ApiError } from "./api.js";
import { clear, errorBox, h } from "./dom.js";

export function pageHeader(title, description, ...actions) {
  return h("div", { class: "page-header" },
    h("div", null,
      h("h1", null, title),
      description ? h("p", { class: "lead" }, description) : null),
    actions.length ? h("div", { class: "page-actions" }, actions) : null);
}

export function messageOf(err) {
  return err instanceof ApiError ? err.message : String(err && err.message ? err.message : err);
}

/**
 * A table that becomes a list of labelled cards on narrow screens.
 * `columns`: [{label, cell: item => Node|string, className}]
 */
export function dataTable({ caption, columns, items, empty, rowAttrs }) {
  if (!items.length) return h("p", { class: "empty" }, empty);
  const table = h("table", { class: "data" },
    caption ? h("caption", { class: "visually-hidden" }, caption) : null,
    h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col", class: c.className }, c.label)))),
    h("tbody", null, items.map((item) => h("tr", rowAttrs ? rowAttrs(item) : null,
      columns.map((c) => h("td", { "data-label": c.label, class: c.className }, c.cell(item)))))));
  return h("div", { class: "table-wrap" }, table);
}

/** "Page 2 of 5" with previous/next buttons, or nothing for a single page. */
export function pager(pagination, onPage) {
  if (!pagination || pagination.pages <= 1) return null;
  const { page, pages, total } = pagination;
  return h("nav", { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", class: "button", disabled: page <= 1, onclick: () => onPage(page - 1) }, "Previous"),
    h("span", null, `Page ${page} of ${pages} (${total} in all)`),
    h("button", { type: "button", class: "button", disabled: page >= pages, onclick: () => onPage(page + 1) }, "Next"));
}

/**
 * A modal <dialog> appended to <body>, opened at once and removed from the
 * document when it closes (Escape, a Cancel button or `close()`).
 */
export function modal({ title, body, actions, className, onClose, labelledBy }) {
  const titleId = labelledBy || `dialog-title-${Math.random().toString(36).slice(2)}`;
  const dialog = h("dialog", { class: ["dialog", className], "aria-labelledby": titleId },
    h("div", { class: "dialog-head" },
      h("h2", { id: titleId }, title),
      h("button", { type: "button", class: "icon-button", "aria-label": "Close", onclick: () => dialog.close() }, "\u00d7")),
    h("div", { class: "dialog-body" }, body),
    actions ? h("div", { class: "dialog-actions" }, actions) : null);
  dialog.addEventListener("close", () => {
    if (onClose) onClose();
    dialog.remove();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/**
 * Asks before doing something; `action` runs when confirmed, and its error
 * (the server's message) is shown in the dialog, which then stays open.
 * Resolves to the action's result, or null when cancelled.
 */
export function confirmAction({ title, message, confirmLabel, danger = false, extra = null, action }) {
  return new Promise((resolve) => {
    let result = null;
    const error = errorBox();
    const form = h("form", { method: "dialog", class: "stack" },
      h("div", null, message),
      extra,
      error.el,
      h("div", { class: "dialog-actions" },
        h("button", { type: "button", class: "button", onclick: () => dialog.close() }, "Cancel"),
        h("button", { type: "submit", class: ["button", danger ? "button-danger" : "button-primary"] }, confirmLabel)));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.clear();
      const buttons = form.querySelectorAll("button");
      buttons.forEach((b) => {
        b.disabled = true;
      });
      try {
        result = await action(form);
        dialog.close();
      } catch (err) {
        error.show(messageOf(err));
        buttons.forEach((b) => {
          b.disabled = false;
        });
      }
    });
    const dialog = modal({ title, body: form, className: "dialog-narrow", onClose: () => resolve(result) });
  });
}

async function copyText(text, source) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard permission: select the text and fall back to execCommand.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  }
}

/**
 * Shows a secret (an API key, a webhook signing secret) once. Closing the
 * dialog removes it, and the secret with it, from the document.
 */
export function revealSecret({ title, label, secret, warning, details }) {
  return new Promise((resolve) => {
    const code = h("code", { class: "secret-value", id: "secret-value" }, secret);
    const copied = h("span", { class: "copy-status", role: "status" });
    const copyButton = h("button", {
      type: "button",
      class: "button",
      onclick: async () => {
        const ok = await copyText(code.textContent, code);
        copied.textContent = ok ? "Copied to the clipboard." : "Copying failed: the text is selected, copy it with your keyboard.";
      },
    }, "Copy");
    const doneButton = h("button", { type: "button", class: "button button-primary", onclick: () => dialog.close() }, "Done");
    const dialog = modal({
      title,
      className: "dialog-secret",
      body: h("div", { class: "stack" },
        h("p", { class: "alert alert-warn" }, warning),
        h("div", { class: "field" },
          h("span", { class: "label", id: "secret-label" }, label),
          h("div", { class: "secret-row", role: "group", "aria-labelledby": "secret-label" }, code, copyButton),
          copied),
        details || null),
      actions: [doneButton],
      onClose: () => {
        // Drop the text before the dialog leaves the document.
        clear(code);
        copied.textContent = "";
        resolve();
      },
    });
    doneButton.focus();
  });
}

/** A "not available on this server" notice for routes that answer 404. */
export function unavailable(what, detail) {
  return h("div", { class: "panel notice", "data-state": "unavailable" },
    h("h2", null, `${what} not available`),
    h("p", null, detail));
}

export function badge(text, tone) {
  return h("span", { class: ["badge", tone ? `badge-${tone}` : null] }, text);
}
