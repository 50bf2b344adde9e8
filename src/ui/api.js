// The public REST API, as the dashboard calls it: every call carries the tab's token when
// there is one; a 401 asks for a token. Nothing here is private to the dashboard.

const TOKEN_KEY = "scheduler.token";
const listeners = new Set();

/** The tab's token (sessionStorage: gone when the tab closes), or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  listeners.forEach((f) => f());
}

/** Calls `f` when the token changes or the API asks for one. */
export function onAuthChange(f) {
  listeners.add(f);
}

let asked = false;
/** Whether the API refused a call for want of a token. */
export function tokenNeeded() {
  return asked;
}

/** The headers of a call: the token, when there is one. */
export function authHeaders(extra = {}) {
  const headers = { ...extra };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  return headers;
}

/** The role the token names (`role`, or the highest of `roles`), read from its payload for
 * showing what may not be done; the service decides. Without a token: everything is shown as
 * allowed (the API is open, or will say so). */
export function role() {
  const t = token();
  if (!t) return asked ? null : "admin";
  try {
    const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    const names = [claims.role, ...(Array.isArray(claims.roles) ? claims.roles : [])]
      .filter((r) => typeof r === "string")
      .map((r) => r.toLowerCase());
    for (const r of ["admin", "operator", "viewer"]) if (names.includes(r)) return r;
  } catch {
    // Not a JWT we can read: the service will say what it allows.
  }
  return "viewer";
}

const RANK = { viewer: 1, operator: 2, admin: 3 };

/** Why the current role may not do what needs `needed`, or null when it may. */
export function refusal(needed) {
  const r = role();
  if (!r) return "needs a token";
  return RANK[r] >= RANK[needed] ? null : `needs the ${needed} role`;
}

/** An API error: the problem document's detail and its field errors. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `the service answered ${status}`);
    this.status = status;
    this.errors = problem?.errors || [];
  }
}

/** Calls the API; the parsed JSON answer (null for 204), or throws an ApiError. */
export async function call(method, path, body, headers = {}) {
  const init = { method, headers: authHeaders(headers) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    asked = true;
    listeners.forEach((f) => f());
  }
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
