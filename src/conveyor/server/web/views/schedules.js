// #/schedules: every schedule, when it is due next, and its recent ticks.

import { h, replace, card, table, statusBadge, fmtAgo, fmtTime, confirmButton } from "../dom.js";
import { get, del, enc, attempt } from "../api.js";

export async function schedulesView(ctx) {
  const schedules = await get("/api/schedules");
  if (!ctx.alive()) return;
  const cards = schedules.map((sc) => {
    const ticks = h("div", {}, h("p", { class: "muted" }, "Loading ticks…"));
    get(`/api/schedules/${enc(sc.id)}/ticks`).then((rows) => {
      replace(ticks, table(["Due", "Outcome", "Run", "Message"],
        rows.slice(0, 10).map((t) => [h("span", { title: fmtTime(t.due_at) }, fmtTime(t.due_at)),
          statusBadge(t.outcome),
          t.run_id ? h("a", { href: `#/runs/${enc(t.run_id)}`, class: "mono" }, t.run_id) : "–",
          h("span", { class: "clamp" }, t.message || "")]),
        "No ticks yet."));
    }).catch((err) => replace(ticks, h("p", { class: "error-text" }, err.message)));
    const remove = confirmButton({ class: "small danger" }, "Remove", "Sure?",
      (button) => attempt(async () => {
        await del(`/api/schedules/${enc(sc.id)}`);
        el.remove();
      }, { button }));
    const el = h("section", { class: "card", "data-schedule": sc.id },
      h("div", { class: "card-head" },
        h("h2", {}, h("a", { href: `#/pipelines/${enc(sc.pipeline)}?tab=automation` }, sc.pipeline), " ",
          h("code", {}, sc.cron)),
        h("div", { class: "actions" }, remove)),
      h("dl", { class: "facts" },
        h("dt", {}, "Next due"), h("dd", { title: fmtTime(sc.next_due) }, sc.next_due ? `${fmtTime(sc.next_due)} (${fmtAgo(sc.next_due)})` : "–"),
        h("dt", {}, "Time zone"), h("dd", {}, sc.timezone || "UTC"),
        h("dt", {}, "Skips"), h("dd", {}, (sc.skip || []).join(", ") || "–"),
        h("dt", {}, "Enabled"), h("dd", {}, sc.enabled === false ? "no" : "yes")),
      h("h3", {}, "Recent ticks"), ticks);
    return el;
  });
  replace(ctx.root, h("div", { class: "page-head" }, h("h1", {}, "Schedules")),
    cards.length ? h("div", { class: "stack" }, cards)
      : card("No schedules", h("p", { class: "muted" }, "Add one on a pipeline's page, under Schedules & notifications.")));
}
