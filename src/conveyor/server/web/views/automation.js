// A pipeline's schedules (cron) and notifications (webhooks).

import { h, replace, table, statusBadge, fmtTime, fmtAgo, confirmButton } from "../dom.js";
import { get, post, del, enc, attempt, banner } from "../api.js";

function removeButton(action) {
  return confirmButton({ class: "small danger", "data-action": "remove" }, "Remove", "Sure?",
    (button) => attempt(action, { button }));
}

export async function loadSchedules(container, pipeline) {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const refresh = async () => {
    try {
      const schedules = await get(`/api/schedules?pipeline=${enc(pipeline.name)}`);
      replace(list, table(["Cron", "Time zone", "Skips", "Next due", "Enabled", ""],
        schedules.map((sc) => ({ attrs: { "data-schedule": sc.id }, cells: [
          h("code", {}, sc.cron), sc.timezone || "UTC", (sc.skip || []).join(", ") || "–",
          sc.next_due ? h("span", { title: fmtTime(sc.next_due) }, fmtAgo(sc.next_due)) : "–",
          sc.enabled === false ? "no" : "yes",
          removeButton(async () => { await del(`/api/schedules/${enc(sc.id)}`); await refresh(); }),
        ] })), "No schedule: this pipeline runs only when started."));
    } catch (err) {
      replace(list, h("p", { class: "error-text" }, `Schedules: ${err.message}`));
    }
  };
  const cron = h("input", { type: "text", name: "cron", placeholder: "0 3 * * *", required: true,
    autocomplete: "off" });
  const tz = h("input", { type: "text", name: "timezone", value: "UTC", size: 10 });
  const skips = pipeline.tasks.map((t) => h("label", { class: "check" },
    h("input", { type: "checkbox", value: t.name }), t.name));
  const add = h("button", { type: "submit", class: "primary" }, "Add schedule");
  const form = h("form", { class: "stack", onsubmit: (event) => {
    event.preventDefault();
    attempt(async () => {
      const body = { pipeline: pipeline.name, cron: cron.value.trim(), timezone: tz.value.trim() || "UTC",
        skip: skips.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value) };
      await post("/api/schedules", body);
      cron.value = "";
      banner("Schedule added.", "info");
      await refresh();
    }, { form, button: add });
  } },
  h("div", { class: "row wrap" },
    h("label", { class: "field", "data-field": "cron" }, h("span", { class: "label" }, "Cron (min hour day month weekday)"), cron),
    h("label", { class: "field", "data-field": "timezone" }, h("span", { class: "label" }, "Time zone"), tz)),
  skips.length ? h("div", { class: "checks", "data-field": "skip" }, h("span", { class: "label" }, "Skip:"), skips) : null,
  h("div", { class: "row" }, add));
  replace(container, list, form);
  await refresh();
}

export async function loadNotifications(container, pipeline) {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const refresh = async () => {
    try {
      const items = await get(`/api/notifications?pipeline=${enc(pipeline.name)}`);
      replace(list, table(["URL", "On success", "On failure", "Slack", "Deliveries", ""],
        items.map((n) => {
          const deliveries = h("div", { class: "deliveries" });
          const show = h("button", { type: "button", class: "small", onclick: () => attempt(async () => {
            const rows = await get(`/api/notifications/${enc(n.id)}/deliveries`);
            replace(deliveries, rows.length ? h("ul", { class: "plain" }, rows.slice(0, 5).map((d) => h("li", {},
              statusBadge(d.status), " ", h("a", { href: `#/runs/${enc(d.run_id)}`, class: "mono" }, d.run_id),
              d.response_code ? ` · HTTP ${d.response_code}` : "", d.message ? ` · ${d.message}` : "")))
              : h("span", { class: "muted" }, "none yet"));
          }, { button: show }) }, "Show");
          return { attrs: { "data-notification": n.id }, cells: [
            h("code", { class: "break" }, n.url), n.on_success ? "yes" : "no", n.on_failure ? "yes" : "no",
            n.slack ? "yes" : "no", h("div", {}, show, deliveries),
            removeButton(async () => { await del(`/api/notifications/${enc(n.id)}`); await refresh(); }),
          ] };
        }), "No notification: nobody is told when a run ends."));
    } catch (err) {
      replace(list, h("p", { class: "error-text" }, `Notifications: ${err.message}`));
    }
  };
  const url = h("input", { type: "url", name: "url", placeholder: "https://hooks.example.com/…", required: true });
  const onSuccess = h("input", { type: "checkbox", checked: true });
  const onFailure = h("input", { type: "checkbox", checked: true });
  const slack = h("input", { type: "checkbox" });
  const add = h("button", { type: "submit", class: "primary" }, "Add notification");
  const form = h("form", { class: "stack", onsubmit: (event) => {
    event.preventDefault();
    attempt(async () => {
      await post("/api/notifications", { pipeline: pipeline.name, url: url.value.trim(),
        on_success: onSuccess.checked, on_failure: onFailure.checked, slack: slack.checked });
      url.value = "";
      banner("Notification added.", "info");
      await refresh();
    }, { form, button: add });
  } },
  h("label", { class: "field", "data-field": "url" }, h("span", { class: "label" }, "Webhook URL"), url),
  h("div", { class: "row wrap" },
    h("label", { class: "check" }, onSuccess, "on success"),
    h("label", { class: "check" }, onFailure, "on failure"),
    h("label", { class: "check" }, slack, "Slack format")),
  h("div", { class: "row" }, add));
  replace(container, list, form);
  await refresh();
}
