// The dashboard's entry point: hash routes, login dialog, page lifecycle.

import { loggedIn, login, logout, refreshLogin, whoami } from "./api.js";
import { caldbPage, configsPage, functionsPage, observationsPage } from "./browse.js";
import { fill, h, notice } from "./dom.js";
import { runPage } from "./run.js";
import { runsPage } from "./runs.js";

const main = document.getElementById("main");
let cleanup = () => {};

async function route() {
  cleanup();
  cleanup = () => {};
  const [path, queryString] = (location.hash.slice(1) || "/runs").split("?");
  const query = new URLSearchParams(queryString || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] || "runs";
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    if (section === "runs" && parts[1]) cleanup = await runPage(main, parts[1]);
    else if (section === "runs") cleanup = await runsPage(main, query);
    else if (section === "observations") await observationsPage(main);
    else if (section === "caldb") await caldbPage(main);
    else if (section === "configs") await configsPage(main);
    else if (section === "functions") cleanup = await functionsPage(main);
    else fill(main, h("h1", {}, "Not found"), notice("error", `No page ${location.hash}.`));
  } catch (error) {
    fill(main, notice("error", `This page failed: ${error.message}`));
  }
  document.title = `${main.querySelector("h1")?.textContent || "MXT"} · MXT pipeline`;
}

function setupLogin() {
  const button = document.getElementById("login-button");
  const dialog = document.getElementById("login-dialog");
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  const who = document.getElementById("whoami");
  const refresh = () => {
    button.textContent = loggedIn() ? "Log out" : "Log in";
    const current = whoami();
    who.hidden = !current;
    who.textContent = current ? `${current.user} (${current.role})` : "";
    who.title = current ? `Logged in as ${current.user}, role ${current.role}` : "";
    if (current) who.dataset.role = current.role;
    else delete who.dataset.role;
  };
  refresh();
  document.addEventListener("mxt-auth", refresh);
  refreshLogin(); // the kept login's role may have changed since (or it no longer works)
  button.addEventListener("click", () => {
    if (loggedIn()) { logout(); return; }
    error.hidden = true;
    dialog.showModal();
    document.getElementById("login-password").focus();
  });
  document.getElementById("login-cancel").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await login(form.elements.user.value, form.elements.password.value);
      form.elements.password.value = "";
      dialog.close();
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
    }
  });
}

setupLogin();
window.addEventListener("hashchange", route);
route();
