// The form of one task: every field of pipeline.yaml a user edits often; the task's other
// fields (description aside) are kept as they were.

import { h, confirmButton } from "../dom.js";

function field(key, label, input, hint) {
  return h("label", { class: "field", "data-field": key }, h("span", { class: "label" }, label), input,
    hint ? h("span", { class: "hint" }, hint) : null);
}

function text(name, value, attrs = {}) {
  return h("input", { type: "text", name, value: value ?? "", autocomplete: "off", ...attrs });
}

function num(name, value, attrs = {}) {
  return h("input", { type: "number", name, value: value ?? "", step: "any", min: 0, ...attrs });
}

const envLines = (envs) => Object.entries(envs || {}).map(([k, v]) => `${k}=${v}`).join("\n");

/** "A=1\nB=two" as {A: "1", B: "two"}; throws on a line without "=". */
export function parseEnvLines(value, what = "environment", field = "environment.envs") {
  const envs = {};
  value.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#")).forEach((line, i) => {
    const at = line.indexOf("=");
    if (at <= 0) {
      throw fieldError(field, `${what}, line ${i + 1}: write NAME=value (got "${line}")`);
    }
    envs[line.slice(0, at).trim()] = line.slice(at + 1);
  });
  return envs;
}

function fieldError(field, message) {
  const err = new Error(message);
  err.field = field;
  return err;
}

function numberOrText(value) {
  const trimmed = value.trim();
  if (trimmed === "") return undefined;
  return /^-?\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed;
}

function setOrDelete(obj, key, value) {
  if (value === undefined || value === "" || (typeof value === "number" && Number.isNaN(value))) delete obj[key];
  else obj[key] = value;
}

/**
 * taskForm({task, others, onSave, onDuplicate, onDelete, onClose}): task is TaskFields or null
 * for a new one; others are the names of the other tasks (candidates for dependencies).
 */
export function taskForm({ task, others, onSave, onDuplicate, onDelete, onClose, note }) {
  const isNew = !task;
  const t = task || {};
  const res = t.resources || {};
  const opts = t.resource_opts || {};
  const retry = t.retry || {};
  const deps = new Set(t.dependencies || []);

  const inputs = {
    name: text("name", t.name, { required: true, placeholder: "train", pattern: "[A-Za-z0-9_.\\-]+" }),
    description: text("description", t.description),
    command: h("textarea", { name: "command", rows: 5, class: "code", spellcheck: "false",
      placeholder: "python train.py --epochs 1", value: t.command ?? "" }),
    cpu: num("cpu", res.cpu, { placeholder: "1" }),
    mem: text("mem", res.mem, { placeholder: "e.g. 4g" }),
    gpu: num("cuda.shares", res["cuda.shares"], { placeholder: "0", step: "0.05" }),
    shmem: text("shmem", opts.shmem, { placeholder: "e.g. 1g" }),
    gpuMode: h("select", { name: "gpu-mode" },
      h("option", { value: "required", selected: opts.gpu !== "if-available" }, "required"),
      h("option", { value: "if-available", selected: opts.gpu === "if-available" }, "if available (else CPU)")),
    mounts: h("textarea", { name: "mounts", rows: 2, class: "code", spellcheck: "false",
      placeholder: "data:data\nmodels", value: (t.mounts || []).map((m) => (typeof m === "string" ? m
        : `${m.folder}${m.alias ? `:${m.alias}` : ""}`)).join("\n") }),
    skip: h("input", { type: "checkbox", name: "skip", checked: !!t.skip }),
    attempts: num("max_attempts", retry.max_attempts, { min: 1, step: 1, placeholder: "1" }),
    delay: text("delay", retry.delay, { placeholder: "0" }),
    timeout: text("timeout", t.timeout, { placeholder: "e.g. 1h, 30m, 90" }),
    envs: h("textarea", { name: "envs", rows: 2, class: "code", spellcheck: "false",
      placeholder: "NAME=value", value: envLines((t.environment || {}).envs) }),
  };
  const depBoxes = others.map((name) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "dependency", value: name, checked: deps.has(name) }), name));

  const save = h("button", { type: "submit", class: "primary", "data-action": "save-task" },
    isNew ? "Add task" : "Save task");
  const del = isNew ? null : confirmButton({ class: "danger", "data-action": "delete-task" },
    "Delete", "Click again to delete", onDelete);
  const dup = isNew ? null : h("button", { type: "button", "data-action": "duplicate-task",
    onclick: () => onDuplicate(dup) }, "Duplicate");

  const form = h("form", { class: "task-form", "data-task": t.name || "", novalidate: true },
    h("div", { class: "form-head" },
      h("h3", {}, isNew ? "New task" : `Task ${t.name}`),
      h("button", { type: "button", class: "icon-button", "aria-label": "close", title: "Close",
        onclick: onClose }, "×")),
    t.service ? h("p", { class: "hint" }, "This task deploys a service; edit its service block in the YAML tab.") : null,
    h("div", { class: "grid two" },
      field("name", "Name", inputs.name),
      field("description", "Description", inputs.description)),
    field("command", "Command", inputs.command, "Runs in bash; $CONVEYOR_OUTPUT is the task's artifact folder."),
    h("fieldset", { "data-field": "resources" }, h("legend", {}, "Resources"),
      h("div", { class: "grid four" },
        field("resources.cpu", "CPU", inputs.cpu),
        field("resources.mem", "Memory", inputs.mem),
        field("resources.cuda.shares", "GPU share", inputs.gpu),
        field("resource_opts.shmem", "Shared memory", inputs.shmem)),
      field("resource_opts.gpu", "GPU", inputs.gpuMode)),
    field("mounts", "Mounts", inputs.mounts, "One per line: folder or folder:alias"),
    h("fieldset", { "data-field": "dependencies" }, h("legend", {}, "Dependencies"),
      depBoxes.length ? h("div", { class: "checks" }, depBoxes) : h("span", { class: "muted" }, "No other tasks.")),
    h("div", { class: "grid four" },
      field("retry.max_attempts", "Max attempts", inputs.attempts),
      field("retry.delay", "Retry delay", inputs.delay),
      field("timeout", "Timeout", inputs.timeout),
      h("label", { class: "field check", "data-field": "skip" }, inputs.skip, "Skip this task")),
    field("environment.envs", "Environment variables", inputs.envs, "One per line: NAME=value"),
    h("div", { class: "row wrap" }, save, dup, del, note ? h("span", { class: "hint" }, note) : null));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    let fields;
    try {
      fields = collect();
    } catch (err) {
      onSave(null, save, err);
      return;
    }
    onSave(fields, save);
  });

  function collect() {
    const out = structuredClone(task || {});
    out.name = inputs.name.value.trim();
    if (!out.name) throw fieldError("name", "Give the task a name.");
    if (others.includes(out.name)) {
      throw fieldError("name", `The pipeline has a task "${out.name}" already; choose another name.`);
    }
    setOrDelete(out, "description", inputs.description.value.trim() || (task && task.description !== undefined ? "" : undefined));
    if (inputs.command.value.trim() || !out.service) out.command = inputs.command.value;
    const resources = { ...(out.resources || {}) };
    setOrDelete(resources, "cpu", inputs.cpu.value === "" ? undefined : Number(inputs.cpu.value));
    setOrDelete(resources, "mem", numberOrText(inputs.mem.value));
    setOrDelete(resources, "cuda.shares", inputs.gpu.value === "" ? undefined : Number(inputs.gpu.value));
    if (Object.keys(resources).length) out.resources = resources; else delete out.resources;
    const resourceOpts = { ...(out.resource_opts || {}) };
    setOrDelete(resourceOpts, "shmem", numberOrText(inputs.shmem.value));
    setOrDelete(resourceOpts, "gpu", inputs.gpuMode.value === "required" && !opts.gpu ? undefined : inputs.gpuMode.value);
    if (Object.keys(resourceOpts).length) out.resource_opts = resourceOpts; else delete out.resource_opts;
    const mounts = inputs.mounts.value.split("\n").map((l) => l.trim()).filter(Boolean);
    if (mounts.length || out.mounts) out.mounts = mounts;
    const dependencies = depBoxes.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    if (dependencies.length || out.dependencies) out.dependencies = dependencies;
    if (inputs.skip.checked || out.skip !== undefined) out.skip = inputs.skip.checked;
    const retryOut = { ...(out.retry || {}) };
    setOrDelete(retryOut, "max_attempts", inputs.attempts.value === "" ? undefined : Number(inputs.attempts.value));
    setOrDelete(retryOut, "delay", numberOrText(inputs.delay.value));
    if (Object.keys(retryOut).length) out.retry = retryOut; else delete out.retry;
    setOrDelete(out, "timeout", numberOrText(inputs.timeout.value));
    const envs = parseEnvLines(inputs.envs.value, "environment variables");
    const environment = { ...(out.environment || {}) };
    if (Object.keys(envs).length || environment.envs) environment.envs = envs;
    if (Object.keys(environment).length) out.environment = environment; else delete out.environment;
    return out;
  }

  return form;
}
