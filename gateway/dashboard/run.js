// The run page: state, position, DAG, quick-looks, products, live logs, actions.

import { apiFetch, can, cannotReason, caldbURL, getJSON, objectURL, request } from "./api.js";
import { renderDag, updateDagNode } from "./dag.js";
import { TERMINAL, badge, copyText, fill, fmtBytes, fmtDuration, fmtTime, h, notice, secondsBetween } from "./dom.js";
import { EventFeed } from "./live.js";

const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
const MAX_LOG_LINES = 2000;
const QUICKLOOKS = [
  ["ql_image", "Sky image with the source and its 90% error circle"],
  ["ql_lightcurve", "Light curve with the power-law decay fit"],
  ["ql_spectrum", "Spectrum with the absorbed power-law model"],
];

/** Sexagesimal RA (hours) and Dec (degrees) of decimal degrees. */
export function sexagesimal(ra, dec) {
  const part = (value, digits) => {
    const sign = value < 0 ? "-" : "";
    let v = Math.abs(value);
    const a = Math.floor(v); v = (v - a) * 60;
    const b = Math.floor(v); const c = ((v - b) * 60).toFixed(digits);
    return [sign, a, b, c];
  };
  const [, rh, rm, rs] = part(ra / 15, 2);
  const [ds, dd, dm, dsec] = part(dec, 1);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(rh)}h${two(rm)}m${rs.padStart(5, "0")}s ${ds || "+"}${two(dd)}°${two(dm)}′${dsec.padStart(4, "0")}″`;
}

const brickOf = (taskId) => (taskId || "").split(".").pop();

function positionPanel(panel, position, run) {
  if (!position) {
    fill(panel, h("h2", {}, "Position"), h("p", { class: "muted" },
      TERMINAL.has(run.state) ? "No position product in this run." : "The position appears here when the detect step finishes."));
    return;
  }
  if (position.ra === null || position.ra === undefined) {
    fill(panel, h("h2", {}, "Position"), notice("error", `No detection: ${position.reason || position.status}`));
    return;
  }
  const radius = position.err90_arcsec;
  fill(panel,
    h("h2", {}, "Position"),
    h("p", { class: "position", id: "position-text" },
      h("span", { class: "coord" }, `RA ${position.ra.toFixed(4)}°  Dec ${position.dec >= 0 ? "+" : ""}${position.dec.toFixed(4)}°`),
      h("span", { class: "radius", id: "position-radius" }, ` ± ${radius.toFixed(1)}″ (90%)`)),
    h("p", { class: "muted" }, `${sexagesimal(position.ra, position.dec)} (J2000) · statistical ${position.err90_stat_arcsec?.toFixed(1)}″, systematic ${position.err90_sys_arcsec?.toFixed(1)}″ · ${Math.round(position.counts)} counts, S/N ${position.snr?.toFixed(1)}`),
    h("div", { class: "buttons", id: "notice-buttons" }));
}

function noticeButtons(container, products) {
  const buttons = [];
  for (const [name, label] of [["notice_json", "Copy notice (JSON)"], ["notice_voevent", "Copy notice (VOEvent)"]]) {
    const product = products.get(name);
    if (!product) continue;
    const status = h("span", { class: "muted", "aria-live": "polite" });
    buttons.push(h("button", { type: "button", class: "secondary", "data-notice": name, onclick: async () => {
        const text = await apiFetch(objectURL(product.bucket, product.key)).then((r) => r.text());
        status.textContent = (await copyText(text)) ? " copied" : " copy failed";
      } }, label), status);
    // "download" twice on one line: the accessible name says which notice
    buttons.push(h("a", { href: objectURL(product.bucket, product.key), download: product.key.split("/").pop(),
      "aria-label": `Download ${label.replace("Copy notice", "notice")}` }, "download"));
  }
  if (container) fill(container, buttons);
}

function taskRow(task) {
  return h("tr", { "data-brick": task.brick },
    h("th", { scope: "row" }, task.brick),
    h("td", { class: "state" }, badge(task.state)),
    h("td", { class: "num" }, String(task.attempts ?? "")),
    h("td", { class: "num duration" }, task.seconds !== null && task.seconds !== undefined ? fmtDuration(task.seconds) : ""),
    h("td", { class: "reason" }, task.error || ""));
}

function productRow(product) {
  const file = product.key.split("/").pop();
  return h("tr", { "data-product": product.name },
    h("th", { scope: "row" }, product.name, product.partial ? h("span", { class: "badge state-failed" }, "partial") : ""),
    h("td", {}, brickOf(product.task_id)),
    h("td", { class: "num" }, fmtBytes(product.size)),
    h("td", {}, h("code", { title: product.sha256 }, (product.sha256 || "").slice(0, 12))),
    h("td", {}, h("a", { href: objectURL(product.bucket, product.key), download: file }, file)));
}

function logLine(line) {
  return h("li", { class: `log level-${line.level}`, "data-level": line.level, "data-task": line.task },
    h("time", {}, fmtTime(line.time)), " ",
    h("span", { class: "level" }, line.level), " ",
    h("span", { class: "task" }, line.task || line.function || ""), " ",
    h("span", { class: "message" }, line.message));
}

/** Render a run's page; returns a cleanup function. */
export async function runPage(main, runId) {
  const path = `/mxt/runs/${encodeURIComponent(runId)}`;
  let run;
  const feedEvents = [];
  let handle = (frame) => feedEvents.push(frame); // until the page is built
  const feed = new EventFeed({ run: runId }, (frame) => handle(frame));
  try {
    // the hello first: every event after its sequence reaches us, so none falls between
    await Promise.race([feed.ready, new Promise((r) => setTimeout(r, 1500))]);
    run = await getJSON(path);
  } catch (error) {
    feed.close();
    fill(main, h("h1", {}, `Run ${runId}`), notice("error", error.status === 404 ? `No run ${runId}.` : `Run not loaded: ${error.message}`));
    return () => {};
  }
  const [productPage, logPage] = await Promise.all([
    getJSON(`${path}/products`).catch(() => ({ items: [] })),
    getJSON(`${path}/logs?limit=1000`).catch(() => ({ items: [] })),
  ]);

  const stateBox = h("span", { id: "run-state" }, badge(run.state));
  const durationBox = h("dd", { id: "run-duration" }, run.finished_at ? fmtDuration(secondsBetween(run.started_at, run.finished_at)) : "running");
  const reason = h("div", { id: "run-reason" });
  const actions = h("div", { class: "buttons", id: "run-actions" });
  const actionStatus = h("div", { "aria-live": "polite" });
  const positionBox = h("section", { class: "panel position-panel", id: "position", "aria-live": "polite" });
  const dagBox = h("div", { class: "dag-box" });
  const taskBody = h("tbody");
  const quicklooks = h("div", { class: "quicklooks", id: "quicklooks" });
  const productBody = h("tbody", { id: "products-body" });
  // focusable: keyboard users scroll the log box with the arrow keys
  const logList = h("ol", { class: "logs", id: "log-lines", "aria-live": "off", tabindex: 0, "aria-label": "Log lines" });
  const levelSelect = h("select", { id: "log-level" }, LEVELS.map((l) => h("option", { value: l, selected: l === "INFO" }, l)));
  const taskSelect = h("select", { id: "log-task" }, h("option", { value: "" }, "all tasks"),
    run.tasks.map((t) => h("option", { value: t.brick }, t.brick)));
  const followBox = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const caldbList = h("ul", { class: "plain" }, Object.entries(run.caldb_files || {}).map(([codename, file]) =>
    h("li", {}, h("strong", {}, codename), " ", h("a", { href: caldbURL(file.ref.split("/").slice(1).join("/")) }, file.ref.split("/").pop()))));

  const showReason = (current) => {
    const text = current.reason || (current.state === "failed" ? "failed without a reason" : "");
    fill(reason, current.state === "failed" || current.state === "cancelled"
      ? notice("error", h("strong", {}, current.state === "failed" ? "Failed: " : "Cancelled: "), text)
      : null);
  };
  const showActions = (current) => {
    const ended = TERMINAL.has(current.state);
    const act = async (action) => {
      try {
        const result = await request("POST", `${path}/${action}`, { json: {}, auth: true });
        if (action === "rerun") location.hash = `#/runs/${encodeURIComponent(result.run_id)}`;
        else fill(actionStatus, notice("info", "Cancel requested."));
      } catch (error) {
        fill(actionStatus, notice("error", `${action} refused: ${error.message}`));
      }
    };
    // offered to the roles that may act (operator, admin); the gateway decides anyway
    const action = ended ? "rerun" : "cancel";
    const why = cannotReason(action, ended ? "re-run" : "cancel");
    fill(actions,
      ended ? null : h("button", { type: "button", class: "danger", id: "cancel-button", disabled: !can("cancel"), "aria-describedby": why ? "actions-hint" : null, onclick: () => act("cancel") }, "Cancel run"),
      ended ? h("button", { type: "button", id: "rerun-button", disabled: !can("rerun"), "aria-describedby": why ? "actions-hint" : null, onclick: () => act("rerun") }, "Re-run") : null,
      why ? h("span", { class: "muted", id: "actions-hint" }, why) : null);
  };
  const onAuth = () => showActions(run);
  document.addEventListener("mxt-auth", onAuth);

  fill(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / ", run.run_id),
    h("div", { class: "run-head" },
      h("h1", {}, `Run ${run.run_id} `, stateBox),
      actions),
    reason, actionStatus,
    h("dl", { class: "meta" },
      h("dt", {}, "Observation"), h("dd", {}, run.obs_id || "—"),
      h("dt", {}, "Programme"), h("dd", {}, run.programme),
      h("dt", {}, "Configuration"), h("dd", {}, run.config_version ? `version ${run.config_version}` : "active"),
      h("dt", {}, "Created"), h("dd", {}, fmtTime(run.created_at)),
      h("dt", {}, "Duration"), durationBox,
      run.parent_run_id ? [h("dt", {}, "Re-run of"), h("dd", {}, h("a", { href: `#/runs/${run.parent_run_id}` }, run.parent_run_id))] : null),
    positionBox,
    h("section", { "aria-labelledby": "dag-title" }, h("h2", { id: "dag-title" }, "Processing"), dagBox,
      h("details", {}, h("summary", {}, "Tasks table"),
        h("table", {}, h("thead", {}, h("tr", {}, ["Brick", "State", "Attempts", "Duration", "Error"].map((t) => h("th", { scope: "col" }, t)))), taskBody))),
    h("section", { "aria-labelledby": "ql-title" }, h("h2", { id: "ql-title" }, "Quick looks"), quicklooks),
    h("section", { "aria-labelledby": "products-title" }, h("h2", { id: "products-title" }, "Products"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Product", "Task", "Size", "SHA-256", "Download"].map((t) => h("th", { scope: "col" }, t)))), productBody)),
    h("section", { "aria-labelledby": "logs-title" }, h("h2", { id: "logs-title" }, "Logs"),
      h("div", { class: "filters" },
        h("label", { for: "log-level" }, "Level at least "), levelSelect,
        h("label", { for: "log-task" }, " Task "), taskSelect,
        h("label", {}, followBox, " follow")),
      logList),
    h("section", { "aria-labelledby": "caldb-title" }, h("h2", { id: "caldb-title" }, "CALDB files used"), caldbList));

  // ---- tasks and DAG
  const tasks = new Map(run.tasks.map((t) => [t.brick, t]));
  const dag = renderDag(run.tasks);
  fill(dagBox, dag);
  const renderTasks = () => fill(taskBody, [...tasks.values()].map(taskRow));
  renderTasks();
  const applyTask = (event) => {
    const task = tasks.get(event.task);
    if (!task) return;
    task.state = event.state;
    task.attempts = event.attempt ?? task.attempts;
    if (event.duration !== null && event.duration !== undefined) task.seconds = event.duration;
    if (event.reason) task.error = event.reason;
    updateDagNode(dag, task);
    const row = taskBody.querySelector(`tr[data-brick="${CSS.escape(task.brick)}"]`);
    if (row) row.replaceWith(taskRow(task));
  };

  // ---- products, quick-looks, position, notices
  const products = new Map();
  const renderQuicklooks = () => fill(quicklooks, QUICKLOOKS.map(([name, caption]) => {
    const product = products.get(name);
    return h("figure", { "data-quicklook": name },
      product ? h("a", { href: objectURL(product.bucket, product.key), target: "_blank", rel: "noopener" },
        h("img", { src: objectURL(product.bucket, product.key), alt: caption, loading: "lazy", id: `img-${name}` }))
        : h("div", { class: "placeholder" }, TERMINAL.has(run.state) ? "not produced" : "pending"),
      h("figcaption", {}, caption));
  }));
  const loadPosition = async () => {
    const product = products.get("position");
    let position = null;
    if (product) position = await apiFetch(objectURL(product.bucket, product.key)).then((r) => r.json()).catch(() => null);
    positionPanel(positionBox, position, run);
    noticeButtons(positionBox.querySelector("#notice-buttons"), products);
  };
  const addProduct = (product) => {
    if (products.has(product.name)) return;
    products.set(product.name, product);
    productBody.append(productRow(product));
    if (product.name.startsWith("ql_")) renderQuicklooks();
    if (product.name === "position" || product.name.startsWith("notice_")) loadPosition();
  };
  productPage.items.forEach(addProduct);
  renderQuicklooks();
  await loadPosition();

  // ---- logs
  const seenLogs = new Set();
  const logKey = (line) => `${line.function}|${line.task}|${line.message}`;
  const visible = (line) => LEVELS.indexOf(line.level) >= LEVELS.indexOf(levelSelect.value)
    && (!taskSelect.value || line.task === taskSelect.value);
  const addLog = (line) => {
    const item = logLine(line);
    item.hidden = !visible(line);
    logList.append(item);
    while (logList.childElementCount > MAX_LOG_LINES) logList.firstElementChild.remove();
    // scroll the log pane only, never the page the operator is reading
    if (followBox.checked && !item.hidden) logList.scrollTop = logList.scrollHeight;
  };
  const refilter = () => {
    for (const item of logList.children) item.hidden = !visible({ level: item.dataset.level, task: item.dataset.task });
  };
  levelSelect.addEventListener("change", refilter);
  taskSelect.addEventListener("change", refilter);
  for (const record of logPage.items) {
    const line = { time: record.time, level: record.level, task: brickOf(record.task_id), function: record.function, message: record.message };
    seenLogs.add(logKey(line));
    addLog(line);
  }

  // ---- run state
  const applyRun = async (event) => {
    run.state = event.state;
    run.reason = event.reason;
    fill(stateBox, badge(run.state));
    showReason(run);
    showActions(run);
    if (TERMINAL.has(run.state)) {
      const full = await getJSON(path).catch(() => null);
      if (full) {
        Object.assign(run, full);
        durationBox.textContent = fmtDuration(secondsBetween(full.started_at, full.finished_at));
        full.tasks.forEach((t) => { tasks.set(t.brick, t); updateDagNode(dag, t); });
        renderTasks();
      }
      renderQuicklooks();
      if (!products.has("position")) loadPosition();
    }
  };
  showReason(run);
  showActions(run);

  handle = (frame) => {
    const event = frame.event;
    if (frame.kind === "task") applyTask(event);
    else if (frame.kind === "product") {
      // the event's key is a reference "bucket/key"
      const [bucket, ...rest] = event.key.split("/");
      addProduct({ name: event.product, task_id: `${run.run_id}.${event.task}`, bucket, key: rest.join("/"), sha256: event.sha256, size: event.size });
    } else if (frame.kind === "log") {
      const line = { time: event.line_time || event.time, level: String(event.level).toUpperCase(), task: brickOf(event.task), function: event.function, message: event.message };
      if (seenLogs.delete(logKey(line))) return; // already listed by the page load
      addLog(line);
    } else if (frame.kind === "run") applyRun(event);
  };
  // events that came while the page was loading, in order
  feedEvents.splice(0).forEach(handle);
  performance.mark("mxt-run-loaded");
  return () => { feed.close(); document.removeEventListener("mxt-auth", onAuth); };
}
