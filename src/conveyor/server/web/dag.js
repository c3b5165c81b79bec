// The pipeline's DAG as SVG, laid out left to right: a task's layer is the longest path from
// a root to it, and within a layer tasks are ordered by the mean position of their parents.

import { h, s, clear } from "./dom.js";

const BOX_W = 168;
const BOX_H = 54;
const GAP_X = 64;
const GAP_Y = 22;
const VIRTUAL_H = 8; // the slot of an edge passing through a layer
const PAD = 16;
let markerCount = 0;

/**
 * Layers of the graph, left to right: [[id, ...], ...]. An edge that spans several layers
 * passes through a virtual node ("~parent>child#i") in each layer between, so that it is
 * routed between the boxes. Order in a layer: the mean position of the parents, refined by a
 * sweep back (mean position of the children) and one more forward.
 * Unknown dependencies are ignored; a cycle is broken where it is found.
 */
export function layout(names, dependencies) {
  const known = new Set(names);
  const parents = Object.fromEntries(
    names.map((n) => [n, [...new Set((dependencies[n] || []).filter((d) => known.has(d) && d !== n))]]));
  const layerOf = {};
  const visiting = new Set();
  const depth = (name) => {
    if (name in layerOf) return layerOf[name];
    if (visiting.has(name)) return -1; // a cycle: the validator reports it, we just draw
    visiting.add(name);
    let layer = 0;
    for (const parent of parents[name]) layer = Math.max(layer, depth(parent) + 1);
    visiting.delete(name);
    layerOf[name] = layer;
    return layer;
  };
  names.forEach(depth);

  // virtual nodes for long edges; `up` and `down` are the neighbours in the layered graph
  const up = {};
  const down = {};
  const layers = [];
  const place = (id, layer) => {
    (layers[layer] ||= []).push(id);
    up[id] ||= [];
    down[id] ||= [];
  };
  names.forEach((name) => place(name, layerOf[name]));
  const routes = []; // [{from, to, via: [virtual ids]}]
  for (const child of names) {
    for (const parent of parents[child]) {
      const via = [];
      if (layerOf[parent] < layerOf[child]) {
        for (let layer = layerOf[parent] + 1; layer < layerOf[child]; layer += 1) {
          const id = `~${parent}>${child}#${layer}`;
          place(id, layer);
          via.push(id);
        }
        const chain = [parent, ...via, child];
        for (let i = 1; i < chain.length; i += 1) {
          up[chain[i]].push(chain[i - 1]);
          down[chain[i - 1]].push(chain[i]);
        }
      }
      routes.push({ from: parent, to: child, via });
    }
  }
  const filled = layers.filter(Boolean);
  const position = {};
  const number = (layer) => layer.forEach((id, i) => { position[id] = i - (layer.length - 1) / 2; });
  const sortBy = (layer, neighbours) => {
    const keyed = layer.map((id, i) => {
      const ns = neighbours[id].filter((n) => n in position);
      return { id, i, key: ns.length ? ns.reduce((sum, n) => sum + position[n], 0) / ns.length : position[id] ?? i };
    });
    keyed.sort((a, b) => (a.key - b.key) || (a.i - b.i));
    return keyed.map((k) => k.id);
  };
  filled.forEach((layer, index) => {
    if (index > 0) filled[index] = sortBy(layer, up);
    number(filled[index]);
  });
  for (let index = filled.length - 2; index >= 0; index -= 1) {
    filled[index] = sortBy(filled[index], down);
    number(filled[index]);
  }
  for (let index = 1; index < filled.length; index += 1) {
    filled[index] = sortBy(filled[index], up);
    number(filled[index]);
  }
  return { layers: filled, parents, routes, isVirtual: (id) => !known.has(id) };
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
  const { layers, routes, isVirtual } = layout(names, dependencies || {});
  const slot = (id) => (isVirtual(id) ? VIRTUAL_H : BOX_H);
  const extent = (layer) => layer.reduce((sum, id) => sum + slot(id), 0) + (layer.length - 1) * GAP_Y;
  const tallest = Math.max(BOX_H, ...layers.map(extent));
  const width = PAD * 2 + layers.length * BOX_W + Math.max(0, layers.length - 1) * GAP_X;
  const height = PAD * 2 + tallest;
  const at = {};
  layers.forEach((layer, li) => {
    let y = PAD + (tallest - extent(layer)) / 2;
    for (const id of layer) {
      at[id] = { x: PAD + li * (BOX_W + GAP_X), y, h: slot(id) };
      y += slot(id) + GAP_Y;
    }
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
  const curve = (x1, y1, x2, y2) => {
    const bend = Math.max(20, (x2 - x1) / 2);
    return ` C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`;
  };
  for (const { from, to, via } of routes) {
    const a = at[from];
    const b = at[to];
    let d;
    if (b.x > a.x) {
      let x = a.x + BOX_W;
      let y = a.y + a.h / 2;
      d = `M ${x} ${y}`;
      for (const id of via) { // straight through each virtual slot, curves in the gaps
        const v = at[id];
        const vy = v.y + v.h / 2;
        d += curve(x, y, v.x, vy) + ` L ${v.x + BOX_W} ${vy}`;
        x = v.x + BOX_W;
        y = vy;
      }
      d += curve(x, y, b.x - 2, b.y + b.h / 2);
    } else { // a cycle: loop back over the top
      const x1 = a.x + BOX_W;
      const y1 = a.y + a.h / 2;
      d = `M ${x1} ${y1} C ${x1 + 60} ${y1 - 80}, ${b.x - 60} ${b.y - 40}, ${b.x - 2} ${b.y + b.h / 2}`;
    }
    edges.append(s("path", { d, class: "dag-edge", "marker-end": `url(#${marker})`,
      "data-from": from, "data-to": to }));
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
