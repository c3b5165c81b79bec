// Conveyor's web UI: a hash-routed single page over the REST API (docs/server-api.md).
//   #/pipelines  #/pipelines/NAME  #/runs  #/runs/ID  #/services  #/schedules

import { h, replace } from "./dom.js";
import { get, info, getToken, setToken, banner, clearBanner } from "./api.js";
import { pipelinesView } from "./views/pipelines.js";
import { pipelinePageView } from "./views/pipeline.js";
import { runsView, runView } from "./views/runs.js";
import { servicesView } from "./views/services.js";
import { schedulesView } from "./views/schedules.js";

const routes = [
  [/^\/pipelines\/?$/, pipelinesView, "pipelines"],
  [/^\/pipelines\/(.+)$/, pipelinePageView, "pipelines"],
  [/^\/runs\/?$/, runsView, "runs"],
  [/^\/runs\/(.+)$/, runView, "runs"],
  [/^\/services\/?$/, servicesView, "services"],
  [/^\/schedules\/?$/, schedulesView, "schedules"],
];

let cleanup = null;
let generation = 0;

/** The hash's path and its query (#/runs?pipeline=x). */
export function currentRoute() {
  const raw = location.hash.replace(/^#/, "") || "/pipelines";
  const [path, query = ""] = raw.split("?");
  return { path, query: new URLSearchParams(query) };
}

async function render() {
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.warn("cleanup failed", err);
    }
    cleanup = null;
  }
  generation += 1;
  const mine = generation;
  const { path, query } = currentRoute();
  const root = document.getElementById("view");
  const found = routes.find(([pattern]) => pattern.test(path));
  document.querySelectorAll("[data-nav]").forEach((a) => {
    a.classList.toggle("active", !!found && a.dataset.nav === found[2]);
    if (found && a.dataset.nav === found[2]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (!found) {
    replace(root, h("section", { class: "card" }, h("h1", {}, "Not found"),
      h("p", {}, "No page at ", h("code", {}, path), ". ", h("a", { href: "#/pipelines" }, "Go to the pipelines."))));
    return;
  }
  const [pattern, view] = found;
  const params = path.match(pattern).slice(1).map(decodeURIComponent);
  replace(root, h("p", { class: "muted" }, "Loading…"));
  const ctx = {
    root,
    params,
    query,
    // a view's timers and streams stop when the page changes
    alive: () => mine === generation,
    onLeave: (fn) => { ctx.leaving.push(fn); },
    leaving: [],
  };
  cleanup = () => ctx.leaving.forEach((fn) => fn());
  try {
    await view(ctx);
  } catch (err) {
    if (mine !== generation) return;
    replace(root, h("section", { class: "card" }, h("h1", {}, "Could not load this page"),
      h("p", { class: "error-text" }, err.message || String(err)),
      h("p", {}, h("a", { href: location.hash }, "Try again"))));
  }
  if (mine === generation) window.scrollTo(0, 0);
}

function setupToken() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  input.value = getToken();
  form.hidden = !info.token_required;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    form.classList.remove("needed");
    banner(input.value.trim() ? "Token saved in this browser." : "Token cleared.", "info");
  });
  document.addEventListener("conveyor:need-token", () => {
    form.hidden = false;
    form.classList.add("needed");
    input.focus();
  });
}

async function start() {
  try {
    Object.assign(info, await get("/api/info"));
  } catch (err) {
    banner(`Cannot read /api/info: ${err.message}`);
  }
  setupToken();
  const footer = document.getElementById("footer");
  replace(footer, `Conveyor ${info.version || ""}`,
    info.capacity ? ` · machine ${info.capacity}` : "",
    info.storage_root ? ` · storage ${info.storage_root}` : "");
  window.addEventListener("hashchange", () => {
    clearBanner();
    render();
  });
  if (!location.hash) history.replaceState(null, "", "#/pipelines");
  render();
}

start();
