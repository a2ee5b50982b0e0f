// Browsing pages: observations, CALDB files, programme configurations.

import { caldbURL, can, cannotReason, getJSON } from "./api.js";
import { fill, fmtTime, h, notice } from "./dom.js";

function table(headers, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows));
}

/** A paged listing: fetch(after) → {rows, next}; a "Load more" button continues it. */
async function paged(container, headers, fetchPage) {
  const body = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const message = h("div", { "aria-live": "polite" });
  let next = null;
  const load = async () => {
    try {
      const page = await fetchPage(next);
      body.append(...page.rows);
      next = page.next;
      more.hidden = next === null || next === undefined;
      if (!body.childElementCount) fill(message, notice("info", "Nothing here yet."));
    } catch (error) {
      fill(message, notice("error", error.message));
    }
  };
  more.addEventListener("click", load);
  fill(container, message,
    h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))), body), more);
  await load();
}

export async function observationsPage(main) {
  const box = h("div");
  fill(main, h("h1", {}, "Observations"), box);
  await paged(box, ["Observation", "Object", "Programme", "RA (°)", "Dec (°)", "Start (UTC)", "Burst", "Runs"], async (after) => {
    const params = new URLSearchParams({ limit: "50", descending: "true" });
    if (after !== null) params.set("after", String(after));
    const page = await getJSON(`/mxt_missiondb/observations?${params}`);
    return {
      next: page.next_after,
      rows: page.items.map((o) => h("tr", {},
        h("th", { scope: "row" }, o.obs_id), h("td", {}, o.object_name || ""), h("td", {}, o.programme || ""),
        h("td", { class: "num" }, o.ra?.toFixed(4) ?? ""), h("td", { class: "num" }, o.dec?.toFixed(4) ?? ""),
        h("td", {}, fmtTime(o.tstart)), h("td", {}, o.burst_id || ""),
        h("td", {}, h("a", { href: `#/runs?obs_id=${encodeURIComponent(o.obs_id)}` }, "runs")))),
    };
  });
}

export async function caldbPage(main) {
  const box = h("div");
  fill(main, h("h1", {}, "CALDB"), h("p", { class: "muted" }, "Calibration files indexed in caldb; quality 0 is good."), box);
  await paged(box, ["Codename", "Instrument", "Valid from (UTC)", "Description", "Version", "Quality", "File"], async (after) => {
    const params = new URLSearchParams({ limit: "100" });
    if (after !== null) params.set("after", String(after));
    const page = await getJSON(`/caldb/files?${params}`);
    return {
      next: page.next_after,
      rows: page.datasets.map((d) => h("tr", { class: d.quality === 0 ? "" : "bad" },
        h("th", { scope: "row" }, d.codename), h("td", {}, d.instrument), h("td", {}, fmtTime(d.valid_from)),
        h("td", {}, d.description), h("td", {}, d.caldb_version), h("td", { class: "num" }, String(d.quality)),
        h("td", {}, h("a", { href: caldbURL(d.key), download: d.key.split("/").pop() }, `${d.key.split("/").pop()}[${d.extension}]`)))),
    };
  });
}

export async function configsPage(main) {
  fill(main, h("h1", {}, "Programmes"), h("p", { class: "muted" }, "Loading configurations…"));
  let listing;
  try {
    listing = await getJSON("/mxt_configdb/programmes");
  } catch (error) {
    fill(main, h("h1", {}, "Programmes"), notice("error", error.message));
    return;
  }
  if (!listing.configs.length) {
    fill(main, h("h1", {}, "Programmes"), notice("info", "No configuration yet: the orchestrator seeds them at its first run."));
    return;
  }
  const byProgramme = new Map();
  for (const config of listing.configs) (byProgramme.get(config.programme) || byProgramme.set(config.programme, []).get(config.programme)).push(config);
  fill(main, h("h1", {}, "Programmes"),
    [...byProgramme.entries()].map(([programme, configs]) => h("section", { class: "panel" },
      h("h2", {}, programme),
      table(["Version", "Active", "Created (UTC)", "Comment", "Bricks", "Parameters"],
        configs.map((c) => h("tr", {},
          h("th", { scope: "row" }, String(c.version)), h("td", {}, c.active ? "active" : ""),
          h("td", {}, fmtTime(c.created_at)), h("td", {}, c.comment || ""),
          h("td", {}, c.dag.map((node) => node.brick).join(" → ")),
          h("td", {}, h("details", {}, h("summary", {}, "show"), h("pre", {}, JSON.stringify({ dag: c.dag, parameters: c.parameters }, null, 2))))))))));
}

const FUNCTIONS_REFRESH_MS = 3000;

function functionRow(f) {
  const annotations = f.annotations || {};
  const entry = [annotations["com.mxt.routes"], annotations.topic && `topic ${annotations.topic}`].filter(Boolean).join("; ");
  const ready = f.availableReplicas >= f.replicas;
  return h("tr", { "data-function": f.name },
    h("th", { scope: "row" }, f.name),
    h("td", { class: "num" }, `${f.availableReplicas} / ${f.replicas}`),
    h("td", {}, h("span", { class: `badge state-${ready ? "succeeded" : "running"}` }, ready ? "ready" : "starting")),
    h("td", { class: "num" }, String(f.invocationCount)),
    h("td", {}, fmtTime(f.createdAt)),
    h("td", {}, h("code", {}, entry || `/function/${f.name}`)));
}

/** The deployed functions (the OpenFaaS /system/functions list), refreshed while shown. */
export async function functionsPage(main) {
  const body = h("tbody", { id: "functions-body" });
  const message = h("div", { "aria-live": "polite" });
  fill(main, h("h1", {}, "Functions"),
    h("p", { class: "muted" }, "Deployed functions as the gateway sees them; a function deployed now appears here within seconds."),
    message, table(["Function", "Replicas", "State", "Invocations", "Deployed (UTC)", "Reached by"], []));
  main.querySelector("table tbody").replaceWith(body);
  const refresh = async () => {
    if (!can("functions")) { fill(message, notice("info", cannotReason("functions", "see the functions (the /system API)"))); fill(body); return; }
    try {
      const functions = await getJSON("/system/functions");
      functions.sort((a, b) => a.name.localeCompare(b.name));
      fill(body, functions.map(functionRow));
      fill(message);
    } catch (error) {
      fill(message, notice("error", error.message));
    }
  };
  await refresh();
  const timer = setInterval(refresh, FUNCTIONS_REFRESH_MS);
  document.addEventListener("mxt-auth", refresh);
  return () => { clearInterval(timer); document.removeEventListener("mxt-auth", refresh); };
}
