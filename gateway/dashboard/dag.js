// The run's DAG as SVG: bricks in columns by dependency depth, edges from needs.

import { fmtDuration } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 128;
const NODE_H = 46;
const GAP_X = 36;
const GAP_Y = 14;

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

/** Depth of each brick: 0 for roots, else one more than its deepest need. */
export function depths(tasks) {
  const needs = new Map(tasks.map((t) => [t.brick, (t.needs || []).filter((n) => n !== t.brick)]));
  const depth = new Map();
  const visit = (brick, seen = new Set()) => {
    if (depth.has(brick)) return depth.get(brick);
    if (seen.has(brick)) return 0; // a cycle cannot come from configdb, but never loop
    seen.add(brick);
    const parents = (needs.get(brick) || []).filter((n) => needs.has(n));
    const d = parents.length ? 1 + Math.max(...parents.map((p) => visit(p, seen))) : 0;
    depth.set(brick, d);
    return d;
  };
  for (const task of tasks) visit(task.brick);
  return depth;
}

function label(task) {
  const parts = [task.state];
  if (task.seconds !== null && task.seconds !== undefined) parts.push(fmtDuration(task.seconds));
  if (task.attempts > 1) parts.push(`${task.attempts} tries`);
  return parts.join(" · ");
}

/** Build the SVG for the tasks of a run (each: brick, state, needs, seconds, attempts). */
export function renderDag(tasks) {
  const depth = depths(tasks);
  const columns = [];
  for (const task of tasks) {
    const d = depth.get(task.brick);
    (columns[d] ||= []).push(task);
  }
  const rows = Math.max(...columns.map((c) => c.length));
  const width = columns.length * (NODE_W + GAP_X) - GAP_X + 8;
  const height = rows * (NODE_H + GAP_Y) - GAP_Y + 8;
  const root = svg("svg", {
    // scales down to the box on narrow screens, never up beyond its natural size
    viewBox: `0 0 ${width} ${height}`, width: "100%", class: "dag", role: "group",
    "aria-label": "Processing graph: bricks and their states",
  });
  // through the CSSOM, not a style attribute: the page's CSP allows no inline styles
  root.style.maxWidth = `${width}px`;
  const position = new Map();
  columns.forEach((column, c) => {
    const offset = ((rows - column.length) * (NODE_H + GAP_Y)) / 2;
    column.forEach((task, r) => {
      position.set(task.brick, { x: 4 + c * (NODE_W + GAP_X), y: 4 + offset + r * (NODE_H + GAP_Y) });
    });
  });
  const edges = svg("g", { class: "edges" });
  for (const task of tasks) {
    const to = position.get(task.brick);
    for (const need of task.needs || []) {
      const from = position.get(need);
      if (!from) continue;
      const x1 = from.x + NODE_W, y1 = from.y + NODE_H / 2, x2 = to.x, y2 = to.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      edges.append(svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, "data-from": need, "data-to": task.brick }));
    }
  }
  root.append(edges);
  for (const task of tasks) {
    const { x, y } = position.get(task.brick);
    const node = svg("g", {
      class: `node state-${task.state}`, transform: `translate(${x},${y})`, tabindex: 0,
      "data-brick": task.brick, role: "img", "aria-label": `${task.brick}: ${label(task)}`,
    });
    const title = svg("title");
    title.textContent = task.error ? `${task.brick}: ${task.error}` : task.brick;
    node.append(title, svg("rect", { width: NODE_W, height: NODE_H, rx: 7 }));
    const name = svg("text", { x: 10, y: 19, class: "name" });
    name.textContent = task.brick;
    const state = svg("text", { x: 10, y: 36, class: "detail" });
    state.textContent = label(task);
    node.append(name, state);
    root.append(node);
  }
  return root;
}

/** Update one node in place from a task event or task record. */
export function updateDagNode(root, task) {
  const node = root.querySelector(`g.node[data-brick="${CSS.escape(task.brick)}"]`);
  if (!node) return;
  node.setAttribute("class", `node state-${task.state}`);
  node.setAttribute("aria-label", `${task.brick}: ${label(task)}`);
  node.querySelector("text.detail").textContent = label(task);
  if (task.error) node.querySelector("title").textContent = `${task.brick}: ${task.error}`;
}
