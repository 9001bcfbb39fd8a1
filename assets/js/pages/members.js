// Members of the current project. Owners and admins add people by email
// (admins cannot grant owner); owners change roles; owners and admins remove
// members (admins cannot remove owners); anyone may leave. Controls a role
// may not use are left out, and the server's refusal is shown if one is tried.

import { api } from "../api.js";
import { add, busy, clear, errorBox, field, h, statusBox, timeEl } from "../dom.js";
import { badge, confirmAction, dataTable, messageOf, pageHeader, pager } from "../ui.js";

const ROLES = ["member", "admin", "owner"];
const ROLE_HINT = "Members see keys, usage and members; admins also manage keys and members; owners also change roles.";

export async function render(ctx) {
  const me = ctx.me.user;
  const role = ctx.role;
  const canAdd = ctx.atLeast("admin");
  const canChangeRoles = role === "owner";
  const error = errorBox();
  const status = statusBox();
  const listArea = h("div", { class: "list-area" });
  let page = 1;

  function grantable() {
    return role === "owner" ? ROLES : ROLES.filter((r) => r !== "owner");
  }

  function inviteForm() {
    if (!canAdd) {
      return h("p", { class: "alert alert-info" }, `Your role (${role}) can see the members. Owners and admins add and remove them.`);
    }
    const email = h("input", { type: "email", name: "email", required: true, autocomplete: "off", spellcheck: "false", placeholder: "name@company.com" });
    const roleSelect = h("select", { name: "role" }, grantable().map((r) => h("option", { value: r }, r[0].toUpperCase() + r.slice(1))));
    const formError = errorBox();
    const form = h("form", { class: "card invite", id: "invite-form" },
      h("h2", null, "Add a member"),
      h("p", { class: "muted" }, "They get an email and log in with a one-time code; there is nothing to accept."),
      formError.el,
      h("div", { class: "invite-fields" },
        field("Email address", email),
        field("Role", roleSelect),
        h("div", { class: "field field-button" }, h("button", { type: "submit", class: "button button-primary" }, "Add member"))),
      h("p", { class: "hint", id: "role-hint" }, ROLE_HINT));
    roleSelect.setAttribute("aria-describedby", "role-hint");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      formError.clear();
      await busy(form, async () => {
        try {
          const added = await api("POST", "/api/v1/members", { body: { email: email.value.trim(), role: roleSelect.value } });
          status.show(`${added.user.email} was added as ${added.role}.`);
          email.value = "";
          await load();
        } catch (err) {
          formError.show(messageOf(err));
        }
      });
      email.focus();
    });
    return form;
  }

  function roleCell(member) {
    if (!canChangeRoles) return badge(member.role, member.role === "owner" ? "accent" : null);
    const select = h("select", { "aria-label": `Role of ${member.user.email}` },
      ROLES.map((r) => h("option", { value: r, selected: r === member.role }, r)));
    const save = h("button", { type: "button", class: "button button-small", disabled: true }, "Save");
    select.addEventListener("change", () => {
      save.disabled = select.value === member.role;
    });
    save.addEventListener("click", async () => {
      error.clear();
      save.disabled = true;
      try {
        const changed = await api("PATCH", `/api/v1/members/${encodeURIComponent(member.user.id)}`, { body: { role: select.value } });
        status.show(`${member.user.email} is now ${changed.role}.`);
        await load();
      } catch (err) {
        error.show(messageOf(err));
        select.value = member.role;
      }
    });
    return h("div", { class: "role-edit" }, select, save);
  }

  function actionCell(member) {
    const self = member.user.id === me.id;
    const allowed = self || role === "owner" || (role === "admin" && member.role !== "owner");
    if (!allowed) return h("span", { class: "muted" }, "\u2014");
    const label = self ? "Leave" : "Remove";
    return h("button", {
      type: "button",
      class: "button button-small button-danger-quiet",
      "aria-label": self ? "Leave this project" : `Remove ${member.user.email}`,
      onclick: () => remove(member, self),
    }, label);
  }

  async function remove(member, self) {
    const done = await confirmAction({
      title: self ? "Leave this project?" : "Remove this member?",
      message: self
        ? h("p", null, "You will lose access to ", h("strong", null, ctx.project.name), " and its keys.")
        : h("p", null, h("strong", null, member.user.email), " will lose access to ", h("strong", null, ctx.project.name), ". Their keys keep working until revoked."),
      confirmLabel: self ? "Leave project" : "Remove member",
      danger: true,
      action: () => api("DELETE", `/api/v1/members/${encodeURIComponent(member.user.id)}`).then(() => true),
    });
    if (!done) return;
    if (self) {
      location.assign("/projects");
      return;
    }
    status.show(`${member.user.email} was removed.`);
    await load();
  }

  async function load() {
    error.clear();
    let list;
    try {
      list = await api("GET", "/api/v1/members", { query: { page, limit: 50 } });
    } catch (err) {
      error.show(messageOf(err));
      return;
    }
    add(clear(listArea), 
      dataTable({
        caption: "Members",
        columns: [
          {
            label: "Member",
            cell: (m) => h("div", { class: "person" },
              h("span", { class: "person-email" }, m.user.email),
              m.user.id === me.id ? h("span", { class: "muted" }, " (you)") : null,
              m.user.full_name ? h("span", { class: "muted person-name" }, m.user.full_name) : null),
          },
          { label: "Role", cell: roleCell },
          { label: "Joined", cell: (m) => timeEl(m.created_at) },
          { label: "Actions", cell: actionCell, className: "actions" },
        ],
        items: list.items,
        rowAttrs: (m) => ({ "data-email": m.user.email }),
        empty: "No members.",
      }),
      pager(list.pagination, (p) => {
        page = p;
        load();
      }),
    );
  }

  add(ctx.main, 
    pageHeader("Members", `People who can use ${ctx.project.name}. You are ${role === "member" ? "a" : "an"} ${role}.`),
    status.el,
    inviteForm(),
    error.el,
    listArea,
  );
  await load();
}
