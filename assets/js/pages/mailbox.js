// The local mailbox (local mode only): every message Gatehouse "sent",
// newest first, with the login code picked out. Polls while open.

import { api, ApiError } from "../api.js";
import { add, clear, errorBox, formatDateTime, h, PRODUCT } from "../dom.js";
import { messageOf } from "../ui.js";

/** The login code in a message body: a line of digits only. */
function codeIn(body) {
  const line = body.split("\n").map((l) => l.trim()).find((l) => /^[0-9]{6,10}$/.test(l));
  return line || null;
}

function message(item) {
  const code = codeIn(item.body);
  return h("article", { class: "mail", "data-to": item.to, "data-id": item.id },
    h("header", { class: "mail-head" },
      h("h2", null, item.subject),
      h("p", { class: "muted" },
        "To ", h("strong", null, item.to), " \u00b7 ",
        h("time", { datetime: item.created_at }, formatDateTime(item.created_at)))),
    code
      ? h("p", { class: "mail-code-line" }, "Login code: ", h("code", { class: "mail-code" }, code))
      : null,
    h("pre", { class: "mail-body" }, item.body));
}

export async function render(ctx) {
  const list = h("div", { class: "mail-list", "aria-live": "polite" });
  const error = errorBox();
  add(ctx.main, 
    h("div", { class: "narrow" },
      h("div", { class: "page-header" },
        h("div", null,
          h("h1", null, "Local mailbox"),
          h("p", { class: "lead" }, `In local mode ${PRODUCT} delivers mail here instead of sending it. Newest first; this page refreshes by itself.`)),
        h("div", { class: "page-actions" },
          h("a", { class: "button", href: "/login" }, "Back to log in"))),
      error.el,
      list),
  );

  let newest = null;
  let timer = null;
  async function load() {
    try {
      const box = await api("GET", "/api/v1/dev/mailbox", { project: false });
      error.clear();
      const top = box.items.length ? box.items[0].id : 0;
      if (top === newest) return;
      newest = top;
      clear(list);
      if (!box.items.length) list.append(h("p", { class: "empty" }, "No messages yet. Ask for a login code and it will appear here."));
      else list.append(...box.items.map(message));
    } catch (err) {
      clearInterval(timer);
      if (err instanceof ApiError && err.status === 404) {
        clear(list).append(h("div", { class: "panel notice" },
          h("h2", null, "Not in local mode"),
          h("p", null, `The local mailbox exists only when ${PRODUCT} runs in local mode. Mail is delivered by SMTP.`)));
      } else {
        error.show(messageOf(err));
      }
    }
  }
  await load();
  timer = setInterval(() => {
    if (!document.hidden) load();
  }, 3000);
}
