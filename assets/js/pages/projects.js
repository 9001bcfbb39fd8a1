// Projects: the ones you belong to (switch between them) and a form to
// create one (you become its owner).

import { api } from "../api.js";
import { add, busy, clear, errorBox, field, h, statusBox, timeEl } from "../dom.js";
import { badge, dataTable, messageOf, pageHeader, pager } from "../ui.js";

export async function render(ctx) {
  const error = errorBox();
  const status = statusBox();
  const listArea = h("div", { class: "list-area" });
  let page = 1;

  const name = h("input", { type: "text", name: "name", required: true, maxlength: 100, autocomplete: "off" });
  const formError = errorBox();
  const form = h("form", { class: "card invite", id: "project-form" },
    h("h2", null, "Create a project"),
    h("p", { class: "muted" }, "Each project has its own keys, members, usage and plan. You will be its owner."),
    formError.el,
    h("div", { class: "invite-fields" },
      field("Project name", name),
      h("div", { class: "field field-button" }, h("button", { type: "submit", class: "button button-primary" }, "Create project"))));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.clear();
    await busy(form, async () => {
      try {
        const project = await api("POST", "/api/v1/projects", { body: { name: name.value.trim() }, project: false });
        name.value = "";
        await ctx.reload(project.id);
        status.show(`Project \u201c${project.name}\u201d created and selected.`);
        await load();
      } catch (err) {
        formError.show(messageOf(err));
      }
    });
  });

  async function load() {
    error.clear();
    let list;
    try {
      list = await api("GET", "/api/v1/projects", { query: { page, limit: 50 }, project: false });
    } catch (err) {
      error.show(messageOf(err));
      return;
    }
    const current = ctx.project && ctx.project.id;
    add(clear(listArea), 
      dataTable({
        caption: "Your projects",
        columns: [
          { label: "Project", cell: (p) => h("span", null, h("strong", null, p.name), p.id === current ? " " : null, p.id === current ? badge("selected", "accent") : null) },
          { label: "Your role", cell: (p) => p.role },
          { label: "Plan", cell: (p) => p.plan },
          { label: "Created", cell: (p) => timeEl(p.created_at) },
          {
            label: "Actions",
            className: "actions",
            cell: (p) => (p.id === current
              ? h("span", { class: "muted" }, "\u2014")
              : h("button", {
                type: "button",
                class: "button button-small",
                "aria-label": `Switch to ${p.name}`,
                onclick: () => {
                  ctx.selectProject(p.id);
                },
              }, "Switch")),
          },
        ],
        items: list.items,
        empty: "You are not a member of any project yet.",
      }),
      pager(list.pagination, (p) => {
        page = p;
        load();
      }),
    );
  }

  add(ctx.main, 
    pageHeader("Projects", "Pick the project the other pages work on, or start a new one."),
    status.el,
    form,
    error.el,
    listArea,
  );
  await load();
}
