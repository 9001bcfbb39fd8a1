// Small DOM helpers. Everything is built with createElement and text nodes:
// no string is ever parsed as HTML, so text from the server cannot become
// markup. No inline styles either: the page's Content-Security-Policy forbids them.

const SVG_NS = "http://www.w3.org/2000/svg";

/** The product's name (`ui.product_name`), put into every page by the server. */
export const PRODUCT = document.querySelector('meta[name="application-name"]')?.getAttribute("content") || "Gatehouse";

function apply(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "dataset") {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else if (name === "value" && "value" in el && !(el instanceof SVGElement)) {
      el.value = value;
    } else if (name === "checked" || name === "selected" || name === "disabled" || name === "required") {
      el[name] = Boolean(value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** `h("button", {type: "button", onclick}, "Save")` */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "dataset") {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children, skipping null, undefined and false (unlike Element.append). */
export function add(el, ...children) {
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

let uid = 0;
/** A unique id for label/field pairs. */
export function fieldId(base) {
  uid += 1;
  return `${base}-${uid}`;
}

/** A labelled form field: `field("Name", input, "hint")`. */
export function field(labelText, control, hint) {
  if (!control.id) control.id = fieldId("f");
  const parts = [h("label", { for: control.id }, labelText)];
  if (hint) {
    const hintId = `${control.id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(control, h("p", { class: "hint", id: hintId }, hint));
  } else {
    parts.push(control);
  }
  return h("div", { class: "field" }, parts);
}

/** An alert region for errors (role=alert so screen readers announce it). */
export function errorBox() {
  const box = h("div", { class: "alert alert-error", role: "alert", hidden: true });
  return {
    el: box,
    show(message) {
      box.textContent = message;
      box.hidden = false;
    },
    clear() {
      box.textContent = "";
      box.hidden = true;
    },
  };
}

/** A polite status line for confirmations ("Member added."). */
export function statusBox() {
  const box = h("div", { class: "alert alert-ok", role: "status", hidden: true });
  let timer = null;
  return {
    el: box,
    show(message) {
      box.textContent = message;
      box.hidden = false;
      clearTimeout(timer);
      timer = setTimeout(() => {
        box.hidden = true;
      }, 6000);
    },
  };
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});

/** A <time> element for an RFC 3339 string, or `empty` text when null. */
export function timeEl(iso, empty = "Never") {
  if (!iso) return h("span", { class: "muted" }, empty);
  const d = new Date(iso);
  return h("time", { datetime: iso, title: d.toISOString() }, dateTime.format(d));
}

const dateOnly = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });

/** A date on one line; the time of day is in its title (for tables). */
export function dateEl(iso, empty = "Never") {
  if (!iso) return h("span", { class: "muted" }, empty);
  const d = new Date(iso);
  return h("time", { datetime: iso, class: "date", title: dateTime.format(d) }, dateOnly.format(d));
}

export function formatDateTime(iso) {
  return dateTime.format(new Date(iso));
}

const numberFormat = new Intl.NumberFormat();
export function formatNumber(n) {
  return numberFormat.format(n);
}

/** Disables a form's controls while `work` runs. */
export async function busy(form, work) {
  // form.elements includes buttons outside the form that name it (form="...").
  const controls = [...form.elements].filter((c) => c.tagName !== "FIELDSET" && !c.disabled);
  controls.forEach((c) => {
    c.disabled = true;
  });
  form.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    controls.forEach((c) => {
      c.disabled = false;
    });
    form.removeAttribute("aria-busy");
  }
}
