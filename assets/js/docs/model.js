// Reading an OpenAPI 3.1 document for the reference page: operations
// grouped by tag, schema references, type labels and constraints. No DOM
// here; reference.js draws what this returns.

export const METHODS = ["get", "put", "post", "patch", "delete", "head", "options", "trace"];

const SCHEMA_REF = "#/components/schemas/";

/** The operations of `doc`, grouped by tag in the document's tag order. */
export function groups(doc) {
  const declared = (doc.tags || []).map((t) => ({ name: t.name, description: t.description || "", operations: [] }));
  const byName = new Map(declared.map((g) => [g.name, g]));
  const other = { name: "other", description: "", operations: [] };
  for (const [path, item] of Object.entries(doc.paths || {})) {
    const shared = item.parameters || [];
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const operation = {
        method,
        path,
        id: op.operationId || "",
        // Unique even when operationIds are not.
        anchor: `op-${method}${path.replace(/[^A-Za-z0-9]+/g, "-")}`.replace(/-+$/, ""),
        summary: op.summary || "",
        description: op.description || "",
        deprecated: Boolean(op.deprecated),
        parameters: mergeParameters(doc, shared, op.parameters || []),
        requestBody: op.requestBody ? deref(doc, op.requestBody, "#/components/requestBodies/") : null,
        responses: Object.entries(op.responses || {}).map(([status, r]) => ({
          status,
          ...deref(doc, r, "#/components/responses/"),
        })),
        security: op.security !== undefined ? op.security : doc.security || [],
        tags: op.tags && op.tags.length ? op.tags : ["other"],
      };
      const tag = operation.tags[0];
      let group = byName.get(tag);
      if (!group) {
        group = tag === "other" ? other : { name: tag, description: "", operations: [] };
        if (tag !== "other") {
          declared.push(group);
          byName.set(tag, group);
        }
      }
      group.operations.push(operation);
    }
  }
  if (other.operations.length) declared.push(other);
  return declared.filter((g) => g.operations.length);
}

/** Path-level parameters, overridden by operation-level ones of the same name and place. */
function mergeParameters(doc, shared, own) {
  const out = new Map();
  for (const p of [...shared, ...own]) {
    const param = deref(doc, p, "#/components/parameters/");
    out.set(`${param.in}:${param.name}`, param);
  }
  return [...out.values()];
}

/** Follows a local `$ref` under `prefix`; anything else is returned as it is. */
function deref(doc, value, prefix) {
  if (value && typeof value.$ref === "string" && value.$ref.startsWith(prefix)) {
    const name = value.$ref.slice(prefix.length);
    const section = prefix.split("/")[3];
    return (doc.components && doc.components[section] && doc.components[section][name]) || {};
  }
  return value || {};
}

/** The component name a schema refers to, or null. */
export function refName(schema) {
  if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith(SCHEMA_REF)) {
    return schema.$ref.slice(SCHEMA_REF.length);
  }
  return null;
}

/** The schema a reference points at (or the schema itself). */
export function resolve(doc, schema) {
  const name = refName(schema);
  if (!name) return schema || {};
  return ((doc.components || {}).schemas || {})[name] || {};
}

/**
 * A schema's type as parts: strings and `{ref: "Name"}` objects (links),
 * e.g. ["array of ", {ref: "KeyView"}] or ["string | null"].
 */
export function typeParts(schema) {
  if (!schema || typeof schema !== "object") return ["any"];
  const name = refName(schema);
  if (name) return [{ ref: name }];
  for (const [key, joiner] of [["oneOf", " | "], ["anyOf", " | "], ["allOf", " & "]]) {
    if (Array.isArray(schema[key])) {
      const parts = [];
      schema[key].forEach((s, i) => {
        if (i) parts.push(joiner);
        parts.push(...typeParts(s));
      });
      return parts;
    }
  }
  const types = Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : [];
  if (types.includes("array")) {
    const rest = types.filter((t) => t !== "array" && t !== "null");
    const nullable = types.includes("null") ? [" | null"] : [];
    return [...rest.map((t) => `${t} | `), "array of ", ...typeParts(schema.items), ...nullable];
  }
  if (types.length === 0) {
    if (schema.properties) return ["object"];
    if (schema.const !== undefined) return [JSON.stringify(schema.const)];
    return ["any"];
  }
  const label = types.join(" | ");
  return [schema.format ? `${label} (${schema.format})` : label];
}

/** The constraints a schema declares, as short human-readable strings. */
export function constraints(schema) {
  if (!schema || typeof schema !== "object") return [];
  const out = [];
  if (Array.isArray(schema.enum)) out.push(`one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`);
  if (schema.const !== undefined) out.push(`always ${JSON.stringify(schema.const)}`);
  const range = (min, max, unit) => {
    if (min !== undefined && max !== undefined) out.push(`${min} to ${max}${unit}`);
    else if (min !== undefined) out.push(`at least ${min}${unit}`);
    else if (max !== undefined) out.push(`at most ${max}${unit}`);
  };
  range(schema.minimum, schema.maximum, "");
  if (schema.exclusiveMinimum !== undefined) out.push(`more than ${schema.exclusiveMinimum}`);
  if (schema.exclusiveMaximum !== undefined) out.push(`less than ${schema.exclusiveMaximum}`);
  range(schema.minLength, schema.maxLength, " characters");
  range(schema.minItems, schema.maxItems, " items");
  if (schema.uniqueItems) out.push("no duplicates");
  if (schema.pattern) out.push(`matches ${schema.pattern}`);
  if (schema.default !== undefined) out.push(`default ${JSON.stringify(schema.default)}`);
  if (schema.readOnly) out.push("read-only");
  if (schema.writeOnly) out.push("write-only");
  if (schema.deprecated) out.push("deprecated");
  if (schema.items && !refName(schema.items)) out.push(...constraints(schema.items).map((c) => `each: ${c}`));
  return out;
}

/** The properties of an object schema (through allOf), with `required` marked. */
export function properties(doc, schema) {
  const target = resolve(doc, schema);
  const out = [];
  const parts = Array.isArray(target.allOf) ? target.allOf.map((s) => resolve(doc, s)) : [target];
  for (const part of parts) {
    const required = new Set(part.required || []);
    for (const [name, prop] of Object.entries(part.properties || {})) {
      out.push({ name, schema: prop, required: required.has(name), description: prop.description || resolve(doc, prop).description || "" });
    }
  }
  return out;
}

/** Names of the security schemes an operation accepts; [] means no authentication. */
export function securityNames(requirements) {
  const names = [];
  for (const requirement of requirements || []) {
    const keys = Object.keys(requirement);
    if (keys.length) names.push(keys.join(" + "));
  }
  return names;
}

/** Whether an operation matches the filter text (path, tag, summary, id). */
export function matches(operation, tag, text) {
  if (!text) return true;
  const haystack = [operation.method, operation.path, operation.id, operation.summary, operation.description, tag]
    .join(" ")
    .toLowerCase();
  return text
    .toLowerCase()
    .split(/\s+/)
    .filter(Boolean)
    .every((word) => haystack.includes(word));
}
