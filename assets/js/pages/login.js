// Log in with a one-time code: the email first, then the code. In local mode
// the code lands in the local mailbox instead of an inbox, so the page links
// to it. After logging in the browser goes to `?next=` (a same-site path
// only) or to the keys page.

import { api, ApiError } from "../api.js";
import { add, busy, clear, errorBox, field, h, PRODUCT } from "../dom.js";
import { messageOf } from "../ui.js";

const PENDING_KEY = "gatehouse.login.email";

/** `raw` if it is a path on this site (one leading slash, no scheme, no tricks), else null. */
function safeNext(raw) {
  if (!raw) return null;
  let current = raw;
  for (let i = 0; i < 4; i += 1) {
    if (!/^\/(?![/\\])/.test(current) || /[\\\s\u0000-\u001f\u007f]/.test(current)) return null;
    let decoded;
    try {
      decoded = decodeURIComponent(current);
    } catch {
      return null;
    }
    if (decoded === current) return raw;
    current = decoded;
  }
  return null;
}

/** A code's lifetime in words, as the email states it (src/mail/mod.rs, `lifetime`). */
function lifetime(secs) {
  if (!Number.isInteger(secs) || secs < 1) return "a few minutes";
  if (secs >= 120 && secs % 60 === 0) return `${secs / 60} minutes`;
  return secs === 1 ? "1 second" : `${secs} seconds`;
}

function pendingEmail() {
  try {
    return sessionStorage.getItem(PENDING_KEY);
  } catch {
    return null;
  }
}

function setPendingEmail(email) {
  try {
    if (email) sessionStorage.setItem(PENDING_KEY, email);
    else sessionStorage.removeItem(PENDING_KEY);
  } catch {
    // Without session storage the code step lasts for this page only.
  }
}

async function localMailbox() {
  try {
    await api("GET", "/api/v1/dev/mailbox", { project: false });
    return "open";
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) return "remote";
    return null;
  }
}

export async function render(ctx) {
  const next = safeNext(new URLSearchParams(location.search).get("next")) || "/keys";
  const card = h("div", { class: "auth-card" });
  const local = h("div", { class: "local-note", hidden: true });
  add(ctx.main, 
    h("div", { class: "auth-wrap" },
      h("div", { class: "auth-brand" },
        h("img", { src: "/branding/logo", alt: "", width: 40, height: 40 }),
        h("span", null, PRODUCT)),
      card,
      local),
  );

  localMailbox().then((state) => {
    if (state === "open") {
      local.append(
        h("strong", null, "Local mode. "),
        "Login codes are not emailed; they go to the ",
        h("a", { href: "/dev/mailbox", target: "_blank", rel: "noopener", id: "mailbox-link" }, "local mailbox"),
        " (opens in a new tab).");
      local.hidden = false;
    } else if (state === "remote") {
      local.append(
        h("strong", null, "Local mode. "),
        `Login codes go to the local mailbox, which can be read only on the machine ${PRODUCT} runs on.`);
      local.hidden = false;
    }
  });

  const error = errorBox();

  function emailStep(prefill) {
    const email = h("input", { type: "email", name: "email", autocomplete: "email", required: true, value: prefill || "", spellcheck: "false" });
    const form = h("form", { class: "stack", novalidate: false },
      h("h1", null, "Log in"),
      h("p", { class: "muted" }, "Enter your email address and we will send you a one-time code. There is no password."),
      error.el,
      field("Email address", email),
      h("button", { type: "submit", class: "button button-primary button-block" }, "Send code"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.clear();
      const value = email.value.trim();
      await busy(form, async () => {
        try {
          const sent = await api("POST", "/api/v1/auth/send-code", { body: { email: value }, project: false });
          setPendingEmail(value);
          codeStep(value, `We sent a code. It is valid for ${lifetime(sent && sent.expires_in)}.`);
        } catch (err) {
          error.show(messageOf(err));
        }
      });
    });
    clear(card).append(form);
    email.focus();
  }

  function codeStep(address, notice) {
    const code = h("input", {
      type: "text",
      name: "code",
      inputmode: "numeric",
      autocomplete: "one-time-code",
      pattern: "[0-9]*",
      maxlength: 10,
      required: true,
      spellcheck: "false",
      class: "code-input",
    });
    const sent = h("p", { class: "muted", role: "status" }, notice || "");
    const form = h("form", { class: "stack" },
      h("h1", null, "Check your email"),
      h("p", null, "Enter the code sent to ", h("strong", null, address), "."),
      sent,
      error.el,
      field("Login code", code),
      h("button", { type: "submit", class: "button button-primary button-block" }, "Log in"),
      h("div", { class: "row-between" },
        h("button", {
          type: "button",
          class: "link-button",
          onclick: () => {
            setPendingEmail(null);
            error.clear();
            emailStep(address);
          },
        }, "Use another email"),
        h("button", {
          type: "button",
          class: "link-button",
          onclick: async () => {
            error.clear();
            try {
              const resent = await api("POST", "/api/v1/auth/send-code", { body: { email: address }, project: false });
              sent.textContent = `A new code is on its way, valid for ${lifetime(resent && resent.expires_in)}; earlier codes no longer work.`;
            } catch (err) {
              error.show(messageOf(err));
            }
          },
        }, "Send a new code")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.clear();
      await busy(form, async () => {
        try {
          await api("POST", "/api/v1/auth/verify-code", {
            body: { email: address, code: code.value.trim(), cookie: true },
            project: false,
          });
          setPendingEmail(null);
          location.assign(next);
        } catch (err) {
          error.show(messageOf(err));
          code.value = "";
        }
      });
      code.focus();
    });
    clear(card).append(form);
    code.focus();
  }

  const pending = pendingEmail();
  if (pending) codeStep(pending);
  else emailStep();
}
