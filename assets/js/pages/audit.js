// The audit log (owners and admins): who did what, newest first. Members get
// the server's refusal, shown as it is.

import { api } from "../api.js";
import { add, clear, errorBox, h, timeEl } from "../dom.js";
import { dataTable, messageOf, pageHeader, pager } from "../ui.js";

function details(value) {
  if (!value || (typeof value === "object" && !Object.keys(value).length)) return h("span", { class: "muted" }, "\u2014");
  return h("details", { class: "json" },
    h("summary", null, "Details"),
    h("pre", null, JSON.stringify(value, null, 2)));
}

function actor(a, me) {
  if (!a) return "\u2014";
  if (a.type === "user" && a.id === me.id) return h("span", { class: "actor" }, "you");
  return h("span", { class: "actor" }, h("span", { class: "muted" }, `${a.type} `), a.id ? h("code", null, a.id) : null);
}

export async function render(ctx) {
  const params = new URLSearchParams(location.search);
  let page = Number(params.get("page")) || 1;
  const error = errorBox();
  const listArea = h("div", { class: "list-area" });
  add(ctx.main, 
    pageHeader("Audit log", `Sign-ins, key and member changes and plan changes in ${ctx.project.name}, newest first.`),
    error.el,
    listArea,
  );

  async function load() {
    history.replaceState(null, "", page > 1 ? `${location.pathname}?page=${page}` : location.pathname);
    error.clear();
    let list;
    try {
      list = await api("GET", "/api/v1/audit-log", { query: { page, limit: 50 } });
    } catch (err) {
      clear(listArea);
      error.show(messageOf(err));
      return;
    }
    add(clear(listArea), 
      dataTable({
        caption: "Audit log",
        columns: [
          { label: "When", cell: (e) => timeEl(e.created_at) },
          { label: "Action", cell: (e) => h("code", null, e.action) },
          { label: "Actor", cell: (e) => actor(e.actor, ctx.me.user) },
          { label: "Target", cell: (e) => (e.target ? h("code", null, e.target) : h("span", { class: "muted" }, "\u2014")) },
          { label: "IP address", cell: (e) => e.ip || h("span", { class: "muted" }, "\u2014") },
          { label: "Request", cell: (e) => (e.request_id ? h("code", { class: "small" }, e.request_id) : h("span", { class: "muted" }, "\u2014")) },
          { label: "Details", cell: (e) => details(e.details) },
        ],
        items: list.items,
        empty: "Nothing has been recorded yet.",
      }),
      pager(list.pagination, (p) => {
        page = p;
        load();
      }),
    );
  }
  await load();
}
