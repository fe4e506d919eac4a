// nbflow DAG widget: hand-written ESM for anywidget (no build step).
//
// The kernel sends the Graphviz SVG once per structure change ("svg"), a full
// "snapshot" of node infos now and then, and small "delta"s (at most ~10/s).
// Nodes are found by their <title> text read through the DOM (Graphviz escapes
// characters such as "-", the DOM decodes them), then recoloured in place.
//
// No state is named here: the kernel sends the legend (states in order), their
// styles, and "state_rules" (nbflow.widget.layout.state_rules): which state each
// one is drawn as, the initial state, the states a task can still be cancelled in,
// and how each state's status line reads. Which buttons show ("available") and the
// run's part of the status line ("status_line") come from the kernel too.

const NS = "http://www.w3.org/2000/svg";

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function fmtTime(t) {
  if (t == null) return "";
  return new Date(t * 1000).toLocaleTimeString();
}

function fmtSeconds(s) {
  if (s == null || !isFinite(s)) return "";
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${Math.round(s - 60 * m)}s`;
}

function render({ model, el }) {
  const view = {
    nodes: {},        // name -> info {s, a, t0, t1, w, d, n, c, err, res, out, stderr}
    seq: -1,
    byName: new Map(),// name -> {g, shape, status, bar, barBox}
    edges: [],        // [{g, u, v}]
    selected: null,
    scale: 1, tx: 0, ty: 0,
    paints: 0,
  };
  el.classList.add("nbf-root");

  // -- states, from the kernel ------------------------------------------------------
  const rules = () => model.get("state_rules") || {};
  function drawnAs(s) {
    const r = rules();
    const state = s || r.initial;
    return (r.drawn_as || {})[state] || state;
  }
  function styleOf(state) {
    const styles = model.get("styles");
    return styles[state] || styles[rules().initial];
  }
  const lineOf = (s) => (rules().lines || {})[s];

  // -- layout of the widget ----------------------------------------------------
  const status = h("span", { class: "nbf-status" });
  const dashboard = h("a", { class: "nbf-dashboard", target: "_blank", rel: "noopener",
                             title: "the dask dashboard of this run's cluster", hidden: "" },
    "dask dashboard ↗");
  const filter = h("select", { class: "nbf-filter", title: "show part of the graph" },
    h("option", { value: "all" }, "all tasks"),
    h("option", { value: "up" }, "upstream of selected"),
    h("option", { value: "down" }, "downstream of selected"),
    h("option", { value: "both" }, "up- and downstream"));
  const can = (action) => (model.get("available") || []).includes(action);
  const cancelRun = h("button", { class: "nbf-cancel-run", hidden: "",
                                  title: "cancel the run (a blocking run: interrupt the kernel)",
                                  onclick: () => model.send({ action: "cancel" }) }, "■ cancel run");
  const rerunFailed = h("button", { class: "nbf-rerun-failed", hidden: "",
                                    title: "re-run the failed tasks and what depends on them (the rest comes from the cache)",
                                    onclick: () => model.send({ action: "rerun_failed" }) }, "↻ re-run failed");
  function showButtons() {
    cancelRun.hidden = !can("cancel");
    rerunFailed.hidden = !can("rerun_failed");
    el.dataset.available = (model.get("available") || []).join(" ");
  }
  const toolbar = h("div", { class: "nbf-toolbar" }, cancelRun, rerunFailed,
    h("button", { title: "zoom in", onclick: () => zoom(1.25) }, "+"),
    h("button", { title: "zoom out", onclick: () => zoom(0.8) }, "−"),
    h("button", { title: "fit to view", onclick: () => fit() }, "fit"),
    filter, status, dashboard);
  const legend = h("div", { class: "nbf-legend" });
  const canvas = h("div", { class: "nbf-canvas" });
  const stage = h("div", { class: "nbf-stage" }, canvas);
  const panel = h("div", { class: "nbf-panel", hidden: "" });
  el.append(toolbar, legend, h("div", { class: "nbf-body" }, stage, panel));

  function drawLegend() {
    legend.replaceChildren();
    const styles = model.get("styles");
    for (const state of model.get("legend")) {
      const st = styles[state];
      const sw = document.createElementNS(NS, "svg");
      sw.setAttribute("width", "16"); sw.setAttribute("height", "12");
      const r = document.createElementNS(NS, "rect");
      for (const [k, v] of Object.entries({ x: 1, y: 1, width: 14, height: 10, rx: 2, fill: st.fill,
                                            stroke: st.stroke, "stroke-width": Math.min(2, st.width) })) r.setAttribute(k, v);
      if (st.dash) r.setAttribute("stroke-dasharray", st.dash);
      sw.append(r);
      legend.append(h("span", { class: "nbf-legend-item", "data-state": state }, sw, state));
    }
  }

  // -- the SVG -------------------------------------------------------------------
  function drawSvg() {
    const text = model.get("svg");
    view.byName.clear();
    view.edges = [];
    if (!text) { canvas.replaceChildren(h("div", { class: "nbf-placeholder" }, "laying out…")); return; }
    canvas.innerHTML = text;
    const svg = canvas.querySelector("svg");
    if (!svg) return;
    svg.classList.add("nbf-svg");
    const names = new Map();
    for (const g of svg.querySelectorAll("g.node")) {
      const title = g.querySelector("title");
      if (!title) continue;
      const name = title.textContent;
      const shape = g.querySelector("path, polygon, ellipse");
      const texts = g.querySelectorAll("text");
      const entry = { g, shape, status: texts.length > 1 ? texts[1] : null, bar: null,
                      name: texts.length > 0 ? texts[0] : null, fullName: texts.length > 0 ? texts[0].textContent : "" };
      if (entry.name) entry.name.classList.add("nbf-name");
      if (entry.status) entry.status.classList.add("nbf-state-text");
      g.dataset.name = name;
      view.byName.set(name, entry);
      names.set(name, true);
    }
    const graph = model.get("graph") || {};
    const gn = graph.names || [];
    const key = new Map();
    for (const [u, v] of graph.edges || []) key.set(`${gn[u]}->${gn[v]}`, [gn[u], gn[v]]);
    for (const g of svg.querySelectorAll("g.edge")) {
      const t = g.querySelector("title");
      const uv = t && key.get(t.textContent);
      if (uv) view.edges.push({ g, u: uv[0], v: uv[1] });
    }
    for (const name of view.byName.keys()) paint(name);
    for (const entry of view.byName.values()) fitText(entry.name, entry.fullName, entry);
    applyFilter();
    fit();
    el.dataset.nodes = String(view.byName.size);
  }

  // -- labels that fit their nodes -----------------------------------------------
  // Graphviz sizes a node by its own font metrics and leaves one blank line for the
  // status text, so a long name or status can be wider than the box in the browser:
  // cut it with an ellipsis; the full text stays in a <title> tooltip.
  function roomOf(entry) {
    if (!entry.room) {
      let box = null;
      try { box = entry.shape ? entry.shape.getBBox() : null; } catch (e) { box = null; }
      if (box && box.width > 8) entry.room = box.width - 8;  // 4px each side
    }
    return entry.room || 0;
  }
  function fitText(text, full, entry) {
    if (!text) return;
    text.textContent = full;  // (drops an earlier <title>)
    const room = roomOf(entry);
    if (!room || !text.getComputedTextLength) return;  // not rendered yet: refit later
    if (text.getComputedTextLength() <= room) return;
    let lo = 0, hi = full.length;
    while (lo < hi) {  // the longest prefix that fits with "…"
      const mid = Math.ceil((lo + hi) / 2);
      text.textContent = full.slice(0, mid) + "…";
      if (text.getComputedTextLength() <= room) lo = mid; else hi = mid - 1;
    }
    text.textContent = full.slice(0, lo) + "…";
    const tip = document.createElementNS(NS, "title");
    tip.textContent = full;
    text.append(tip);
    text.classList.add("nbf-cut");
  }
  function fitLabels() {
    for (const entry of view.byName.values()) {
      fitText(entry.name, entry.fullName, entry);
      if (entry.status) fitText(entry.status, entry.statusText || "", entry);
    }
  }
  // a widget drawn while hidden (another tab, a collapsed output) measures nothing: refit
  // once it has a size
  new ResizeObserver(() => fitLabels()).observe(stage);

  // -- painting nodes -----------------------------------------------------------
  function statusLine(info) {
    const s = info.s || rules().initial;
    const line = lineOf(s);
    if (info.n != null) return `${s} ${info.d || 0}/${info.n}`;
    // from the task's own start (the kernel's wall clock) to the browser's wall clock
    // now: right after a page reload too, whenever the view first heard of the task
    if (line === "elapsed" && info.t0) return `${s} ${fmtSeconds(Math.max(0, Date.now() / 1000 - info.t0))}`;
    if (line === "attempt") return `${s} (attempt ${info.a || 1})`;
    if (line === "duration" && info.t0 && info.t1) return `${s} ${fmtSeconds(info.t1 - info.t0)}`;
    return drawnAs(s);
  }

  function paint(name) {
    const entry = view.byName.get(name);
    if (!entry) return;
    const info = view.nodes[name] || { s: rules().initial };
    const state = drawnAs(info.s);
    const st = styleOf(state);
    entry.g.dataset.state = state;
    if (info.t0) entry.g.dataset.t0 = String(info.t0); else delete entry.g.dataset.t0;
    for (const s of model.get("legend")) entry.g.classList.toggle(`nbf-${s}`, s === state);
    if (entry.shape) {
      entry.shape.setAttribute("fill", st.fill);
      entry.shape.setAttribute("stroke", st.stroke);
      entry.shape.setAttribute("stroke-width", st.width);
      if (st.dash) entry.shape.setAttribute("stroke-dasharray", st.dash);
      else entry.shape.removeAttribute("stroke-dasharray");
    }
    if (entry.status) {
      const line = statusLine(info);
      if (line !== entry.statusText || !entry.status.textContent) {
        entry.statusText = line;
        fitText(entry.status, line, entry);
      }
    }
    if (info.n != null) progress(entry, info);
  }

  function progress(entry, info) {
    if (!entry.bar) {
      const box = entry.shape ? entry.shape.getBBox() : entry.g.getBBox();
      const bg = document.createElementNS(NS, "rect");
      const fg = document.createElementNS(NS, "rect");
      const y = box.y + box.height - 6, x = box.x + 6, w = Math.max(0, box.width - 16);
      for (const [r, cls] of [[bg, "nbf-bar-bg"], [fg, "nbf-bar"]]) {
        r.setAttribute("x", x); r.setAttribute("y", y); r.setAttribute("height", 3);
        r.setAttribute("width", cls === "nbf-bar-bg" ? w : 0); r.setAttribute("class", cls);
        entry.g.append(r);
      }
      entry.bar = fg; entry.barWidth = w;
    }
    const frac = info.n ? Math.min(1, (info.d || 0) / info.n) : 0;
    entry.bar.setAttribute("width", String(entry.barWidth * frac));
  }

  function apply(nodes) {
    for (const [name, info] of Object.entries(nodes)) {
      view.nodes[name] = info;
      paint(name);
    }
    view.paints += 1;
    el.dataset.paints = String(view.paints);
    if (view.selected && nodes[view.selected]) showPanel(view.selected);
    updateStatus();
  }

  function onSnapshot() {
    const snap = JSON.parse(model.get("snapshot_json") || "{}");
    if (snap.seq == null || snap.seq <= view.seq) return;
    view.seq = snap.seq;
    view.nodes = {};
    apply(snap.nodes || {});
    for (const name of view.byName.keys()) if (!(name in (snap.nodes || {}))) paint(name);
  }

  function onDelta() {
    const d = model.get("delta") || {};
    if (d.seq == null || d.seq <= view.seq) return;
    view.seq = d.seq;
    apply(d.nodes || {});
  }

  function updateStatus() {
    const counts = {};
    for (const info of Object.values(view.nodes)) {
      const s = drawnAs(info.s);
      counts[s] = (counts[s] || 0) + 1;
    }
    const parts = model.get("legend").filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`);
    const run = model.get("run_status");
    const line = model.get("status_line");
    const layout = model.get("layout_status");
    let text = `${model.get("flow_name")}: ${parts.join(", ")}`;
    if (line) text += ` · ${line}`;
    if (layout === "pending") text += " · laying out…";
    else if (layout !== "ready") text += ` · layout failed: ${layout}`;
    status.textContent = text;
    el.dataset.runStatus = run;
  }

  // Running nodes show elapsed time: repaint them twice a second.
  const ticker = setInterval(() => {
    for (const [name, info] of Object.entries(view.nodes)) if (lineOf(info.s) === "elapsed") paint(name);
  }, 500);

  // -- details panel ------------------------------------------------------------
  function row(label, value) {
    return value === "" || value == null ? null : h("tr", {}, h("th", {}, label), h("td", {}, String(value)));
  }

  function showPanel(name) {
    const info = view.nodes[name] || { s: rules().initial };
    const rows = [
      row("state", info.s),
      row("started", fmtTime(info.t0)),
      row("ended", fmtTime(info.t1)),
      row("duration", info.t0 && info.t1 ? fmtSeconds(info.t1 - info.t0) : ""),
      row("attempts", info.a),
      row("where", info.w),
      row("branches", info.n != null ? `${info.d || 0}/${info.n}` +
        (info.c ? " (" + Object.entries(info.c).map(([k, v]) => `${v} ${k}`).join(", ") + ")" : "") : ""),
      row("skipped because", info.why),
      row("stale because", info.stale),
    ].filter(Boolean);
    const parts = [
      h("div", { class: "nbf-panel-head" }, h("b", {}, name),
        h("button", { class: "nbf-close", title: "close", onclick: () => select(null) }, "×")),
    ];
    // the exception first: the traceback below it can be long
    if (info.exc) parts.push(h("pre", { class: "nbf-exception" }, info.exc));
    parts.push(h("table", { class: "nbf-facts" }, ...rows));
    const buttons = [];
    if (can("rerun"))
      buttons.push(h("button", { class: "nbf-act-rerun", title: "recompute this task and everything downstream",
                                 onclick: () => model.send({ action: "rerun", task: name }) }, "re-run with downstream"));
    if (can("needs"))
      buttons.push(h("button", { class: "nbf-act-needs", title: "run this task and what it needs (cached results are reused)",
                                 onclick: () => model.send({ action: "needs", task: name }) }, "run what it needs"));
    if (can("cancel_task") && (rules().open || []).includes(info.s))
      buttons.push(h("button", { class: "nbf-act-cancel", title: "cancel this task: what depends on it is skipped, the rest of the run goes on",
                                 onclick: () => model.send({ action: "cancel_task", task: name }) }, "cancel task"));
    parts.push(h("div", { class: "nbf-actions" }, ...buttons));
    if (info.err) parts.push(h("h4", {}, "traceback"), h("pre", { class: "nbf-traceback" }, info.err));
    if (info.res) {
      parts.push(h("h4", {}, "result"));
      if (info.res.html != null) { const div = h("div", { class: "nbf-result" }); div.innerHTML = info.res.html; parts.push(div); }
      else parts.push(h("pre", { class: "nbf-result" }, info.res.text));
    }
    if (info.out) parts.push(h("h4", {}, "stdout"), h("pre", { class: "nbf-stdout" }, info.out));
    if (info.stderr) parts.push(h("h4", {}, "stderr"), h("pre", { class: "nbf-stderr" }, info.stderr));
    panel.replaceChildren(...parts);
    panel.hidden = false;
  }

  function select(name) {
    view.selected = name;
    for (const [n, e] of view.byName) e.g.classList.toggle("nbf-selected", n === name);
    if (name == null) panel.hidden = true;
    else showPanel(name);
    applyFilter();
  }

  // -- upstream / downstream filter ------------------------------------------------
  function reach(start, forward) {
    const next = new Map();
    for (const { u, v } of view.edges) {
      const [a, b] = forward ? [u, v] : [v, u];
      if (!next.has(a)) next.set(a, []);
      next.get(a).push(b);
    }
    const seen = new Set([start]);
    const stack = [start];
    while (stack.length) for (const n of next.get(stack.pop()) || []) if (!seen.has(n)) { seen.add(n); stack.push(n); }
    return seen;
  }

  function applyFilter() {
    const mode = filter.value;
    let keep = null;
    if (mode !== "all" && view.selected) {
      keep = new Set();
      if (mode === "up" || mode === "both") for (const n of reach(view.selected, false)) keep.add(n);
      if (mode === "down" || mode === "both") for (const n of reach(view.selected, true)) keep.add(n);
    }
    for (const [n, e] of view.byName) e.g.classList.toggle("nbf-dim", keep !== null && !keep.has(n));
    for (const e of view.edges) e.g.classList.toggle("nbf-dim", keep !== null && !(keep.has(e.u) && keep.has(e.v)));
  }
  filter.addEventListener("change", applyFilter);

  // -- zoom and pan -------------------------------------------------------------------
  function transform() {
    canvas.style.transform = `translate(${view.tx}px, ${view.ty}px) scale(${view.scale})`;
  }
  function zoom(factor, cx, cy) {
    const r = stage.getBoundingClientRect();
    const x = cx ?? r.width / 2, y = cy ?? r.height / 2;
    view.tx = x - (x - view.tx) * factor;
    view.ty = y - (y - view.ty) * factor;
    view.scale *= factor;
    transform();
  }
  function fit() {
    const svg = canvas.querySelector("svg");
    const r = stage.getBoundingClientRect();
    if (!svg || !r.width) { view.scale = 1; view.tx = view.ty = 0; transform(); return; }
    const w = svg.width.baseVal.value || 1, hgt = svg.height.baseVal.value || 1;
    view.scale = Math.min(1.5, r.width / w, Math.max(r.height, 200) / hgt);
    view.tx = Math.max(0, (r.width - w * view.scale) / 2);
    view.ty = 0;
    transform();
  }
  stage.addEventListener("wheel", (ev) => {
    if (!ev.ctrlKey && !ev.metaKey && !ev.altKey) return; // plain wheel scrolls the notebook
    ev.preventDefault();
    const r = stage.getBoundingClientRect();
    zoom(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  let drag = null;
  stage.addEventListener("pointerdown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY, tx: view.tx, ty: view.ty, moved: false };
  });
  stage.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (drag.moved) { view.tx = drag.tx + dx; view.ty = drag.ty + dy; transform(); }
  });
  stage.addEventListener("pointerup", () => { setTimeout(() => { drag = null; }, 0); });
  stage.addEventListener("click", (ev) => {
    if (drag && drag.moved) return;
    const g = ev.target.closest && ev.target.closest("g.node");
    select(g ? g.dataset.name : null);
  });

  model.on("msg:custom", (msg) => {
    if (msg && msg.error) status.textContent = `nbflow: ${msg.error}`;
  });
  model.on("change:svg", () => { drawSvg(); updateStatus(); });
  model.on("change:graph", applyFilter);
  model.on("change:snapshot_json", onSnapshot);
  model.on("change:delta", onDelta);
  function showDashboard() {
    const link = model.get("dashboard");
    if (link) { dashboard.href = link; dashboard.hidden = false; } else dashboard.hidden = true;
  }

  model.on("change:run_status", updateStatus);
  model.on("change:status_line", updateStatus);
  model.on("change:available", () => {
    showButtons();
    if (view.selected) showPanel(view.selected);
  });
  model.on("change:dashboard", showDashboard);
  model.on("change:layout_status", updateStatus);
  const restyle = () => { drawLegend(); for (const n of view.byName.keys()) paint(n); updateStatus(); };
  model.on("change:styles", restyle);
  model.on("change:legend", restyle);
  model.on("change:state_rules", restyle);

  drawLegend();
  showButtons();
  showDashboard();
  drawSvg();
  onSnapshot();
  updateStatus();
  return () => clearInterval(ticker);
}

export default { render };
