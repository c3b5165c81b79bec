// #/pipelines/NAME: the DAG with a task form, the YAML, a run form, usage, schedules, notifications.

import { h, replace, card, fmtAgo, fmtTime, confirmButton } from "../dom.js";
import { get, post, put, del, enc, attempt, banner, showError, ApiError } from "../api.js";
import { drawDag } from "../dag.js";
import { taskForm, parseEnvLines } from "./taskform.js";
import { yamlEditor, problemsOf } from "./yaml.js";
import { loadUsage, loadRecentRuns } from "./usage.js";
import { loadSchedules, loadNotifications } from "./automation.js";

const TABS = [["graph", "Graph"], ["yaml", "YAML"], ["usage", "Runs & usage"], ["automation", "Schedules & notifications"]];

function resourceSummary(task) {
  const r = task.resources || {};
  const parts = [];
  if (r.cpu !== undefined) parts.push(`${r.cpu} cpu`);
  if (r.mem !== undefined) parts.push(String(r.mem));
  if (r["cuda.shares"]) parts.push(`${r["cuda.shares"]} gpu`);
  const text = parts.join(" · ") || "default resources";
  return task.skip ? `skipped · ${text}` : text;
}

export async function pipelinePageView(ctx) {
  const name = ctx.params[0];
  let pipeline = await get(`/api/pipelines/${enc(name)}`);
  if (!ctx.alive()) return;
  let selected = ctx.query.get("task") || null;
  let yamlDirty = false;

  // ---- header and run form
  const description = h("p", { class: "muted" });
  const meta = h("p", { class: "meta" });
  const runPanel = h("div", { hidden: true });
  const runButton = h("button", { type: "button", class: "primary", "data-action": "run",
    onclick: () => {
      runPanel.hidden = !runPanel.hidden;
      if (!runPanel.hidden) renderRunForm();
    } }, "Run…");
  const deleteButton = confirmButton({ class: "danger", "data-action": "delete-pipeline" },
    "Delete", "Click again to delete", (button) => attempt(async () => {
      await del(`/api/pipelines/${enc(name)}`);
      banner(`Deleted pipeline ${name}; its runs stay.`, "info");
      location.hash = "#/pipelines";
    }, { button }));

  function renderRunForm() {
    const boxes = pipeline.tasks.map((t) => h("label", { class: "check" },
      h("input", { type: "checkbox", value: t.name, checked: !!t.skip, disabled: !!t.skip }),
      t.name, t.skip ? h("span", { class: "muted" }, " (skipped in the YAML)") : null));
    const env = h("textarea", { rows: 3, class: "code", name: "env", spellcheck: "false",
      placeholder: "NAME=value (one per line)" });
    const start = h("button", { type: "submit", class: "primary", "data-action": "start-run" }, "Start run");
    const form = h("form", { class: "stack", onsubmit: (event) => {
      event.preventDefault();
      attempt(async () => {
        const skip = boxes.map((l) => l.querySelector("input")).filter((i) => i.checked && !i.disabled)
          .map((i) => i.value);
        const body = { pipeline: name, env: parseEnvLines(env.value, "environment overrides", "env") };
        if (skip.length) body.skip = skip;
        const run = await post("/api/runs", body);
        location.hash = `#/runs/${enc(run.id)}`;
      }, { form, button: start });
    } },
    h("fieldset", { "data-field": "skip" }, h("legend", {}, "Skip these tasks"), h("div", { class: "checks" }, boxes)),
    h("label", { class: "field", "data-field": "env" }, h("span", { class: "label" }, "Environment overrides"), env),
    h("div", { class: "row" }, start,
      h("button", { type: "button", onclick: () => { runPanel.hidden = true; } }, "Cancel")));
    replace(runPanel, card("Start a run", form));
  }

  // ---- graph tab
  const dagBox = h("div", { class: "dag-box-wrap", id: "pipeline-dag" });
  const formBox = h("div", { class: "task-form-box" });
  let dag = null;

  function openForm(taskName) {
    selected = taskName;
    const task = taskName ? pipeline.tasks.find((t) => t.name === taskName) : null;
    if (taskName && !task) {
      replace(formBox);
      selected = null;
      return;
    }
    if (dag) dag.select(taskName);
    remember();
    const others = pipeline.tasks.map((t) => t.name).filter((n) => n !== taskName);
    const form = taskForm({
      task,
      others,
      note: /^\s*#/m.test(pipeline.yaml) ? "Saving rewrites pipeline.yaml from its fields: its comments are not kept." : null,
      onClose: () => { selected = null; if (dag) dag.select(null); replace(formBox); remember(); },
      onSave: (fields, button, err) => {
        if (err) { showError(err, form); return; }
        attempt(async () => {
          const next = task
            ? await put(`/api/pipelines/${enc(name)}/tasks/${enc(task.name)}`, { task: fields })
            : await post(`/api/pipelines/${enc(name)}/tasks`, { task: fields });
          setPipeline(next);
          banner(`Saved task ${fields.name}.`, "info");
          openForm(fields.name);
        }, { form, button });
      },
      onDuplicate: (button) => attempt(async () => {
        const before = new Set(pipeline.tasks.map((t) => t.name));
        const next = await post(`/api/pipelines/${enc(name)}/tasks/${enc(task.name)}/duplicate`, {});
        setPipeline(next);
        const added = next.tasks.find((t) => !before.has(t.name));
        banner(`Duplicated ${task.name}${added ? ` as ${added.name}` : ""}.`, "info");
        openForm(added ? added.name : task.name);
      }, { form, button }),
      onDelete: (button) => attempt(async () => {
        const next = await del(`/api/pipelines/${enc(name)}/tasks/${enc(task.name)}`);
        selected = null;
        if (next) setPipeline(next); else setPipeline(await get(`/api/pipelines/${enc(name)}`));
        replace(formBox);
        banner(`Deleted task ${task.name}.`, "info");
      }, { form, button }),
    });
    replace(formBox, form);
    form.querySelector("input[name=name]").focus({ preventScroll: true });
    form.scrollIntoView({ block: "nearest" });
  }

  function drawGraph() {
    dag = drawDag(dagBox, pipeline.tasks.map((t) => ({
      name: t.name, status: t.skip ? "skipped" : "", detail: resourceSummary(t),
    })), pipeline.dependencies || {}, { onSelect: openForm, selected });
  }

  const addTask = h("button", { type: "button", "data-action": "add-task", onclick: () => openForm(null) },
    "Add task");
  const graphPanel = h("div", { class: "stack" },
    card("Tasks", [addTask],
      h("p", { class: "muted small" }, "Click a task to edit it; arrows point from a task to those that wait for it."),
      dagBox),
    formBox);

  // ---- YAML tab
  const editor = yamlEditor({ value: pipeline.yaml, rows: 24 });
  editor.textarea.addEventListener("input", () => { yamlDirty = true; });
  const validate = h("button", { type: "button", "data-action": "validate" }, "Validate");
  const saveYaml = h("button", { type: "button", class: "primary", "data-action": "save-yaml" }, "Save");
  const revert = h("button", { type: "button", onclick: () => { editor.value = pipeline.yaml; yamlDirty = false; } },
    "Revert");
  validate.addEventListener("click", () => attempt(async () => {
    const answer = await post("/api/pipelines/validate", { yaml: editor.value });
    if (answer.ok) editor.ok("Valid.");
    else editor.showProblems(answer.problems || []);
  }, { button: validate }));
  saveYaml.addEventListener("click", () => attempt(async () => {
    try {
      setPipeline(await put(`/api/pipelines/${enc(name)}`, { yaml: editor.value }), true);
      editor.ok("Saved.");
    } catch (err) {
      if (err instanceof ApiError && err.status >= 400 && err.status !== 401) editor.showProblems(problemsOf(err));
      else throw err;
    }
  }, { button: saveYaml }));
  const yamlPanel = card("pipeline.yaml", editor.el, h("div", { class: "row" }, validate, saveYaml, revert));

  // ---- usage and automation tabs
  const usageBox = h("div", {});
  const recentBox = h("div", {});
  const usagePanel = h("div", { class: "stack" },
    card("Usage", usageBox),
    card("Recent runs", [h("a", { href: `#/runs?pipeline=${enc(name)}`, class: "button small" }, "All runs")], recentBox));
  const schedulesBox = h("div", {});
  const notificationsBox = h("div", {});
  const automationPanel = h("div", { class: "stack" },
    card("Schedules", schedulesBox), card("Notifications", notificationsBox));

  const panels = { graph: graphPanel, yaml: yamlPanel, usage: usagePanel, automation: automationPanel };
  let tab = panels[ctx.query.get("tab")] ? ctx.query.get("tab") : "graph";
  const tabButtons = TABS.map(([key, label]) => h("button", { type: "button", role: "tab", class: "tab",
    "data-tab": key, onclick: () => showTab(key) }, label));

  function remember() {
    const params = new URLSearchParams();
    if (tab !== "graph") params.set("tab", tab);
    if (selected && tab === "graph") params.set("task", selected);
    const query = params.toString();
    history.replaceState(null, "", `#/pipelines/${enc(name)}${query ? `?${query}` : ""}`);
  }

  function showTab(key) {
    tab = key;
    tabButtons.forEach((b) => {
      b.classList.toggle("active", b.dataset.tab === key);
      b.setAttribute("aria-selected", String(b.dataset.tab === key));
    });
    Object.entries(panels).forEach(([k, panel]) => { panel.hidden = k !== key; });
    remember();
    const fail = (box) => (err) => replace(box, h("p", { class: "error-text" }, err.message));
    if (key === "usage") {
      loadUsage(usageBox, name).catch(fail(usageBox));
      loadRecentRuns(recentBox, name).catch(fail(recentBox));
    } else if (key === "automation") {
      loadSchedules(schedulesBox, pipeline).catch(fail(schedulesBox));
      loadNotifications(notificationsBox, pipeline).catch(fail(notificationsBox));
    } else if (key === "yaml" && !yamlDirty) {
      editor.value = pipeline.yaml;
    }
  }

  function setPipeline(next, fromYaml = false) {
    pipeline = next;
    description.textContent = pipeline.description || "";
    replace(meta, `${pipeline.tasks.length} tasks`,
      pipeline.source ? [" · from ", h("code", {}, pipeline.source)] : "",
      pipeline.directory ? [" · folder ", h("code", {}, pipeline.directory)] : "",
      " · updated ", h("span", { title: fmtTime(pipeline.updated_at) }, fmtAgo(pipeline.updated_at)));
    if (selected && !pipeline.tasks.some((t) => t.name === selected)) selected = null;
    drawGraph();
    if (fromYaml || !yamlDirty) {
      editor.value = pipeline.yaml;
      yamlDirty = false;
    }
    if (!runPanel.hidden) renderRunForm();
  }

  replace(ctx.root,
    h("div", { class: "page-head" },
      h("div", {}, h("p", { class: "crumbs" }, h("a", { href: "#/pipelines" }, "Pipelines"), " /"),
        h("h1", { "data-pipeline": name }, name), description, meta),
      h("div", { class: "actions" }, runButton,
        h("a", { class: "button", href: `#/runs?pipeline=${enc(name)}` }, "Runs"), deleteButton)),
    runPanel,
    h("div", { class: "tabs", role: "tablist" }, tabButtons),
    Object.values(panels));
  setPipeline(pipeline);
  showTab(tab);
  if (selected) openForm(selected);
}
