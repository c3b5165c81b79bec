// Small DOM helpers: elements are built with createElement and text goes in as text nodes,
// so nothing the API returns is ever parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, attrs, children, svg) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.setAttribute("class", value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (!svg && (key === "value" || key === "checked" || key === "disabled" || key === "selected")) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** h("div", {class: "x", onclick: fn}, "text", childNode, [more]) */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children, false);
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children, true);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// A button that acts on a second click within 4 s; the first click asks to be sure.
export function confirmButton(attrs, label, sureLabel, action) {
  let armed = false;
  const button = h("button", { type: "button", ...attrs, onclick: () => {
    if (!armed) {
      armed = true;
      button.textContent = sureLabel;
      setTimeout(() => { armed = false; button.textContent = label; }, 4000);
      return;
    }
    return action(button);
  } }, label);
  return button;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

// ---- formatting -------------------------------------------------------------------------

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 59.5) return `${seconds.toFixed(seconds < 9.95 ? 1 : 0)} s`;
  const whole = Math.round(seconds); // round once, so 16 min 59.7 s reads 17 min 0 s
  const m = Math.floor(whole / 60);
  if (m < 60) return `${m} min ${whole % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  if (typeof bytes === "string") return bytes;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 || value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** A Date from an ISO time; one without a zone is UTC (as the API's times are). */
export function parseTime(iso) {
  if (!iso) return new Date(NaN);
  const text = String(iso);
  const zoned = /(Z|[+-]\d\d:?\d\d)$/.test(text) || !text.includes("T");
  return new Date(zoned ? text : `${text}Z`);
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const date = parseTime(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const options = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" };
  if (date.getFullYear() !== new Date().getFullYear()) options.year = "numeric";
  return date.toLocaleString(undefined, options);
}

export function fmtAgo(iso) {
  if (!iso) return "–";
  const seconds = (Date.now() - parseTime(iso).getTime()) / 1000;
  if (Number.isNaN(seconds)) return String(iso);
  if (seconds < 0) return `in ${fmtDuration(-seconds)}`;
  if (seconds < 60) return "just now";
  return `${fmtDuration(seconds).replace(/ \d+ s$/, "")} ago`;
}

/** Seconds between two ISO times, or from `start` until now. */
export function secondsBetween(start, end) {
  if (!start) return null;
  const stop = end ? parseTime(end).getTime() : Date.now();
  return Math.max(0, (stop - parseTime(start).getTime()) / 1000);
}

/** A status as a coloured pill; services' statuses (HEALTHY) are coloured like runs' (healthy). */
export function statusBadge(status) {
  const key = String(status || "unknown").toLowerCase();
  return h("span", { class: `badge status-${key}`, "data-status": status || "" },
    key.replace("_", " "));
}

export const TASK_STATUSES = [
  "pending", "waiting", "running", "succeeded", "failed", "skipped", "cancelled", "upstream_failed",
];
export const RUN_STATUSES = ["pending", "running", "succeeded", "failed", "cancelled", "interrupted"];
export const FINISHED = new Set([
  "succeeded", "failed", "cancelled", "interrupted", "skipped", "upstream_failed",
]);

export function legend(statuses = TASK_STATUSES) {
  return h("div", { class: "legend", "aria-label": "status colours" },
    statuses.map((st) => h("span", { class: "legend-item" },
      h("span", { class: `swatch status-${st}` }), st.replace("_", " "))));
}

/** A card with a title row (title + optional actions) and a body. */
export function card(title, ...body) {
  const actions = body.length && body[0] instanceof Array ? body.shift() : [];
  return h("section", { class: "card" },
    h("div", { class: "card-head" }, h("h2", {}, title), h("div", { class: "actions" }, actions)),
    body);
}

/** A scrollable table; `rows` are arrays of cells (strings or nodes) or {cells, attrs}. */
export function table(headers, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", {}, name)))),
      h("tbody", {}, rows.map((row) => {
        const { cells, attrs } = Array.isArray(row) ? { cells: row, attrs: {} } : row;
        return h("tr", attrs, cells.map((cell) => h("td", {}, cell)));
      }))));
}

export function link(href, ...children) {
  return h("a", { href }, children);
}
