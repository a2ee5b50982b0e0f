// Calls to the gateway's APIs (same origin), with the operator's basic auth when logged in.

const AUTH_KEY = "mxt-auth";

export class ApiError extends Error {
  constructor(status, body, path) {
    super(ApiError.describe(status, body, path));
    this.status = status;
    this.body = body;
  }

  /** The gateway's error bodies name the reason (and the field): show them as they are. */
  static describe(status, body, path) {
    if (body && typeof body === "object") {
      const reason = body.reason || body.detail || body.message;
      if (reason) return `${status}: ${typeof reason === "string" ? reason : JSON.stringify(reason)}`;
    }
    return `${status} on ${path}`;
  }
}

export function credentials() {
  return sessionStorage.getItem(AUTH_KEY);
}

export function loggedIn() {
  return credentials() !== null;
}

export function logout() {
  sessionStorage.removeItem(AUTH_KEY);
  document.dispatchEvent(new CustomEvent("mxt-auth"));
}

/** Check the credentials against an authenticated endpoint, keep them for the session. */
export async function login(user, password) {
  const token = btoa(`${user}:${password}`);
  const response = await fetch("/system/info", { headers: { Authorization: `Basic ${token}` } });
  if (response.status === 401) throw new Error("wrong user or password");
  if (!response.ok) throw new Error(`gateway answered ${response.status}`);
  sessionStorage.setItem(AUTH_KEY, token);
  document.dispatchEvent(new CustomEvent("mxt-auth"));
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
  if (auth || credentials()) {
    const token = credentials();
    if (!token) throw new ApiError(401, { reason: "log in first" }, path);
    options.headers.Authorization = `Basic ${token}`;
  }
  const response = await fetch(path, options);
  const payload = await parse(response).catch(() => null);
  if (!response.ok) throw new ApiError(response.status, payload, path);
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
