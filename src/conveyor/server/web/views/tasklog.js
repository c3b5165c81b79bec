// A task of a run: its log, followed live (stderr tinted, auto-scroll unless the reader
// scrolled up), and its artifacts (images inline, HTML in a new tab, the rest as downloads).

import { h, replace, card, fmtBytes, FINISHED } from "../dom.js";
import { get, enc, follow } from "../api.js";

export function taskDetail(container, runId, task, later) {
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
