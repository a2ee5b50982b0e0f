// Small DOM and formatting helpers shared by the views.

/** Create an element: h("a", {href: "#"}, "text", child). Attributes starting with "on" bind events. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace the content of a node. */
export function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "skipped"]);

/** A state badge; the text is the state itself, colour is only a second cue. */
export function badge(state) {
  return h("span", { class: `badge state-${state}`, "data-state": state }, state);
}

/** "2026-11-27 21:30:05" in UTC from an ISO string or Unix seconds. */
export function fmtTime(value) {
  if (value === null || value === undefined || value === "") return "";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value.endsWith("Z") || value.includes("+") ? value : value + "Z");
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace("T", " ").slice(0, 19);
}

/** Seconds as "0.4 s", "12 s", "3 min 5 s". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 120) return `${Math.round(seconds)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

/** Seconds between two ISO times (end: now when missing). */
export function secondsBetween(start, end) {
  if (!start) return null;
  const t0 = new Date(start.endsWith("Z") || start.includes("+") ? start : start + "Z");
  const t1 = end ? new Date(end.endsWith("Z") || end.includes("+") ? end : end + "Z") : new Date();
  return Math.max(0, (t1 - t0) / 1000);
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** A message box: kind "error" (role alert) or "info". */
export function notice(kind, ...content) {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, ...content);
}

/** Copy text to the clipboard, with a fallback for non-secure contexts. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h("textarea", { "aria-hidden": "true" }, text);
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}
