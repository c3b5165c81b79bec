// #/runs (list with filters, refreshed) and #/runs/ID (live DAG, task table, logs, artifacts).

import {
  h, replace, card, table, statusBadge, legend, fmtDuration, fmtBytes, fmtTime, fmtAgo,
  secondsBetween, RUN_STATUSES,
} from "../dom.js";
import { get, post, enc, attempt, banner, follow } from "../api.js";
import { drawDag } from "../dag.js";
import { taskDetail } from "./tasklog.js";

const REFRESH_MS = 3000;
const LIVE_RUN = new Set(["pending", "running"]);

// ---- the list --------------------------------------------------------------------------------

export async function runsView(ctx) {
  const pipelines = await get("/api/pipelines").catch(() => []);
  if (!ctx.alive()) return;
  const pipelineSelect = h("select", { name: "pipeline", "aria-label": "pipeline" },
    h("option", { value: "" }, "all pipelines"),
    pipelines.map((p) => h("option", { value: p.name }, p.name)));
  const statusSelect = h("select", { name: "status", "aria-label": "status" },
    h("option", { value: "" }, "any status"),
    RUN_STATUSES.map((st) => h("option", { value: st }, st)));
  const wanted = ctx.query.get("pipeline") || "";
  if (wanted && !pipelines.some((p) => p.name === wanted)) {
    pipelineSelect.append(h("option", { value: wanted }, wanted));
  }
  pipelineSelect.value = wanted;
  statusSelect.value = ctx.query.get("status") || "";
  const auto = h("input", { type: "checkbox", checked: true });
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const updated = h("span", { class: "muted small" });

  let timer = null;
  const load = async () => {
    clearTimeout(timer);
    const params = new URLSearchParams({ limit: "50" });
    if (pipelineSelect.value) params.set("pipeline", pipelineSelect.value);
    if (statusSelect.value) params.set("status", statusSelect.value);
    try {
      const runs = await get(`/api/runs?${params}`);
      if (!ctx.alive()) return;
      replace(list, table(["Run", "Pipeline", "Status", "Created", "Duration", "Message"],
        runs.map((r) => ({ attrs: { "data-run": r.id }, cells: [
          h("a", { href: `#/runs/${enc(r.id)}`, class: "mono" }, r.id),
          h("a", { href: `#/pipelines/${enc(r.pipeline)}` }, r.pipeline),
          statusBadge(r.status),
          h("span", { title: fmtTime(r.created_at), class: "nowrap" }, fmtAgo(r.created_at)),
          fmtDuration(r.duration ?? (LIVE_RUN.has(r.status) ? secondsBetween(r.started_at) : null)),
          h("span", { class: "clamp" }, r.message || ""),
        ] })), "No runs match."));
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (ctx.alive()) replace(list, h("p", { class: "error-text" }, err.message));
    }
    if (ctx.alive() && auto.checked) timer = setTimeout(load, REFRESH_MS);
  };
  ctx.onLeave(() => clearTimeout(timer));
  const changed = () => {
    const params = new URLSearchParams();
    if (pipelineSelect.value) params.set("pipeline", pipelineSelect.value);
    if (statusSelect.value) params.set("status", statusSelect.value);
    const query = params.toString();
    history.replaceState(null, "", `#/runs${query ? `?${query}` : ""}`);
    load();
  };
  pipelineSelect.addEventListener("change", changed);
  statusSelect.addEventListener("change", changed);
  auto.addEventListener("change", () => (auto.checked ? load() : clearTimeout(timer)));

  replace(ctx.root,
    h("div", { class: "page-head" }, h("h1", {}, "Runs")),
    card("Runs",
      [h("label", { class: "check small" }, auto, "auto-refresh"), updated],
      h("div", { class: "row wrap filters" },
        h("label", { class: "inline" }, "Pipeline", pipelineSelect),
        h("label", { class: "inline" }, "Status", statusSelect)),
      list));
  await load();
}

// ---- one run ---------------------------------------------------------------------------------

function gpuText(resources) {
  if (!resources) return "–";
  const gpus = resources.gpus || [];
  if (!gpus.length) return resources.gpu_shares ? `${resources.gpu_shares} share` : "–";
  return gpus.map((g) => `#${g.index} × ${g.share}`).join(", ");
}

function taskDuration(task) {
  if (task.duration != null) return task.duration;
  return task.status === "running" ? secondsBetween(task.started_at) : null;
}

export async function runView(ctx) {
  const id = ctx.params[0];
  let run = await get(`/api/runs/${enc(id)}`);
  if (!ctx.alive()) return;
  let selected = ctx.query.get("task") || null;
  let stream = null;
  let log = null;
  const timers = new Set();
  const later = (fn, ms) => {
    const t = setTimeout(() => { timers.delete(t); if (ctx.alive()) fn(); }, ms);
    timers.add(t);
  };
  ctx.onLeave(() => {
    if (stream) stream.close();
    if (log) log.stop();
    timers.forEach(clearTimeout);
  });

  // header
  const statusBox = h("span", { id: "run-status" });
  const facts = h("dl", { class: "fact-row" });
  const message = h("p", { class: "run-message" });
  const cancel = h("button", { type: "button", class: "danger", "data-action": "cancel",
    onclick: () => attempt(async () => { update(await post(`/api/runs/${enc(id)}/cancel`)); watch(); },
      { button: cancel }) }, "Cancel");
  const resume = h("button", { type: "button", class: "primary", "data-action": "resume",
    onclick: () => attempt(async () => {
      const before = run;
      update(await post(`/api/runs/${enc(id)}/resume`));
      banner("Resumed: the tasks that did not succeed run again.", "info");
      awaitResume(before, Date.now() + 30000);
    }, { button: resume }) }, "Resume");

  // the run's engine starts in a moment: look until the run has moved, then follow it live
  const marks = (r) => `${r.status}|${r.finished_at}|${r.tasks.map((t) => `${t.status}:${t.attempts}`).join(",")}`;
  async function awaitResume(before, deadline) {
    if (LIVE_RUN.has(run.status)) { watch(); return; }
    if (marks(run) !== marks(before) || Date.now() > deadline) return;
    later(async () => {
      try {
        update(await get(`/api/runs/${enc(id)}`));
      } catch (err) {
        banner(err.message);
        return;
      }
      awaitResume(before, deadline);
    }, 400);
  }

  // DAG, table, task detail
  const dagBox = h("div", { class: "dag-box-wrap", id: "run-dag" });
  const tableBox = h("div", {});
  const detail = h("div", { id: "task-detail" });
  let dag = drawDag(dagBox, run.tasks.map((t) => ({ name: t.name, status: t.status })), run.dependencies || {},
    { onSelect: (name) => select(name), selected });

  function fact(label, value) {
    return h("div", { class: "fact" }, h("dt", {}, label), h("dd", {}, value));
  }

  function update(next) {
    const before = run;
    run = next;
    replace(statusBox, statusBadge(run.status));
    statusBox.dataset.status = run.status;
    const duration = run.duration ?? (LIVE_RUN.has(run.status) ? secondsBetween(run.started_at) : null);
    replace(facts,
      fact("Pipeline", h("a", { href: `#/pipelines/${enc(run.pipeline)}` }, run.pipeline)),
      fact("Created", fmtTime(run.created_at)),
      fact("Started", fmtTime(run.started_at)),
      fact("Finished", run.finished_at ? fmtTime(run.finished_at) : "–"),
      fact("Duration", h("span", { id: "run-duration" }, fmtDuration(duration))));
    message.textContent = run.message || "";
    cancel.hidden = !LIVE_RUN.has(run.status);
    resume.hidden = LIVE_RUN.has(run.status) || run.status === "succeeded";
    const names = run.tasks.map((t) => t.name).join("\n");
    if (!before || before.tasks.map((t) => t.name).join("\n") !== names) {
      dag = drawDag(dagBox, run.tasks.map((t) => ({ name: t.name, status: t.status })), run.dependencies || {},
        { onSelect: (name) => select(name), selected });
    } else {
      dag.update(run.tasks.map((t) => ({ name: t.name, status: t.status })));
    }
    renderTable();
    if (selected && log) log.taskChanged(run.tasks.find((t) => t.name === selected));
  }

  function renderTable() {
    replace(tableBox, table(
      ["Task", "Status", "Attempts", "Duration", "CPU", "Memory", "GPU", "CPU time", "Peak memory", "Exit", "Message"],
      run.tasks.map((t) => {
        const r = t.resources || {};
        const u = t.usage || {};
        return {
          attrs: { "data-task": t.name, class: `clickable${t.name === selected ? " selected" : ""}`,
            tabindex: 0, onclick: () => select(t.name),
            onkeydown: (e) => { if (e.key === "Enter") select(t.name); } },
          cells: [h("strong", {}, t.name), statusBadge(t.status), String(t.attempts ?? 0),
            fmtDuration(taskDuration(t)), r.cpu != null ? String(r.cpu) : "–", r.mem != null && String(r.mem) !== "0" ? fmtBytes(r.mem) : "–",
            gpuText(t.resources), fmtDuration(u.cpu_seconds),
            fmtBytes(u.peak_memory), t.exit_code ?? "–", h("span", { class: "clamp" }, t.message || "")],
        };
      })));
  }

  function select(name) {
    selected = name;
    dag.select(name);
    renderTable();
    history.replaceState(null, "", `#/runs/${enc(id)}${name ? `?task=${enc(name)}` : ""}`);
    if (log) log.stop();
    log = name ? taskDetail(detail, id, run.tasks.find((t) => t.name === name), later) : null;
    if (!name) replace(detail);
  }

  // live updates: the `run` events until the run is over; a broken stream is reopened
  function watch() {
    if (stream && !stream.closed) return;
    if (!LIVE_RUN.has(run.status)) return;
    stream = follow(`/api/runs/${enc(id)}/events`, {
      run: (data) => {
        if (!ctx.alive()) return false;
        update(data);
        return LIVE_RUN.has(data.status) ? undefined : false;
      },
    }, {
      onError: () => later(async () => {
        try {
          update(await get(`/api/runs/${enc(id)}`));
        } catch (err) {
          console.warn(err);
        }
        watch();
      }, 1500),
    });
  }
  // the duration of a running run ticks
  const tick = () => {
    if (LIVE_RUN.has(run.status)) {
      const el = document.getElementById("run-duration");
      if (el) el.textContent = fmtDuration(secondsBetween(run.started_at));
    }
    later(tick, 1000);
  };

  replace(ctx.root,
    h("div", { class: "page-head" },
      h("div", {}, h("p", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " /"),
        h("h1", { class: "run-title" }, h("span", { class: "mono" }, `Run ${id}`), " ", statusBox)),
      h("div", { class: "actions" }, cancel, resume)),
    h("section", { class: "card run-head" }, facts, message),
    card("Tasks", h("div", { class: "dag-legend" }, legend()), dagBox, tableBox),
    detail);
  update(run);
  if (selected && run.tasks.some((t) => t.name === selected)) select(selected);
  else selected = null;
  watch();
  tick();
}
