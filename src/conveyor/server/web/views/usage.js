// A pipeline's usage: its runs' outcomes, durations over time, and per-task resource use.

import { h, s, replace, table, statusBadge, fmtDuration, fmtBytes, fmtTime, fmtAgo, RUN_STATUSES, legend } from "../dom.js";
import { get, enc } from "../api.js";

/** The smallest 1, 2 or 5 times a power of ten at or above `value`: a round top for an axis. */
function niceCeil(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((top) => top >= value * 0.9999);
}

/** Bars of run durations, oldest left; each bar is coloured by its run's status and links to it. */
export function durationChart(history) {
  const W = 640;
  const H = 180;
  const left = 48;
  const bottom = 24;
  const top = 10;
  const plotW = W - left - 8;
  const plotH = H - top - bottom;
  const durations = history.map((r) => r.duration || 0);
  const max = niceCeil(Math.max(0.001, ...durations));
  const step = plotW / Math.max(history.length, 1);
  const barW = Math.max(2, Math.min(28, step * 0.7));
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "run durations over time", preserveAspectRatio: "xMinYMin meet" });
  for (const fraction of [0, 0.5, 1]) {
    const y = top + plotH * (1 - fraction);
    svg.append(s("line", { x1: left, x2: W - 8, y1: y, y2: y, class: "grid-line" }),
      s("text", { x: left - 6, y: y + 4, class: "axis-label", "text-anchor": "end" },
        fraction === 0 ? "0" : fmtDuration(max * fraction)));
  }
  history.forEach((run, i) => {
    const value = run.duration || 0;
    const height = Math.max(value > 0 ? 2 : 1, (value / max) * plotH);
    const x = left + i * step + (step - barW) / 2;
    const bar = s("rect", { x, y: top + plotH - height, width: barW, height, rx: 2,
      class: `bar status-${run.status}`, "data-status": run.status },
    s("title", {}, `${fmtTime(run.created_at)} · ${run.status} · ${fmtDuration(run.duration)}`));
    svg.append(s("a", { href: `#/runs/${enc(run.id)}` }, bar));
  });
  if (history.length) {
    svg.append(s("text", { x: left, y: H - 6, class: "axis-label" }, fmtTime(history[0].created_at)));
    if (history.length > 1) {
      svg.append(s("text", { x: W - 8, y: H - 6, class: "axis-label", "text-anchor": "end" },
        fmtTime(history[history.length - 1].created_at)));
    }
  }
  return h("div", { class: "chart-box" }, svg);
}

function taskTable(tasks) {
  // mean_duration is in the API's contract; leave its column out while no task has one
  const durations = tasks.some(([, u]) => u.mean_duration != null);
  return table(["Task", "Attempts", durations ? "Mean duration" : null, "Mean CPU time", "Peak memory",
    "Peak GPU memory"].filter(Boolean),
  tasks.map(([task, u]) => [h("strong", {}, task), String(u.attempts ?? "–"),
    durations ? fmtDuration(u.mean_duration) : null, fmtDuration(u.mean_cpu_seconds),
    fmtBytes(u.max_peak_memory), fmtBytes(u.max_gpu_memory)].filter((cell) => cell !== null)),
  "No task has run yet.");
}

export async function loadUsage(container, name) {
  replace(container, h("p", { class: "muted" }, "Loading usage…"));
  const usage = await get(`/api/pipelines/${enc(name)}/usage`);
  const outcomes = Object.entries(usage.outcomes || {});
  const tasks = Object.entries(usage.tasks || {});
  const history = usage.history || [];
  replace(container,
    h("div", { class: "stats" },
      h("div", { class: "stat" }, h("span", { class: "stat-value", "data-stat": "runs" }, String(usage.runs ?? 0)),
        h("span", { class: "stat-label" }, "runs")),
      outcomes.map(([status, count]) => h("div", { class: "stat" },
        h("span", { class: "stat-value" }, String(count)), statusBadge(status)))),
    h("h3", {}, "Run durations"),
    history.length
      ? [durationChart(history), legend(RUN_STATUSES.filter((st) => history.some((r) => r.status === st)))]
      : h("p", { class: "muted" }, "No runs yet."),
    h("h3", {}, "Per task (over its runs)"),
    taskTable(tasks));
  return usage;
}

export async function loadRecentRuns(container, name) {
  const runs = await get(`/api/runs?pipeline=${enc(name)}&limit=10`);
  replace(container, table(["Run", "Status", "Created", "Duration"],
    runs.map((r) => [h("a", { href: `#/runs/${enc(r.id)}`, class: "mono" }, r.id),
      statusBadge(r.status), fmtAgo(r.created_at), fmtDuration(r.duration)]),
    "No runs yet."));
}
