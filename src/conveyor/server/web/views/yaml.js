// A YAML textarea with line numbers and a list of problems; clicking a problem selects its line.

import { h, replace } from "../dom.js";

/** Select line `line` (1-based) of a textarea and scroll it into view. */
export function selectLine(textarea, line) {
  const lines = textarea.value.split("\n");
  const index = Math.min(Math.max(1, line), lines.length) - 1;
  let start = 0;
  for (let i = 0; i < index; i += 1) start += lines[i].length + 1;
  textarea.focus();
  textarea.setSelectionRange(start, start + lines[index].length);
  const lineHeight = parseFloat(getComputedStyle(textarea).lineHeight) || 18;
  textarea.scrollTop = Math.max(0, (index - 3) * lineHeight);
}

/**
 * editor = yamlEditor({value, rows}); editor.el is the element, editor.textarea the input,
 * editor.showProblems(problems) lists [{line, field, message}], editor.ok(message) a success.
 */
export function yamlEditor({ value = "", rows = 18, placeholder = "", label = "Pipeline YAML" } = {}) {
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const textarea = h("textarea", {
    class: "code", rows, spellcheck: "false", autocapitalize: "off", autocomplete: "off",
    placeholder, "aria-label": label, wrap: "off",
  });
  textarea.value = value;
  const problems = h("div", { class: "problems", "aria-live": "polite" });
  const marks = new Set();

  const renderGutter = () => {
    const count = textarea.value.split("\n").length;
    const numbers = [];
    for (let i = 1; i <= count; i += 1) numbers.push(marks.has(i) ? `● ${i}` : String(i));
    gutter.textContent = numbers.join("\n");
    gutter.scrollTop = textarea.scrollTop;
  };
  textarea.addEventListener("input", renderGutter);
  textarea.addEventListener("scroll", () => { gutter.scrollTop = textarea.scrollTop; });
  renderGutter();

  const el = h("div", { class: "yaml-editor", "data-field": "yaml" },
    h("div", { class: "code-box" }, gutter, textarea), problems);

  return {
    el,
    textarea,
    get value() { return textarea.value; },
    set value(text) { textarea.value = text; marks.clear(); renderGutter(); replace(problems); },
    showProblems(list, heading) {
      marks.clear();
      list.forEach((p) => { if (p.line) marks.add(p.line); });
      renderGutter();
      replace(problems, h("div", { class: "problems-box", role: "alert" },
        h("strong", {}, heading || (list.length === 1 ? "1 problem" : `${list.length} problems`)),
        h("ul", {}, list.map((p) => h("li", { class: "problem", "data-line": p.line ?? "" },
          p.line
            ? h("button", { type: "button", class: "line-link", title: "Show this line",
              onclick: () => selectLine(textarea, p.line) }, `line ${p.line}`)
            : h("span", { class: "line-link none" }, "—"),
          p.field ? h("code", { class: "problem-field" }, p.field) : null,
          h("span", { class: "problem-message" }, p.message))))));
    },
    ok(message) {
      marks.clear();
      renderGutter();
      replace(problems, h("div", { class: "ok-box", role: "status" }, message));
    },
    clear() { marks.clear(); renderGutter(); replace(problems); },
  };
}

/** The problems an ApiError carries, or one made from its message. */
export function problemsOf(err) {
  if (err.problems && err.problems.length) return err.problems;
  return [{ line: null, field: err.field, message: err.message }];
}
