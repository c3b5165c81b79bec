// #/services: model services with their replicas, Stop, a gateway token, and a small chat.

import { h, replace, card, table, statusBadge, fmtAgo, fmtTime, confirmButton } from "../dom.js";
import { get, post, enc, attempt, banner } from "../api.js";

const REFRESH_MS = 5000;

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h("textarea", { class: "offscreen" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 1500);
}

function replicaResources(r) {
  const res = r.resources || {};
  const parts = [];
  if (res.cpu != null) parts.push(`${res.cpu} cpu`);
  if (res.mem != null && String(res.mem) !== "0") parts.push(String(res.mem));
  if (res.gpus && res.gpus.length) parts.push(res.gpus.map((g) => `gpu #${g.index} × ${g.share}`).join(", "));
  return parts.join(" · ") || "–";
}

function replicaCounts(s) {
  const opts = s.options || {};
  const live = (s.replicas || []).filter((r) => !["TERMINATED", "STOPPED"].includes(String(r.status).toUpperCase()));
  const bounds = opts.min_replicas != null && opts.max_replicas != null && opts.min_replicas !== opts.max_replicas
    ? ` (autoscaling ${opts.min_replicas}–${opts.max_replicas})` : "";
  return `${live.length}${bounds}`;
}

function chatBox(name) {
  const messages = [];
  const log = h("div", { class: "chat-log", "aria-live": "polite" },
    h("p", { class: "muted small" }, "Ask the model something; the whole conversation is sent each time."));
  const input = h("textarea", { rows: 2, placeholder: "Your message", "aria-label": `message to ${name}` });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const reset = h("button", { type: "button", onclick: () => {
    messages.length = 0;
    replace(log, h("p", { class: "muted small" }, "Conversation cleared."));
  } }, "Clear");
  const show = (role, text) => {
    log.append(h("div", { class: `chat-msg ${role}` }, h("span", { class: "chat-role" }, role === "user" ? "you" : role), text));
    log.scrollTop = log.scrollHeight;
  };
  const form = h("form", { class: "chat", onsubmit: (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    attempt(async () => {
      messages.push({ role: "user", content: text });
      show("user", text);
      input.value = "";
      try {
        const answer = await post(`/api/services/${enc(name)}/chat`, { messages, max_tokens: 256 });
        messages.push({ role: "assistant", content: answer.content });
        show("assistant", answer.content);
      } catch (err) {
        messages.pop();
        show("error", err.message);
      }
    }, { button: send });
  } }, log, input, h("div", { class: "row" }, send, reset));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  return form;
}

function serviceCard(service) {
  const statusArea = h("div", {});
  const tokenArea = h("div", { class: "token-area" });
  const stop = confirmButton({ class: "danger", "data-action": "stop" }, "Stop",
    "Click again to stop", (button) => attempt(async () => {
      fill(await post(`/api/services/${enc(service.name)}/stop`));
      banner(`Stopping ${service.name}.`, "info");
    }, { button }));
  const tokenButton = h("button", { type: "button", "data-action": "token", onclick: () => attempt(async () => {
    const answer = await post(`/api/services/${enc(service.name)}/token`, { hours: 24 });
    const field = h("input", { type: "text", readonly: true, value: answer.token, class: "mono grow",
      "aria-label": "service token" });
    const copy = h("button", { type: "button", class: "small", onclick: () => copyText(answer.token, copy) }, "Copy");
    replace(tokenArea, h("div", { class: "row" }, field, copy),
      h("p", { class: "muted small" }, `Expires ${fmtTime(answer.expires_at)}. Send it as Authorization: Bearer … to the endpoint.`));
  }, { button: tokenButton }) }, "Token");

  const head = h("div", { class: "card-head" },
    h("h2", {}, service.name),
    h("div", { class: "actions" }, tokenButton, stop));
  const el = h("section", { class: "card service", "data-service": service.name }, head, statusArea, tokenArea,
    h("details", { class: "chat-details" }, h("summary", {}, "Chat with this model"), chatBox(service.name)));

  function fill(s) {
    const state = String(s.status || "").toLowerCase();
    stop.hidden = ["stopped", "failed"].includes(state);
    tokenButton.hidden = !!s.public || stop.hidden;
    el.dataset.status = s.status || "";
    replace(statusArea,
      h("dl", { class: "facts" },
        h("dt", {}, "Status"), h("dd", {}, statusBadge(s.status)),
        h("dt", {}, "Model"), h("dd", {}, s.model || "–"),
        h("dt", {}, "Runtime"), h("dd", {}, s.runtime || "–"),
        h("dt", {}, "Endpoint"), h("dd", {}, s.endpoint ? h("code", { class: "break" }, s.endpoint) : "–"),
        h("dt", {}, "Access"), h("dd", {}, s.public ? "public" : "token"),
        h("dt", {}, "Replicas"), h("dd", {}, replicaCounts(s)),
        h("dt", {}, "Updated"), h("dd", { title: fmtTime(s.updated_at) }, fmtAgo(s.updated_at))),
      s.message ? h("p", { class: "run-message" }, s.message) : null,
      table(["Replica", "Status", "Port", "Restarts", "Resources", "Message"],
        (s.replicas || []).map((r) => [String(r.number), statusBadge(r.status), r.port ?? "–",
          String(r.restarts ?? 0), replicaResources(r), h("span", { class: "clamp" }, r.message || "")]),
        "No replicas."));
  }
  fill(service);
  return { el, fill };
}

export async function servicesView(ctx) {
  const list = h("div", { class: "stack" });
  const cards = new Map();
  let timer = null;
  ctx.onLeave(() => clearTimeout(timer));
  const load = async () => {
    clearTimeout(timer);
    try {
      const services = await get("/api/services");
      if (!ctx.alive()) return;
      const seen = new Set();
      for (const service of services) {
        seen.add(service.name);
        if (cards.has(service.name)) cards.get(service.name).fill(service);
        else {
          const c = serviceCard(service);
          cards.set(service.name, c);
          list.append(c.el);
        }
      }
      for (const [name, c] of cards) {
        if (!seen.has(name)) { c.el.remove(); cards.delete(name); }
      }
      const empty = list.querySelector(".empty");
      if (!services.length && !empty) {
        list.append(h("section", { class: "card empty" }, h("p", { class: "muted" },
          "No services. Start one with ", h("code", {}, "conveyor serve MODEL_DIR"), " or a pipeline task with a service block.")));
      } else if (services.length && empty) empty.remove();
    } catch (err) {
      if (ctx.alive()) banner(`Services: ${err.message}`);
    }
    if (ctx.alive()) timer = setTimeout(load, REFRESH_MS);
  };
  replace(ctx.root, h("div", { class: "page-head" }, h("h1", {}, "Services")), list);
  await load();
}
