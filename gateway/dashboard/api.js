// Calls to the gateway's APIs (same origin), with the user's basic auth when logged in.
//
// Every call says "X-Requested-With: mxt-dashboard": the gateway then answers a 401
// without a WWW-Authenticate challenge, so the browser never shows its own password
// prompt; the login dialog says what went wrong instead.

const AUTH_KEY = "mxt-auth";
const WHO_KEY = "mxt-who";
const REQUESTED_WITH = { "X-Requested-With": "mxt-dashboard" };

/** The roles of the gateway's policy, lowest first: each includes those before it. */
export const ROLES = ["scientist", "operator", "admin"];

/** The role each action of the page needs (gateway/policy.py and stack.yml's com.mxt.access). */
export const NEEDS = {
  submit: "operator", // POST /function/objects-upload
  cancel: "operator", // POST /mxt/runs/<id>/cancel
  rerun: "operator", // POST /mxt/runs/<id>/rerun
  functions: "operator", // GET /system/functions
};

export class ApiError extends Error {
  constructor(status, body, path) {
    super(ApiError.describe(status, body, path));
    this.status = status;
    this.body = body;
  }

  /** The gateway's error bodies name the reason (and the field): show them as they are. */
  static describe(status, body, path) {
    let reason = null;
    if (body && typeof body === "object") {
      const given = body.reason || body.detail || body.message;
      if (given) reason = typeof given === "string" ? given : JSON.stringify(given);
    }
    if (status === 403) {
      // logged in, but the role is too low (or the request is not allowed at all)
      const who = whoami();
      const as = who ? ` You are logged in as ${who.user} (${who.role}).` : "";
      return `Not allowed: ${reason || `the gateway refused ${path}`}.${as}`;
    }
    if (status === 401) return `Log in first: ${reason || `${path} needs a login`}.`;
    return reason ? `${status}: ${reason}` : `${status} on ${path}`;
  }
}

export function credentials() {
  return sessionStorage.getItem(AUTH_KEY);
}

export function loggedIn() {
  return credentials() !== null;
}

/** {user, role} of the login, or null. */
export function whoami() {
  if (!loggedIn()) return null;
  try {
    return JSON.parse(sessionStorage.getItem(WHO_KEY)) || null;
  } catch {
    return null;
  }
}

/** Whether the login's role may do ``action`` (a key of NEEDS). */
export function can(action) {
  const who = whoami();
  return Boolean(who) && ROLES.indexOf(who.role) >= ROLES.indexOf(NEEDS[action]);
}

/** Why the page does not offer ``action``: "" when it does. */
export function cannotReason(action, verb) {
  if (!loggedIn()) return `Log in to ${verb}.`;
  if (can(action)) return "";
  return `Your role (${whoami()?.role || "unknown"}) cannot ${verb}: it needs ${NEEDS[action]}.`;
}

export function logout() {
  sessionStorage.removeItem(AUTH_KEY);
  sessionStorage.removeItem(WHO_KEY);
  document.dispatchEvent(new CustomEvent("mxt-auth"));
}

/** fetch() with the dashboard's X-Requested-With header (any other headers kept). */
export function apiFetch(path, options = {}) {
  return fetch(path, { ...options, headers: { ...REQUESTED_WITH, ...(options.headers || {}) } });
}

async function askWhoami(token) {
  const response = await apiFetch("/system/whoami", { headers: { Authorization: `Basic ${token}` } });
  if (response.status === 401) throw new Error("wrong user or password");
  const body = await parse(response).catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body, "/system/whoami");
  return body;
}

/** Check the credentials (GET /system/whoami), keep them and the role for the session. */
export async function login(user, password) {
  const token = btoa(`${user}:${password}`);
  const who = await askWhoami(token);
  sessionStorage.setItem(AUTH_KEY, token);
  sessionStorage.setItem(WHO_KEY, JSON.stringify({ user: who.user, role: who.role }));
  document.dispatchEvent(new CustomEvent("mxt-auth"));
}

/** Ask again who the kept login is (its role may have changed); log out if it no longer works. */
export async function refreshLogin() {
  const token = credentials();
  if (!token) return;
  try {
    const who = await askWhoami(token);
    sessionStorage.setItem(WHO_KEY, JSON.stringify({ user: who.user, role: who.role }));
    document.dispatchEvent(new CustomEvent("mxt-auth"));
  } catch (error) {
    if (error.message === "wrong user or password") logout();
  }
}

async function parse(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json();
  return response.text();
}

/** Fetch a path; JSON (or text) on success, ApiError with the gateway's reason otherwise. */
export async function request(method, path, { body, json, auth = false, headers = {} } = {}) {
  const options = { method, headers: { ...headers } };
  if (json !== undefined) {
    options.body = JSON.stringify(json);
    options.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    options.body = body;
  }
  const token = credentials();
  if (auth && !token) throw new ApiError(401, { reason: "this action needs a login" }, path);
  if (token) options.headers.Authorization = `Basic ${token}`;
  const response = await apiFetch(path, options);
  const payload = await parse(response).catch(() => null);
  if (!response.ok) {
    // the kept login stopped working (password changed, user removed): forget it
    if (response.status === 401 && token) logout();
    throw new ApiError(response.status, payload, path);
  }
  return payload;
}

export const getJSON = (path) => request("GET", path);

/** URL of an object's bytes (products, raw): the objects-download function. */
export function objectURL(bucket, key) {
  return `/function/objects-download?bucket=${encodeURIComponent(bucket)}&key=${encodeURIComponent(key)}`;
}

/** URL of a CALDB file. */
export function caldbURL(key) {
  return `/caldb/download?key=${encodeURIComponent(key)}`;
}
