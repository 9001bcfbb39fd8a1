// The admin UI's entry point: every page path serves the same shell, and
// this module picks the page by `location.pathname`. Signed-in pages load
// `GET /api/v1/me` first (the user, their projects and the CSRF token),
// then draw the header, the project switcher and the page itself.

import { api, ApiError, onSessionExpired, setCsrfToken, setProject } from "./api.js";
import { clear, h, PRODUCT } from "./dom.js";

const PAGES = {
  "/login": { module: "./pages/login.js", title: "Log in", public: true },
  "/dev/mailbox": { module: "./pages/mailbox.js", title: "Local mailbox", public: true },
  "/keys": { module: "./pages/keys.js", title: "API keys", nav: "keys" },
  "/keys/*": { module: "./pages/key.js", title: "API key", nav: "keys" },
  "/members": { module: "./pages/members.js", title: "Members", nav: "members" },
  "/usage": { module: "./pages/usage.js", title: "Usage", nav: "usage" },
  "/audit": { module: "./pages/audit.js", title: "Audit log", nav: "audit" },
  "/webhooks": { module: "./pages/webhooks.js", title: "Webhooks", nav: "webhooks" },
  "/billing": { module: "./pages/billing.js", title: "Billing", nav: "billing" },
  "/projects": { module: "./pages/projects.js", title: "Projects", nav: "projects", noProject: true },
};

const PROJECT_KEY = "gatehouse.project";

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
const projectSelect = document.getElementById("project-select");
const expiredPanel = document.getElementById("session-expired");

let expired = false;

/** Shows the "session expired" panel, whose form posts to /auth/refresh. */
function showSessionExpired() {
  if (expired) return;
  expired = true;
  const form = document.getElementById("session-expired-form");
  form.elements.next.value = location.pathname + location.search;
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  main.hidden = true;
  topbar.hidden = true;
  expiredPanel.hidden = false;
  document.title = `Session expired · ${PRODUCT}`;
  form.querySelector("button").focus();
}

onSessionExpired(showSessionExpired);

function rememberedProject() {
  try {
    return localStorage.getItem(PROJECT_KEY);
  } catch {
    return null;
  }
}

function rememberProject(id) {
  try {
    localStorage.setItem(PROJECT_KEY, id);
  } catch {
    // Storage may be disabled; the choice then lasts for this page only.
  }
}

function fail(err) {
  if (expired) return;
  clear(main).append(
    h("div", { class: "panel" },
      h("h1", null, "Something went wrong"),
      h("p", { class: "alert alert-error", role: "alert" }, err instanceof ApiError ? err.message : String(err)),
      h("p", null, h("a", { href: location.pathname + location.search }, "Try again"))),
  );
}

/** State shared with the page modules. */
const ctx = {
  main,
  me: null,
  membership: null,
  get project() {
    return this.membership && this.membership.project;
  },
  get role() {
    return this.membership ? this.membership.role : null;
  },
  /** Whether the current role is at least `role` (owner > admin > member). */
  atLeast(role) {
    const rank = { member: 1, admin: 2, owner: 3 };
    return (rank[this.role] || 0) >= rank[role];
  },
  /** Reloads the user's projects (after creating one) and selects `projectId`. */
  async reload(projectId) {
    await loadMe();
    if (projectId) selectProject(projectId);
    fillSwitcher();
  },
  selectProject(id) {
    selectProject(id);
    fillSwitcher();
    renderPage();
  },
};

let page = null;
let pageInfo = null;

async function loadMe() {
  const me = await api("GET", "/api/v1/me", { project: false });
  setCsrfToken(me.csrf_token);
  ctx.me = me;
  const wanted = ctx.membership ? ctx.membership.project.id : rememberedProject();
  const found = me.memberships.find((m) => m.project.id === wanted);
  ctx.membership = found || me.memberships[0] || null;
  setProject(ctx.membership && ctx.membership.project.id);
}

function selectProject(id) {
  const found = ctx.me.memberships.find((m) => m.project.id === id);
  if (!found) return;
  ctx.membership = found;
  setProject(id);
  rememberProject(id);
}

function fillSwitcher() {
  clear(projectSelect);
  for (const m of ctx.me.memberships) {
    projectSelect.append(
      h("option", { value: m.project.id, selected: ctx.membership && m.project.id === ctx.membership.project.id },
        `${m.project.name} (${m.role})`),
    );
  }
  projectSelect.disabled = ctx.me.memberships.length === 0;
  if (ctx.me.memberships.length === 0) projectSelect.append(h("option", { value: "" }, "No project"));
}

function drawChrome(info) {
  const account = document.getElementById("account-email");
  account.textContent = ctx.me.user.email;
  account.title = `Signed in as ${ctx.me.user.email}`;
  for (const link of topbar.querySelectorAll("nav a")) {
    if (link.dataset.page === info.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  fillSwitcher();
  topbar.hidden = false;
}

async function renderPage() {
  if (expired) return;
  clear(main);
  const info = pageInfo;
  if (!info.public && !info.noProject && !ctx.membership) {
    main.append(
      h("div", { class: "panel" },
        h("h1", null, "No project yet"),
        h("p", null, "You are not a member of any project. Create one, or ask a teammate to add you."),
        h("p", null, h("a", { class: "button button-primary", href: "/projects" }, "Create a project"))),
    );
    return;
  }
  try {
    await page.render(ctx);
  } catch (err) {
    fail(err);
  }
}

async function boot() {
  const info = PAGES[location.pathname]
    || (/^\/keys\/[^/]+$/.test(location.pathname) ? PAGES["/keys/*"] : PAGES["/keys"]);
  pageInfo = info;
  document.title = `${info.title} · ${PRODUCT}`;
  document.body.classList.toggle("plain", Boolean(info.public));
  try {
    page = await import(info.module);
    if (!info.public) {
      try {
        await loadMe();
      } catch (err) {
        if (err instanceof ApiError && err.status === 401 && err.code !== "invalid_token") {
          const next = location.pathname + location.search;
          location.replace(`/login?next=${encodeURIComponent(next)}`);
          return;
        }
        throw err;
      }
      drawChrome(info);
    }
    await renderPage();
  } catch (err) {
    fail(err);
  }
}

projectSelect.addEventListener("change", () => ctx.selectProject(projectSelect.value));

document.getElementById("logout").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await api("POST", "/api/v1/auth/logout", { project: false });
  } catch (err) {
    // Already logged out (or expired): the login page is the right place anyway.
    if (!(err instanceof ApiError) || err.status !== 401) {
      button.disabled = false;
      fail(err);
      return;
    }
  }
  location.assign("/login");
});

boot();
