// #/runs (list with filters, refreshed) and #/runs/ID (live DAG, task table, logs, artifacts).

import {
  h, replace, card, table, statusBadge, legend, fmtDuration, fmtBytes, fmtTime, fmtAgo,
  secondsBetween, RUN_STATUSES, FINISHED,
} from "../dom.js";
import { get, post, enc, attempt, banner, follow } from "../api.js";
import { drawDag } from "../dag.js";

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
  const facts = h("dl", { class: "facts" });
  const message = h("p", { class: "run-message" });
  const cancel = h("button", { type: "button", class: "danger", "data-action": "cancel",
    onclick: () => attempt(async () => { update(await post(`/api/runs/${enc(id)}/cancel`)); watch(); },
      { button: cancel }) }, "Cancel");
  const resume = h("button", { type: "button", class: "primary", "data-action": "resume",
    onclick: () => attempt(async () => {
      update(await post(`/api/runs/${enc(id)}/resume`));
      banner("Resumed: the tasks that did not succeed run again.", "info");
      watch();
    }, { button: resume }) }, "Resume");

  // DAG, table, task detail
  const dagBox = h("div", { class: "dag-box-wrap", id: "run-dag" });
  const tableBox = h("div", {});
  const detail = h("div", { id: "task-detail" });
  let dag = drawDag(dagBox, run.tasks.map((t) => ({ name: t.name, status: t.status })), run.dependencies || {},
    { onSelect: (name) => select(name), selected });

  function fact(label, value) {
    return [h("dt", {}, label), h("dd", {}, value)];
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
            fmtDuration(taskDuration(t)), r.cpu != null ? String(r.cpu) : "–", r.mem != null ? fmtBytes(r.mem) : "–",
            gpuText(t.resources), u.cpu_seconds != null ? `${Number(u.cpu_seconds).toFixed(1)} s` : "–",
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

// ---- a task's log and artifacts -------------------------------------------------------------

function taskDetail(container, runId, task, later) {
  const base = `/api/runs/${enc(runId)}/tasks/${enc(task.name)}`;
  const lines = h("div", { class: "log", id: "log", tabindex: 0, "aria-label": `log of ${task.name}`,
    role: "log" });
  const state = h("span", { class: "muted small", id: "log-state" });
  const jump = h("button", { type: "button", class: "small", hidden: true,
    onclick: () => { lines.scrollTop = lines.scrollHeight; jump.hidden = true; } }, "↓ follow");
  const artifacts = h("div", { id: "artifacts" }, h("p", { class: "muted" }, "Loading…"));
  let lastId = 0;
  let lastAttempt = null;
  let stream = null;
  let stopped = false;
  let status = task.status;
  let streaming = false;
  let finished = false;

  lines.addEventListener("scroll", () => {
    if (lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 8) jump.hidden = true;
  });

  const add = (batch) => {
    const stick = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 8;
    const frag = document.createDocumentFragment();
    for (const line of batch) {
      if (line.id != null && line.id <= lastId) continue;
      if (line.id != null) lastId = line.id;
      if (line.attempt != null && line.attempt !== lastAttempt) {
        if (lastAttempt !== null || line.attempt > 1) {
          frag.append(h("div", { class: "log-sep" }, `attempt ${line.attempt}`));
        }
        lastAttempt = line.attempt;
      }
      frag.append(h("div", { class: `log-line ${line.stream === "stderr" ? "stderr" : "stdout"}`,
        "data-stream": line.stream || "stdout" },
      line.rank ? h("span", { class: "rank" }, `[${line.rank}] `) : null, line.text));
    }
    const empty = lines.querySelector(".log-empty");
    if (empty && frag.childNodes.length) empty.remove();
    const added = frag.childNodes.length > 0;
    lines.append(frag);
    if (stick) lines.scrollTop = lines.scrollHeight;
    else if (added) jump.hidden = false;
  };

  const done = () => {
    finished = true;
    streaming = false;
    state.textContent = "";
    if (!lines.querySelector(".log-line")) {
      replace(lines, h("div", { class: "log-empty muted" }, "No output."));
    }
    loadArtifacts();
  };

  async function readAll() {
    for (;;) {
      const page = await get(`${base}/logs?after=${lastId}`);
      if (stopped) return null;
      add(page.lines || []);
      if (!page.lines || page.lines.length < 5000) return page;
    }
  }

  async function load() {
    if (stopped) return;
    if (status === "pending" || status === "waiting") {
      state.textContent = "The task has not started yet; its log appears when it does.";
      return;
    }
    if (streaming || finished) return;
    streaming = true;
    state.textContent = "loading…";
    try {
      const page = await readAll();
      if (!page) return;
      if (page.finished || FINISHED.has(status)) { done(); return; }
    } catch (err) {
      streaming = false;
      state.textContent = err.message;
      return;
    }
    state.textContent = "following live…";
    stream = follow(`${base}/logs/stream?after=${lastId}`, {
      line: (line) => { if (stopped) return false; add([line]); return undefined; },
      end: () => { done(); return false; },
    }, {
      onError: () => later(() => { streaming = false; if (!stopped && !finished) load(); }, 1500),
    });
  }

  async function loadArtifacts() {
    try {
      const items = await get(`${base}/artifacts`);
      if (stopped) return;
      replace(artifacts, items.length
        ? h("ul", { class: "artifacts" }, items.map((a) => artifactItem(base, a)))
        : h("p", { class: "muted" }, "No artifacts: the task wrote nothing into $CONVEYOR_OUTPUT."));
    } catch (err) {
      if (!stopped) replace(artifacts, h("p", { class: "error-text" }, err.message));
    }
  }

  replace(container,
    h("section", { class: "card", "data-task": task.name },
      h("div", { class: "card-head" }, h("h2", {}, `Log of ${task.name}`),
        h("div", { class: "actions" }, state, jump)),
      h("p", { class: "muted small" }, "stderr lines are tinted."),
      lines),
    card(`Artifacts of ${task.name}`,
      [h("button", { type: "button", class: "small", onclick: loadArtifacts }, "Refresh")], artifacts));
  replace(lines);
  if (FINISHED.has(status) && !task.attempts) {
    replace(lines, h("div", { class: "log-empty muted" }, `This task did not run (${status.replace("_", " ")}).`));
    finished = true;
    loadArtifacts();
  } else {
    load();
    if (!FINISHED.has(status)) loadArtifacts();
  }

  return {
    stop() {
      stopped = true;
      if (stream) stream.close();
    },
    taskChanged(next) {
      if (!next || stopped) return;
      const was = status;
      status = next.status;
      if (FINISHED.has(was) && !FINISHED.has(status)) {
        // resumed: the task runs again and its new attempt's lines follow the old ones
        finished = false;
        streaming = false;
        if (stream) stream.close();
      }
      if (was !== status && (was === "pending" || was === "waiting")) load();
      if (was !== status && FINISHED.has(status) && !streaming && !finished) load();
    },
  };
}

function artifactItem(base, artifact) {
  const url = `${base}/artifacts/${artifact.path.split("/").map(enc).join("/")}`;
  const size = h("span", { class: "muted small" }, ` ${fmtBytes(artifact.size)}`);
  const isImage = artifact.kind === "image" || /\.(png|jpe?g|gif|svg|webp)$/i.test(artifact.path);
  if (isImage) {
    return h("li", { class: "artifact image", "data-path": artifact.path },
      h("a", { href: url, target: "_blank", rel: "noopener" }, artifact.path), size,
      h("img", { src: url, alt: artifact.path, class: "artifact-image" }));
  }
  if (artifact.kind === "html") {
    return h("li", { class: "artifact html", "data-path": artifact.path },
      h("a", { href: url, target: "_blank", rel: "noopener" }, artifact.path, " ↗"), size);
  }
  return h("li", { class: "artifact", "data-path": artifact.path },
    h("a", { href: url, download: artifact.path.split("/").pop() }, artifact.path), size,
    artifact.kind === "text" ? [" · ", h("a", { href: url, target: "_blank", rel: "noopener" }, "view")] : null);
}
