// The runs page: live list of runs (paginated), filters, and submitting an observation.

import { can, cannotReason, getJSON, request } from "./api.js";
import { TERMINAL, badge, fill, fmtDuration, fmtTime, h, notice, secondsBetween } from "./dom.js";
import { EventFeed } from "./live.js";

const PAGE = 50;
const PROGRAMMES = ["ToO", "CP", "GP"];
const STATES = ["pending", "running", "succeeded", "failed", "cancelled"];

/** Read keywords of a FITS primary header (80-character cards) from the file's first blocks. */
export async function fitsKeywords(file, names) {
  const text = await file.slice(0, 2880 * 10).text();
  const found = {};
  for (let at = 0; at + 80 <= text.length; at += 80) {
    const card = text.slice(at, at + 80);
    const key = card.slice(0, 8).trim();
    if (key === "END") break;
    if (names.includes(key) && card[8] === "=") {
      const value = card.slice(10).split("/")[0].trim();
      found[key] = value.replace(/^'(.*)'$/, "$1").trim();
    }
  }
  return found;
}

function runRow(run) {
  const seconds = secondsBetween(run.started_at, run.finished_at);
  return h("tr", { "data-run": run.run_id, "data-obs": run.obs_id || "" },
    h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.run_id)}` }, run.run_id)),
    h("td", {}, run.obs_id || ""),
    h("td", {}, run.programme),
    h("td", { class: "state" }, badge(run.state)),
    h("td", {}, fmtTime(run.created_at)),
    h("td", { class: "num duration" }, run.finished_at ? fmtDuration(seconds) : ""),
    h("td", { class: "reason" }, run.reason || ""));
}

function filterForm(filters, onChange) {
  const select = (name, label, options) => h("label", {}, label,
    h("select", { name, onchange: (e) => onChange({ ...filters, [name]: e.target.value }) },
      h("option", { value: "" }, "all"),
      options.map((o) => h("option", { value: o, selected: filters[name] === o }, o))));
  return h("form", { class: "filters", role: "search", onsubmit: (e) => {
      e.preventDefault();
      onChange({ ...filters, obs_id: e.target.elements.obs_id.value.trim() });
    } },
    select("programme", "Programme ", PROGRAMMES),
    select("state", "State ", STATES),
    h("label", {}, "Observation ", h("input", { name: "obs_id", value: filters.obs_id || "", size: 14 })),
    h("button", { type: "submit", class: "secondary" }, "Filter"));
}

function submitPanel(onUploaded) {
  const status = h("div", { id: "submit-status", "aria-live": "polite" });
  const info = h("p", { class: "muted", id: "submit-info" }, "Choose an L0 FITS file: its PROGRAM header picks the programme.");
  const file = h("input", { type: "file", id: "submit-file", name: "file", accept: ".fits,.fit,.fits.gz", required: true });
  // offered to the roles that may submit (operator, admin); the gateway decides anyway
  const button = h("button", { type: "submit", id: "submit-button", disabled: !can("submit"), "aria-describedby": "submit-login-hint" }, "Submit observation");
  const hint = h("span", { class: "muted", id: "submit-login-hint" }, cannotReason("submit", "submit"));
  document.addEventListener("mxt-auth", () => {
    button.disabled = !can("submit");
    hint.textContent = cannotReason("submit", "submit");
  });
  let keywords = {};
  file.addEventListener("change", async () => {
    keywords = file.files[0] ? await fitsKeywords(file.files[0], ["OBS_ID", "PROGRAM", "OBJECT"]) : {};
    fill(info, keywords.OBS_ID
      ? `Observation ${keywords.OBS_ID}${keywords.OBJECT ? ` (${keywords.OBJECT})` : ""}, programme header ${keywords.PROGRAM || "missing"}.`
      : "No OBS_ID in the primary header: is this an MXT L0 file?");
  });
  const form = h("form", { class: "panel submit", "aria-labelledby": "submit-title", onsubmit: async (event) => {
      event.preventDefault();
      const chosen = file.files[0];
      if (!chosen) return;
      if (!keywords.OBS_ID) { fill(status, notice("error", "The file has no OBS_ID keyword: not submitted.")); return; }
      const key = `${keywords.OBS_ID}/${chosen.name}`;
      button.disabled = true;
      fill(status, notice("info", `Uploading ${chosen.name}…`));
      try {
        await request("POST", `/function/objects-upload?key=${encodeURIComponent(key)}`, {
          body: chosen, auth: true, headers: { "Content-Type": "application/fits" } });
        fill(status, notice("info", `Stored raw/${key}. Its run appears below as soon as it starts.`));
        onUploaded(keywords.OBS_ID);
      } catch (error) {
        fill(status, notice("error", `Not submitted: ${error.message}`));
      } finally {
        button.disabled = !can("submit");
      }
    } },
    h("h2", { id: "submit-title" }, "Submit an observation"),
    h("label", { for: "submit-file" }, "L0 file"), file, info,
    h("div", { class: "buttons" }, button, hint), status);
  return form;
}

/** Render the runs page into main; returns a cleanup function. */
export async function runsPage(main, query) {
  const filters = { programme: query.get("programme") || "", state: query.get("state") || "", obs_id: query.get("obs_id") || "" };
  const setFilters = (next) => {
    const params = new URLSearchParams(Object.entries(next).filter(([, v]) => v));
    location.hash = `#/runs${params.toString() ? "?" + params : ""}`;
  };
  const body = h("tbody", { id: "runs-body" });
  const more = h("button", { type: "button", class: "secondary", id: "runs-more", hidden: true }, "Load more");
  const message = h("div", { "aria-live": "polite" });
  let awaitedObs = null;
  const table = h("table", { class: "runs", "aria-describedby": "runs-title" },
    h("thead", {}, h("tr", {}, ["Run", "Observation", "Programme", "State", "Created (UTC)", "Duration", "Reason"].map((t) => h("th", { scope: "col" }, t)))),
    body);
  fill(main,
    h("div", { class: "columns" },
      h("aside", {}, submitPanel((obs) => { awaitedObs = obs; })),
      h("section", { class: "wide" },
        h("h1", { id: "runs-title" }, "Runs"),
        filterForm(filters, setFilters), message,
        // focusable so keyboard users can scroll it sideways when it is wider than its column
        h("div", { class: "table-scroll", tabindex: 0, role: "region", "aria-labelledby": "runs-title" }, table),
        more)));

  const rows = new Map();
  let nextAfter = null;
  const matches = (run) => (!filters.programme || run.programme === filters.programme)
    && (!filters.state || run.state === filters.state) && (!filters.obs_id || run.obs_id === filters.obs_id);
  const loadPage = async () => {
    const params = new URLSearchParams({ limit: String(PAGE) });
    for (const [key, value] of Object.entries(filters)) if (value) params.set(key, value);
    if (nextAfter !== null) params.set("after", String(nextAfter));
    try {
      const page = await getJSON(`/mxt/runs?${params}`);
      for (const run of page.items) {
        if (rows.has(run.run_id)) continue;
        const row = runRow(run);
        rows.set(run.run_id, row);
        body.append(row);
      }
      nextAfter = page.next_after;
      more.hidden = nextAfter === null;
      if (!rows.size) fill(message, notice("info", "No runs yet: submit an observation."));
    } catch (error) {
      fill(message, notice("error", `Runs not loaded: ${error.message}`));
    }
  };
  more.addEventListener("click", loadPage);

  // Events from the hello's sequence on: nothing is missed between the page load and them.
  const feed = new EventFeed({ kind: "run", programme: filters.programme }, (frame) => {
    const event = frame.event;
    const run = { run_id: frame.run_id, programme: event.programme, state: event.state, reason: event.reason, obs_id: event.obs_id };
    const row = rows.get(run.run_id);
    if (row) {
      fill(row.querySelector("td.state"), badge(run.state));
      row.querySelector("td.reason").textContent = run.reason || "";
      if (TERMINAL.has(run.state)) {
        getJSON(`/mxt/runs/${encodeURIComponent(run.run_id)}`).then((full) => {
          row.querySelector("td.duration").textContent = fmtDuration(secondsBetween(full.started_at, full.finished_at));
        }).catch(() => {});
      }
      return;
    }
    if (!matches(run)) return;
    getJSON(`/mxt/runs/${encodeURIComponent(run.run_id)}`).then((full) => {
      if (rows.has(full.run_id)) return;
      const fresh = runRow(full);
      fresh.classList.add("fresh");
      rows.set(full.run_id, fresh);
      body.prepend(fresh);
      message.replaceChildren();
      if (awaitedObs && full.obs_id === awaitedObs) {
        fresh.classList.add("awaited");
        fresh.querySelector("a").focus();
        awaitedObs = null;
      }
    }).catch(() => {});
  });
  await loadPage();
  performance.mark("mxt-runs-loaded");
  return () => feed.close();
}
