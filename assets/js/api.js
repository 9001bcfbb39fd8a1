// The JSON API client: the cookie session, the CSRF header on every change,
// the selected project, and the error envelope turned into an ApiError whose
// message is the server's own `message`.

export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

const session = {
  csrfToken: null,
  projectId: null,
  onExpired: null,
};

export function setCsrfToken(token) {
  session.csrfToken = token || null;
}

export function setProject(id) {
  session.projectId = id || null;
}

/** Called once with no arguments when the server says the session expired. */
export function onSessionExpired(handler) {
  session.onExpired = handler;
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/**
 * `api("GET", "/api/v1/api-keys", {query: {page: 1}})`
 * Options: `body` (sent as JSON), `query` (null/undefined/"" values are left
 * out), `project` (send X-Project-Id; default true).
 */
export async function api(method, path, options = {}) {
  const { body, query, project = true } = options;
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== null && v !== undefined && v !== "") params.set(k, String(v));
    }
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (UNSAFE.has(method) && session.csrfToken) headers["X-CSRF-Token"] = session.csrfToken;
  if (project && session.projectId) headers["X-Project-Id"] = session.projectId;

  let res;
  try {
    res = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    const product = document.querySelector('meta[name="application-name"]')?.getAttribute("content") || "Gatehouse";
    throw new ApiError(0, "network", `${product} could not be reached. Check your connection and try again.`, null);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (res.ok) return data;

  const err = data && data.error;
  const apiError = err
    ? new ApiError(res.status, err.code, err.message, err.request_id)
    : new ApiError(res.status, "http_error", `The server answered ${res.status} ${res.statusText}.`, null);
  if (res.status === 401 && apiError.code === "invalid_token" && session.onExpired) {
    session.onExpired();
  }
  throw apiError;
}

/** Whether an error means "this route does not exist on this server". */
export function isMissingRoute(err) {
  return err instanceof ApiError && err.status === 404 && err.code === "not_found";
}
