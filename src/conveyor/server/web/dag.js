// The pipeline's DAG as SVG, laid out left to right: a task's layer is the longest path from
// a root to it, and within a layer tasks are ordered by the mean position of their parents.

import { h, s, clear } from "./dom.js";

const BOX_W = 168;
const BOX_H = 54;
const GAP_X = 64;
const GAP_Y = 22;
const PAD = 16;
let markerCount = 0;

/** Layers of the graph: [[name, ...], ...]; unknown dependencies are ignored, cycles broken. */
export function layout(names, dependencies) {
  const known = new Set(names);
  const parents = Object.fromEntries(
    names.map((n) => [n, (dependencies[n] || []).filter((d) => known.has(d) && d !== n)]));
  const layerOf = {};
  const visiting = new Set();
  const depth = (name) => {
    if (name in layerOf) return layerOf[name];
    if (visiting.has(name)) return 0; // a cycle: the validator reports it, we just draw
    visiting.add(name);
    let layer = 0;
    for (const parent of parents[name]) layer = Math.max(layer, depth(parent) + 1);
    visiting.delete(name);
    layerOf[name] = layer;
    return layer;
  };
  names.forEach(depth);
  const layers = [];
  names.forEach((name) => {
    (layers[layerOf[name]] ||= []).push(name);
  });
  const position = {};
  layers.forEach((layer, index) => {
    if (index > 0) {
      const mean = (name) => {
        const ps = parents[name].filter((p) => p in position);
        return ps.length ? ps.reduce((sum, p) => sum + position[p], 0) / ps.length : Infinity;
      };
      const keyed = layer.map((name, i) => ({ name, key: mean(name), i }));
      keyed.sort((a, b) => (a.key - b.key) || (a.i - b.i));
      layers[index] = keyed.map((k) => k.name);
    }
    // positions are centred so that layers of different sizes line up on their middles
    const offset = -(layers[index].length - 1) / 2;
    layers[index].forEach((name, i) => { position[name] = offset + i; });
  });
  return { layers: layers.filter(Boolean), parents };
}

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Draw the DAG into `container`. tasks: [{name, status?, detail?}]; dependencies: {task: [deps]}.
 * Returns {update(tasks), select(name)}; onSelect(name) is called when a box is clicked.
 */
export function drawDag(container, tasks, dependencies, { onSelect, selected } = {}) {
  clear(container);
  const names = tasks.map((t) => t.name);
  const { layers, parents } = layout(names, dependencies || {});
  const tallest = Math.max(1, ...layers.map((l) => l.length));
  const width = PAD * 2 + layers.length * BOX_W + Math.max(0, layers.length - 1) * GAP_X;
  const height = PAD * 2 + tallest * BOX_H + (tallest - 1) * GAP_Y;
  const at = {};
  layers.forEach((layer, li) => {
    const top = PAD + ((tallest - layer.length) * (BOX_H + GAP_Y)) / 2;
    layer.forEach((name, i) => {
      at[name] = { x: PAD + li * (BOX_W + GAP_X), y: top + i * (BOX_H + GAP_Y) };
    });
  });

  const marker = `dag-arrow-${(markerCount += 1)}`;
  const svg = s("svg", {
    class: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `pipeline graph with ${names.length} tasks`,
  });
  svg.append(s("defs", {},
    s("marker", { id: marker, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7,
      markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "dag-arrowhead" }))));

  const edges = s("g", { class: "dag-edges" });
  for (const name of names) {
    for (const parent of parents[name]) {
      const a = at[parent];
      const b = at[name];
      const x1 = a.x + BOX_W;
      const y1 = a.y + BOX_H / 2;
      const x2 = b.x - 2;
      const y2 = b.y + BOX_H / 2;
      const bend = Math.max(24, (x2 - x1) / 2);
      const d = x2 > x1
        ? `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`
        : `M ${x1} ${y1} C ${x1 + 60} ${y1 - 60}, ${x2 - 60} ${y2 - 60}, ${x2} ${y2}`; // a cycle
      edges.append(s("path", { d, class: "dag-edge", "marker-end": `url(#${marker})`,
        "data-from": parent, "data-to": name }));
    }
  }
  svg.append(edges);

  const nodes = {};
  for (const task of tasks) {
    const { x, y } = at[task.name];
    const status = s("text", { x: x + 12, y: y + 38, class: "dag-status" });
    const label = s("text", { x: x + 12, y: y + 21, class: "dag-label" }, shorten(task.name, 20));
    const title = s("title", {});
    const group = s("g", {
      class: "dag-node", tabindex: 0, role: "button", "data-task": task.name,
      "aria-label": `task ${task.name}`,
    }, title, s("rect", { x, y, width: BOX_W, height: BOX_H, rx: 8, ry: 8, class: "dag-box" }),
    label, status);
    if (onSelect) {
      group.addEventListener("click", () => onSelect(task.name));
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          onSelect(task.name);
        }
      });
    }
    nodes[task.name] = { group, status, title };
    svg.append(group);
  }

  const update = (list) => {
    for (const task of list) {
      const node = nodes[task.name];
      if (!node) continue;
      const st = task.status || "";
      node.group.setAttribute("data-status", st);
      node.group.setAttribute("class", `dag-node${st ? ` status-${st}` : ""}${
        node.group.classList.contains("selected") ? " selected" : ""}`);
      const text = task.detail !== undefined ? task.detail : st.replace("_", " ");
      node.status.textContent = shorten(text, 24);
      node.title.textContent = `${task.name}${text ? ` — ${text}` : ""}`;
    }
  };
  const select = (name) => {
    for (const [key, node] of Object.entries(nodes)) {
      node.group.classList.toggle("selected", key === name);
    }
  };
  update(tasks);
  if (selected) select(selected);
  container.append(h("div", { class: "dag-scroll" }, svg));
  return { update, select, svg };
}
