// mixer's dashboard: the service graph (Cytoscape.js + dagre layout), live; per-edge metrics on
// click; recent traces and a waterfall of one trace. Reads /api/graph and /zipkin/api/v2/*.
"use strict";

const REFRESH_MS = 3000;
const $ = (sel) => document.querySelector(sel);

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

function fmt(value, digits = 2) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

const state = { topology: "", selected: null, slowest: false, graph: null };

function makeGraph() {
  if (typeof cytoscape === "undefined") {
    $("#library-missing").hidden = false;
    return null;
  }
  return cytoscape({
    container: $("#graph"),
    wheelSensitivity: 0.3,
    style: [
      { selector: "node", style: {
          "label": "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4,
          "background-color": "#3d7fd9", "width": 26, "height": 26 } },
      { selector: "node[kind = 'service']", style: {
          "shape": "triangle", "background-color": "#7a4fd1" } },
      { selector: "node[kind = 'unknown']", style: { "background-color": "#8a939c" } },
      { selector: "edge", style: {
          "curve-style": "bezier", "target-arrow-shape": "triangle", "width": 2,
          "line-color": "#7d8893", "target-arrow-color": "#7d8893",
          "label": "data(label)", "font-size": 9, "text-rotation": "autorotate",
          "text-background-color": "#fff", "text-background-opacity": 0.8 } },
      { selector: "edge[error_rate > 0]", style: {
          "line-color": "#e09a3c", "target-arrow-color": "#e09a3c" } },
      { selector: "edge[error_rate >= 0.05]", style: {
          "line-color": "#d9463d", "target-arrow-color": "#d9463d" } },
      { selector: "edge[?mtls]", style: { "line-style": "solid", "source-arrow-shape": "square" } },
      { selector: ":selected", style: { "overlay-opacity": 0.15, "overlay-color": "#1d2630" } },
    ],
  });
}

function edgeLabel(e) {
  return `${fmt(e.rps)} rps` + (e.error_rate > 0 ? ` · ${fmt(e.error_rate * 100, 1)}% err` : "");
}

function render(data) {
  const cy = state.graph;
  const topology = data.nodes.map((n) => n.id).join() + "|" + data.edges.map((e) => e.id).join();
  if (cy) {
    cy.batch(() => {
      const keep = new Set([...data.nodes.map((n) => n.id), ...data.edges.map((e) => e.id)]);
      cy.elements().forEach((el) => { if (!keep.has(el.id())) el.remove(); });
      for (const n of data.nodes) {
        const el = cy.getElementById(n.id);
        if (el.empty()) cy.add({ group: "nodes", data: n });
        else el.data(n);
      }
      for (const e of data.edges) {
        const d = { ...e, label: edgeLabel(e) };
        const el = cy.getElementById(e.id);
        if (el.empty()) cy.add({ group: "edges", data: d });
        else el.data(d);
      }
    });
    if (topology !== state.topology) {
      cy.layout({ name: "dagre", rankDir: "LR", nodeSep: 30, rankSep: 90 }).run();
    }
  }
  state.topology = topology;
  document.body.dataset.window = String(data.window_seconds);
  renderTable(data);
  if (state.selected) showDetails(state.selected.kind, state.selected.id, data);
  $("#status").textContent =
    `${data.nodes.length} nodes, ${data.edges.length} edges · updated ${new Date().toLocaleTimeString()}`;
}

function renderTable(data) {
  const byId = Object.fromEntries(data.nodes.map((n) => [n.id, n]));
  const body = $("#edge-table tbody");
  body.replaceChildren();
  for (const e of data.edges) {
    const tr = document.createElement("tr");
    tr.dataset.edge = e.id;
    for (const v of [byId[e.source].label, byId[e.target].label, e.protocol, fmt(e.rps),
                     `${fmt(e.error_rate * 100, 1)}%`, fmt(e.p50_ms), fmt(e.p99_ms),
                     e.mtls === null ? "–" : e.mtls ? "yes" : "no"]) {
      tr.append(text("td", v));
    }
    tr.addEventListener("click", () => select("edge", e.id));
    body.append(tr);
  }
}

function showDetails(kind, id, data) {
  const list = $("#detail-list");
  list.replaceChildren();
  const item = (k, v) => { list.append(text("dt", k), text("dd", v)); };
  if (kind === "edge") {
    const e = data.edges.find((x) => x.id === id);
    if (!e) { item("edge", "no traffic in this window"); return; }
    item("from", e.source); item("to", e.target); item("protocol", e.protocol);
    item("requests", String(e.requests)); item("req/s", fmt(e.rps));
    item("error rate", `${fmt(e.error_rate * 100, 2)}%`);
    item("p50", `${fmt(e.p50_ms)} ms`); item("p99", `${fmt(e.p99_ms)} ms`);
    item("mTLS", e.mtls === null ? "unknown" : e.mtls ? "yes" : "no");
  } else {
    const n = data.nodes.find((x) => x.id === id);
    if (!n) return;
    item("kind", n.kind); item("name", n.name); item("namespace", n.namespace);
    if (n.app) item("app", n.app);
    if (n.version) item("version", n.version);
  }
}

async function select(kind, id) {
  state.selected = { kind, id };
  $("#hint").hidden = true;
  const data = await (await fetch(`/api/graph?window=${$("#window").value}`)).json();
  showDetails(kind, id, data);
}

async function refresh() {
  try {
    const resp = await fetch(`/api/graph?window=${$("#window").value}`);
    render(await resp.json());
    await refreshTraces();
  } catch (err) {
    $("#status").textContent = `mixer unreachable: ${err}`;
  }
}

async function refreshTraces() {
  const traces = await (await fetch("/zipkin/api/v2/traces?limit=30")).json();
  const rows = traces.map((spans) => {
    const root = spans.find((s) => !s.parentId) || spans[0];
    const start = Math.min(...spans.map((s) => s.timestamp || Infinity));
    const end = Math.max(...spans.map((s) => (s.timestamp || 0) + (s.duration || 0)));
    return { id: root.traceId, name: root.name || "", service: root.localEndpoint?.serviceName || "",
             ms: (end - start) / 1000, spans: spans.length };
  });
  if (state.slowest) rows.sort((a, b) => b.ms - a.ms);
  const list = $("#trace-list");
  list.replaceChildren();
  for (const r of rows.slice(0, 15)) {
    const li = text("li", `${r.service} ${r.name} — ${fmt(r.ms, 1)} ms, ${r.spans} spans`);
    li.dataset.trace = r.id;
    li.addEventListener("click", () => showTrace(r.id));
    list.append(li);
  }
}

function orderSpans(spans) {
  const children = new Map();
  const ids = new Set(spans.map((s) => s.id));
  for (const s of spans) {
    const parent = s.parentId && ids.has(s.parentId) ? s.parentId : "";
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const out = [];
  const walk = (parent, depth) => {
    const list = (children.get(parent) || []).sort((a, b) => (a.timestamp || 0) - (b.timestamp || 0));
    for (const s of list) { out.push([s, depth]); walk(s.id, depth + 1); }
  };
  walk("", 0);
  return out;
}

async function showTrace(traceId) {
  const resp = await fetch(`/zipkin/api/v2/trace/${traceId}`);
  if (!resp.ok) return;
  const spans = await resp.json();
  const start = Math.min(...spans.map((s) => s.timestamp || Infinity));
  const end = Math.max(...spans.map((s) => (s.timestamp || 0) + (s.duration || 0)));
  const total = Math.max(end - start, 1);
  const pane = $("#waterfall");
  pane.replaceChildren();
  for (const [s, depth] of orderSpans(spans)) {
    const row = document.createElement("div");
    row.className = "row";
    row.dataset.span = s.id;
    const name = text("span", `${s.localEndpoint?.serviceName || "?"}: ${s.name || ""}`, "name");
    name.style.paddingLeft = `${depth}em`;
    name.title = name.textContent;
    const track = document.createElement("span");
    track.className = "track";
    const bar = document.createElement("span");
    bar.className = "bar" + (s.tags && s.tags.error !== undefined ? " error" : "");
    bar.style.left = `${(100 * ((s.timestamp || start) - start)) / total}%`;
    bar.style.width = `${Math.max((100 * (s.duration || 0)) / total, 0.3)}%`;
    track.append(bar);
    row.append(name, track, text("span", `${fmt((s.duration || 0) / 1000)} ms`, "ms"));
    pane.append(row);
  }
  $("#trace-id").textContent = traceId;
  $("#waterfall-pane").hidden = false;
}

async function init() {
  state.graph = makeGraph();
  if (state.graph) {
    state.graph.on("tap", "node", (ev) => select("node", ev.target.id()));
    state.graph.on("tap", "edge", (ev) => select("edge", ev.target.id()));
    window.pymeshGraph = state.graph; // for people poking at the page (and its tests)
  }
  $("#window").addEventListener("change", refresh);
  $("#slowest").addEventListener("click", () => { state.slowest = !state.slowest; refreshTraces(); });
  $("#close-trace").addEventListener("click", () => { $("#waterfall-pane").hidden = true; });
  const cfg = await (await fetch("/api/config")).json();
  if (cfg.prometheus_url) {
    $("#prometheus").href = cfg.prometheus_url;
    $("#prometheus").hidden = false;
  }
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

init();
