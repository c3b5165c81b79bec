// The REST API (docs/server-api.md): JSON in and out, the admin token on every write,
// and errors as {message, field} shown next to their form field or in the banner.

import { h, clear } from "./dom.js";

const TOKEN_KEY = "conveyor.token";

export const info = { token_required: false, version: "", capacity: "", storage_root: "" };

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage may be off; the token then lasts until the page reloads */
  }
}

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.message) || `the server answered ${status}`;
    super(message);
    this.status = status;
    this.field = (body && body.field) || null;
    this.problems = (body && body.problems) || [];
  }
}

/** Call the API; resolves to the parsed JSON (null for 204), rejects with ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET") {
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, { message: `cannot reach the server (${err.message}); is conveyor server still running?` });
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text.slice(0, 300) };
  }
  if (!response.ok) {
    const err = new ApiError(response.status, data);
    if (response.status === 401) {
      err.message = getToken()
        ? "The server refused the saved token: enter the right admin token in the Token field at the top, save, and try again."
        : "This server asks for its admin token (CONVEYOR_SERVER_TOKEN): enter it in the Token field at the top, save, and try again.";
      document.dispatchEvent(new CustomEvent("conveyor:need-token"));
    }
    throw err;
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body = {}) => api("POST", path, body);
export const put = (path, body = {}) => api("PUT", path, body);
export const del = (path) => api("DELETE", path);

/** encodeURIComponent for one path segment. */
export const enc = (value) => encodeURIComponent(value);

// ---- showing errors -----------------------------------------------------------------------

/** Show a message in the banner at the top; kind is "error" or "info". */
export function banner(message, kind = "error") {
  const box = document.getElementById("banner");
  const item = h("div", { class: `banner-item ${kind}`, role: kind === "error" ? "alert" : "status" },
    h("span", { class: "banner-text" }, message),
    h("button", { class: "icon-button", type: "button", "aria-label": "dismiss", title: "Dismiss",
      onclick: () => item.remove() }, "×"));
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  if (kind !== "error") setTimeout(() => item.remove(), 4000);
  return item;
}

export function clearBanner() {
  clear(document.getElementById("banner"));
}

/** The form element that answers to an API field: the longest data-field key the field starts with. */
function fieldElement(form, field) {
  if (!form || !field) return null;
  const bare = String(field)
    .replace(/^body\./, "")
    .replace(/^task\./, "")
    .replace(/^tasks\[[^\]]*\]\.?/, "")
    .replace(/^tasks\.\d+\.?/, "");
  let best = null;
  let bestLength = -1;
  for (const el of form.querySelectorAll("[data-field]")) {
    const key = el.dataset.field;
    if ((bare === key || bare.startsWith(`${key}.`) || bare.startsWith(`${key}[`) || field === key)
        && key.length > bestLength) {
      best = el;
      bestLength = key.length;
    }
  }
  return best;
}

export function clearFieldErrors(form) {
  if (!form) return;
  form.querySelectorAll(".field-error").forEach((el) => el.remove());
  form.querySelectorAll(".has-error").forEach((el) => el.classList.remove("has-error"));
}

/** Show an error next to its form field when the form has it, else in the banner. */
export function showError(err, form) {
  if (form) clearFieldErrors(form);
  const message = err && err.message ? err.message : String(err);
  const target = fieldElement(form, err && err.field);
  if (target) {
    target.classList.add("has-error");
    target.append(h("div", { class: "field-error", role: "alert" }, message));
    const input = target.querySelector("input, textarea, select");
    if (input) input.focus();
    return;
  }
  banner(message, "error");
}

/** Run an async action; errors go to showError. Disables `button` meanwhile. */
export async function attempt(action, { form, button } = {}) {
  if (button) button.disabled = true;
  try {
    if (form) clearFieldErrors(form);
    return await action();
  } catch (err) {
    showError(err, form);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// ---- server-sent events --------------------------------------------------------------------

/**
 * Follow an SSE stream: handlers maps event names to callbacks of parsed JSON.
 * The stream is closed by `close()`, by `stopWhen(data)` returning true, or by the server's
 * `end` event; a stream that fails calls onError once and stays closed (no reconnect loop).
 */
export function follow(path, handlers, { onError } = {}) {
  const source = new EventSource(path);
  let closed = false;
  const close = () => {
    if (!closed) {
      closed = true;
      source.close();
    }
  };
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => {
      let data = null;
      try {
        data = event.data ? JSON.parse(event.data) : null;
      } catch {
        data = event.data;
      }
      if (handler(data, event) === false) close();
    });
  }
  source.addEventListener("error", () => {
    // The server ends a stream when its run or task is over; do not let the browser reconnect.
    if (closed) return;
    close();
    if (onError) onError();
  });
  return { close, get closed() { return closed; } };
}
