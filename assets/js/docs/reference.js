// The API reference at /docs: fetches the server's own OpenAPI document and
// draws every operation (grouped by tag) and every schema. Built with DOM
// calls only (no HTML parsing, no inline styles), so it runs under the same
// Content-Security-Policy as the admin UI, and text from the document can
// never become markup.

import { clear, h, PRODUCT } from "../dom.js";
import { constraints, groups, matches, properties, refName, resolve, securityNames, typeParts } from "./model.js";

const DOCUMENT_URL = "/api/v1/openapi.json";

const main = document.getElementById("main");
const toc = document.getElementById("docs-toc");
const filter = document.getElementById("docs-filter");

/** Text with `code` spans, as nodes. */
function inline(text) {
  return String(text || "")
    .split("`")
    .map((part, i) => (i % 2 ? h("code", null, part) : part))
    .filter((part) => part !== "");
}

/** Paragraphs separated by blank lines. */
function prose(text, className) {
  return String(text || "")
    .split(/\n\s*\n/)
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => h("p", { class: className }, ...inline(p)));
}

function schemaAnchor(name) {
  return `schema-${name}`;
}

/** A type label whose component names link to their schema. */
function typeLabel(schema) {
  return h(
    "span",
    { class: "docs-type" },
    typeParts(schema).map((part) =>
      typeof part === "string" ? part : h("a", { href: `#${schemaAnchor(part.ref)}` }, h("code", null, part.ref)),
    ),
  );
}

function constraintList(schema) {
  const items = constraints(schema);
  return items.length ? h("span", { class: "docs-constraints" }, items.join("; ")) : null;
}

/** A table of an object schema's properties (inline objects one level deep). */
function propertyTable(doc, schema, depth = 0) {
  const props = properties(doc, schema);
  if (!props.length) return null;
  return h(
    "table",
    { class: "docs-table" },
    h("thead", null, h("tr", null, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Type"), h("th", { scope: "col" }, "Description"))),
    h(
      "tbody",
      null,
      props.map((p) => {
        const nested = !refName(p.schema) && p.schema.properties && depth < 2 ? propertyTable(doc, p.schema, depth + 1) : null;
        return h(
          "tr",
          null,
          h("td", null, h("code", null, p.name), p.required ? h("span", { class: "docs-required" }, " required") : null),
          h("td", null, typeLabel(p.schema)),
          h("td", null, ...inline(p.description), " ", constraintList(p.schema), nested),
        );
      }),
    ),
  );
}

/** A body (request or response): content types, the type, and inline fields. */
function content(doc, body) {
  const entries = Object.entries(body.content || {});
  if (!entries.length) return [];
  return entries.map(([type, media]) => {
    const schema = media.schema || {};
    const inlineObject = !refName(schema) && resolve(doc, schema).properties;
    return h(
      "div",
      { class: "docs-content" },
      h("p", null, h("code", null, type), " ", typeLabel(schema), " ", constraintList(schema)),
      inlineObject ? propertyTable(doc, schema) : null,
    );
  });
}

function parametersSection(parameters) {
  if (!parameters.length) return null;
  return h(
    "section",
    null,
    h("h4", null, "Parameters"),
    h(
      "table",
      { class: "docs-table" },
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "In"), h("th", { scope: "col" }, "Type"), h("th", { scope: "col" }, "Description"))),
      h(
        "tbody",
        null,
        parameters.map((p) =>
          h(
            "tr",
            null,
            h("td", null, h("code", null, p.name), p.required ? h("span", { class: "docs-required" }, " required") : null),
            h("td", null, p.in),
            h("td", null, typeLabel(p.schema || {})),
            h("td", null, ...inline(p.description), " ", constraintList(p.schema || {})),
          ),
        ),
      ),
    ),
  );
}

function responsesSection(doc, responses, anchors) {
  return h(
    "section",
    null,
    h("h4", null, "Responses"),
    h(
      "dl",
      { class: "docs-responses" },
      responses.map((r) => [
        h("dt", { class: `docs-status docs-status-${String(r.status)[0]}` }, r.status),
        h("dd", null, ...prose(r.description), ...content(doc, r), linksOf(r, anchors)),
      ]),
    ),
  );
}

/** Response links: which operation this answer can feed. */
function linksOf(response, anchors) {
  const links = Object.entries(response.links || {});
  if (!links.length) return null;
  return h(
    "p",
    { class: "docs-links-out" },
    "Leads to: ",
    links.map(([name, link], i) => [
      i ? ", " : "",
      anchors.has(link.operationId) ? h("a", { href: `#${anchors.get(link.operationId)}` }, name) : name,
    ]),
  );
}

function operationArticle(doc, op, anchors) {
  const security = securityNames(op.security);
  return h(
    "article",
    { class: "docs-operation", id: op.anchor, dataset: { method: op.method, path: op.path } },
    h(
      "h3",
      null,
      h("span", { class: `docs-method docs-method-${op.method}` }, op.method.toUpperCase()),
      " ",
      h("code", { class: "docs-path" }, op.path),
      op.deprecated ? h("span", { class: "docs-deprecated" }, " deprecated") : null,
    ),
    op.summary ? h("p", { class: "docs-summary" }, ...inline(op.summary)) : null,
    ...prose(op.description),
    h(
      "p",
      { class: "docs-meta muted" },
      op.id ? ["Operation ", h("code", null, op.id), " · "] : null,
      security.length ? ["Authentication: ", security.join(" or ")] : "No authentication",
    ),
    parametersSection(op.parameters),
    op.requestBody
      ? h(
          "section",
          null,
          h("h4", null, "Request body", op.requestBody.required ? h("span", { class: "docs-required" }, " required") : null),
          ...prose(op.requestBody.description),
          ...content(doc, op.requestBody),
        )
      : null,
    responsesSection(doc, op.responses, anchors),
  );
}

function schemasSection(doc) {
  const schemas = Object.entries((doc.components || {}).schemas || {});
  if (!schemas.length) return null;
  return h(
    "section",
    { class: "docs-schemas", id: "schemas" },
    h("h2", null, "Schemas"),
    schemas.map(([name, schema]) =>
      h(
        "article",
        { class: "docs-schema", id: schemaAnchor(name) },
        h("h3", null, h("code", null, name), " ", h("span", { class: "muted" }, typeLabel(schema))),
        ...prose(schema.description),
        constraintList(schema),
        propertyTable(doc, schema),
      ),
    ),
  );
}

function securitySection(doc) {
  const schemes = Object.entries((doc.components || {}).securitySchemes || {});
  if (!schemes.length) return null;
  const how = (s) => {
    if (s.type === "http") return `Authorization: ${s.scheme === "bearer" ? "Bearer" : s.scheme} <value>`;
    if (s.type === "apiKey") return `${s.in} ${s.name}`;
    return s.type;
  };
  return h(
    "section",
    { id: "authentication" },
    h("h2", null, "Authentication"),
    h(
      "dl",
      { class: "docs-security" },
      schemes.map(([name, s]) => [h("dt", null, h("code", null, name)), h("dd", null, h("code", null, how(s)), " ", ...inline(s.description))]),
    ),
  );
}

function render(doc) {
  const info = doc.info || {};
  // The page carries the team's name (ui.product_name), as the UI does.
  document.title = `API reference \u00b7 ${PRODUCT}`;
  document.getElementById("docs-version").textContent = `version ${info.version || "?"} · OpenAPI ${doc.openapi || "?"}`;
  const tagGroups = groups(doc);
  // operationId -> anchor, for response links (the first operation wins).
  const anchors = new Map();
  for (const op of tagGroups.flatMap((g) => g.operations)) {
    if (op.id && !anchors.has(op.id)) anchors.set(op.id, op.anchor);
  }
  const count = tagGroups.reduce((n, g) => n + g.operations.length, 0);

  clear(main);
  main.append(
    h("h1", null, "API reference"),
    ...prose(info.description, "docs-lead"),
    h("p", { class: "muted", id: "docs-count" }, `${count} operations in ${tagGroups.length} groups.`),
    securitySection(doc) || "",
    ...tagGroups.map((g) =>
      h(
        "section",
        { class: "docs-group", id: `tag-${g.name}`, dataset: { tag: g.name } },
        h("h2", null, g.name),
        ...prose(g.description, "muted"),
        g.operations.map((op) => operationArticle(doc, op, anchors)),
      ),
    ),
    schemasSection(doc) || "",
  );

  clear(toc);
  toc.append(
    h(
      "ul",
      null,
      tagGroups.map((g) =>
        h(
          "li",
          { dataset: { tag: g.name } },
          h("a", { href: `#tag-${g.name}`, class: "docs-toc-tag" }, g.name),
          h(
            "ul",
            null,
            g.operations.map((op) =>
              h(
                "li",
                { dataset: { op: op.anchor } },
                h("a", { href: `#${op.anchor}` }, h("span", { class: `docs-method docs-method-${op.method}` }, op.method.toUpperCase()), " ", op.path),
              ),
            ),
          ),
        ),
      ),
    ),
  );

  filter.addEventListener("input", () => applyFilter(tagGroups, filter.value.trim()));
  if (location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
}

/** Hides the operations (and their table-of-contents entries) that do not match. */
function applyFilter(tagGroups, text) {
  let shown = 0;
  for (const g of tagGroups) {
    let inGroup = 0;
    for (const op of g.operations) {
      const visible = matches(op, g.name, text);
      document.getElementById(op.anchor).hidden = !visible;
      toc.querySelector(`li[data-op="${CSS.escape(op.anchor)}"]`).hidden = !visible;
      if (visible) inGroup += 1;
    }
    document.getElementById(`tag-${g.name}`).hidden = inGroup === 0;
    toc.querySelector(`li[data-tag="${CSS.escape(g.name)}"]`).hidden = inGroup === 0;
    shown += inGroup;
  }
  document.getElementById("docs-count").textContent = text ? `${shown} operations match.` : `${shown} operations.`;
}

async function start() {
  try {
    const res = await fetch(DOCUMENT_URL, { headers: { accept: "application/json" } });
    if (!res.ok) throw new Error(`${DOCUMENT_URL} answered ${res.status}`);
    render(await res.json());
  } catch (err) {
    clear(main);
    main.append(
      h("h1", null, "API reference"),
      h("p", { class: "error", role: "alert" }, `The OpenAPI document could not be loaded: ${err.message}`),
      h("p", null, "The raw document is at ", h("a", { href: DOCUMENT_URL }, DOCUMENT_URL), "."),
    );
  }
}

start();
