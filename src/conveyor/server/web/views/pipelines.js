// #/pipelines: the registered pipelines, and a form to register a new one.

import { h, replace, card, table, statusBadge, fmtAgo } from "../dom.js";
import { get, post, enc, attempt, banner, ApiError } from "../api.js";
import { yamlEditor, problemsOf } from "./yaml.js";

const STARTER = `version: "1"
name: my-pipeline
description: What this pipeline does.
tasks:
- name: prepare
  command: |
    echo "preparing" > "$CONVEYOR_OUTPUT/prepared.txt"
  resources: {cpu: 1, mem: 256m}
- name: train
  command: echo "training"
  resources: {cpu: 1, mem: 512m}
  dependencies: [prepare]
`;

export async function pipelinesView(ctx) {
  const pipelines = await get("/api/pipelines");
  if (!ctx.alive()) return;
  const form = newPipelineForm();
  form.el.hidden = !(ctx.query.get("new") || pipelines.length === 0);
  const toggle = h("button", { type: "button", class: "primary", "data-action": "new-pipeline",
    onclick: () => {
      form.el.hidden = !form.el.hidden;
      if (!form.el.hidden) form.editor.textarea.focus();
    } }, "New pipeline");

  const rows = pipelines.map((p) => ({
    attrs: { "data-pipeline": p.name },
    cells: [
      h("a", { href: `#/pipelines/${enc(p.name)}`, class: "strong" }, p.name),
      h("span", { class: "clamp" }, p.description || ""),
      String(p.tasks ?? ""),
      p.last_run
        ? h("a", { href: `#/runs/${enc(p.last_run.id)}`, class: "nowrap" },
          statusBadge(p.last_run.status), " ", h("span", { class: "muted" }, fmtAgo(p.last_run.created_at)))
        : h("span", { class: "muted" }, "never run"),
      h("span", { class: "muted nowrap" }, fmtAgo(p.updated_at)),
    ],
  }));
  replace(ctx.root,
    h("div", { class: "page-head" }, h("h1", {}, "Pipelines"), h("div", { class: "actions" }, toggle)),
    form.el,
    card("Registered pipelines",
      table(["Name", "Description", "Tasks", "Last run", "Updated"], rows,
        "No pipeline is registered yet: paste one above, or register a file on the server.")));
}

function newPipelineForm() {
  const editor = yamlEditor({ value: STARTER, rows: 16 });
  const directory = h("input", { type: "text", placeholder: "optional: /path/on/server",
    "aria-label": "working folder on the server" });
  const replaceBox = h("input", { type: "checkbox" });
  const path = h("input", { type: "text", placeholder: "/path/on/server/pipeline.yaml",
    "aria-label": "pipeline file path on the server", name: "path" });

  const validate = h("button", { type: "button", "data-action": "validate" }, "Validate");
  const register = h("button", { type: "submit", class: "primary", "data-action": "register" }, "Register");
  const registerPath = h("button", { type: "submit", "data-action": "register-path" }, "Register file");

  const registered = (pipeline) => {
    banner(`Registered pipeline ${pipeline.name}.`, "info");
    location.hash = `#/pipelines/${enc(pipeline.name)}`;
  };

  validate.addEventListener("click", () => attempt(async () => {
    const answer = await post("/api/pipelines/validate", { yaml: editor.value });
    if (answer.ok) editor.ok(`Valid${answer.pipeline ? `: pipeline ${answer.pipeline}` : ""}.`);
    else editor.showProblems(answer.problems || []);
  }, { button: validate }));

  const yamlForm = h("form", { class: "stack", onsubmit: (event) => {
    event.preventDefault();
    attempt(async () => {
      const body = { yaml: editor.value };
      if (directory.value.trim()) body.directory = directory.value.trim();
      if (replaceBox.checked) body.replace = true;
      try {
        registered(await post("/api/pipelines", body));
      } catch (err) {
        if (err instanceof ApiError && err.status !== 401 && err.status !== 0) {
          editor.showProblems(problemsOf(err), err.status === 409 ? "Not registered" : undefined);
          return;
        }
        throw err;
      }
    }, { button: register });
  } },
  editor.el,
  h("div", { class: "row wrap" },
    h("label", { class: "inline grow" }, "Working folder", directory),
    h("label", { class: "inline check" }, replaceBox, "Replace a pipeline of the same name")),
  h("div", { class: "row" }, validate, register));

  const pathForm = h("form", { class: "row wrap", onsubmit: (event) => {
    event.preventDefault();
    attempt(async () => {
      const body = { path: path.value.trim() };
      if (replaceBox.checked) body.replace = true;
      registered(await post("/api/pipelines", body));
    }, { button: registerPath, form: pathForm });
  } },
  h("label", { class: "inline grow", "data-field": "path" }, "Or register a file on the server", path),
  registerPath);

  const el = card("New pipeline",
    h("p", { class: "muted" }, "Paste a pipeline.yaml (FastTrack format). Validate shows every problem with its line."),
    yamlForm, h("hr"), pathForm);
  el.id = "new-pipeline";
  return { el, editor };
}
