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
//
// Large graphs: the first view (and "fit") never scales labels below READABLE_PX;
// what does not fit is reached by dragging or through the minimap. The search box
// highlights matching tasks and centres one match at a time. Groups and long chains
// collapse into one node: the view asks the kernel ("collapse"/"expand" messages),
// which sends the new layout and the collapsed nodes' infos (nbflow.widget.collapse).
// On render the view sends "ping": a view drawn from saved widget state with no
// kernel behind it (or a kernel busy in a cell) gets no answer, and says so.

const NS = "http://www.w3.org/2000/svg";
// the smallest size, in screen pixels, that fitting shrinks a task name to
const READABLE_PX = 10;
// milliseconds without any word from the kernel before the view says so
const PING_WAIT = 3000;
// the minimap's largest size, in pixels
const MINI_W = 260, MINI_H = 140;

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
    nodes: {},        // name -> info {s, a, t0, t1, w, d, n, c, err, res, out, stderr, cmd, host, img}
    seq: -1,
    byName: new Map(),// name -> {g, shape, status, bar, barBox}
    edges: [],        // [{g, u, v}]
    selected: null,
    scale: 1, tx: 0, ty: 0,
    paints: 0,
    pos: null,        // name -> {x, y, w, h}: where each node is, at scale 1 (lazily)
    matches: [], match: -1,  // search results (node names in reading order), the current one
    focus: null,      // the node to centre and select once the next layout is drawn
    placed: false,    // the layout drawn was fitted (or centred) in a stage with a size
    sized: false,     // the stage's height was chosen for the first layout
    live: false,      // the kernel answered (or sent anything) since the view was drawn
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
  const search = h("input", { class: "nbf-search", type: "search", placeholder: "search tasks",
                              title: "highlight the tasks whose name contains this text; Enter: centre the next match, Shift+Enter: the previous one" });
  const searchCount = h("span", { class: "nbf-search-count" });
  const send = (action, task) => model.send(task === undefined ? { action } : { action, task });
  const foldGroups = h("button", { class: "nbf-collapse-groups", hidden: "",
                                   title: "draw each group of tasks (group=...) as one node",
                                   onclick: () => send("collapse_all", "group") }, "⊟ groups");
  const foldChains = h("button", { class: "nbf-collapse-chains", hidden: "",
                                   title: "draw each long chain of tasks as one node",
                                   onclick: () => send("collapse_all", "chain") }, "⊟ chains");
  const unfoldAll = h("button", { class: "nbf-expand-all", hidden: "",
                                  title: "draw every task again",
                                  onclick: () => send("expand_all") }, "⊞ expand all");
  const toolbar = h("div", { class: "nbf-toolbar" }, cancelRun, rerunFailed,
    h("button", { title: "zoom in", onclick: () => zoom(1.25) }, "+"),
    h("button", { title: "zoom out", onclick: () => zoom(0.8) }, "−"),
    h("button", { class: "nbf-fit", title: "fit to view, down to a readable size (the minimap shows the rest)",
                  onclick: () => fit() }, "fit"),
    filter, search, searchCount, foldGroups, foldChains, unfoldAll, status, dashboard);
  const legend = h("div", { class: "nbf-legend" });
  const offline = h("div", { class: "nbf-offline", hidden: "",
                             title: "This view was drawn from the widget state saved in the notebook, and no kernel has answered it: the kernel is busy running a cell, or it is gone (restarted or shut down; run the cell again)." });
  const canvas = h("div", { class: "nbf-canvas" });
  const miniCanvas = h("canvas", { class: "nbf-minimap-map" });
  const miniView = h("div", { class: "nbf-minimap-view" });
  const mini = h("div", { class: "nbf-minimap", hidden: "",
                          title: "the whole graph: the box is what the view shows; click or drag to move it" },
    miniCanvas, miniView);
  const stage = h("div", { class: "nbf-stage" }, canvas, mini);
  const panel = h("div", { class: "nbf-panel", hidden: "" });
  el.append(toolbar, legend, offline, h("div", { class: "nbf-body" }, stage, panel));

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
    view.pos = null;
    if (!text) { canvas.replaceChildren(h("div", { class: "nbf-placeholder" }, "laying out…")); return; }
    canvas.innerHTML = text;
    const svg = canvas.querySelector("svg");
    if (!svg) return;
    svg.classList.add("nbf-svg");
    const graph = model.get("graph") || {};
    const folded = graph.folded || {};
    const names = new Map();
    for (const g of svg.querySelectorAll("g.node")) {
      const title = g.querySelector("title");
      if (!title) continue;
      const name = title.textContent;
      const shape = g.querySelector("path, polygon, ellipse");
      const texts = g.querySelectorAll("text");
      const entry = { g, shape, status: texts.length > 1 ? texts[1] : null, bar: null,
                      name: texts.length > 0 ? texts[0] : null, fullName: texts.length > 0 ? texts[0].textContent : "",
                      // a command task's "$" badge (nbflow.widget.badges), in the layout already
                      badge: g.querySelector("text.nbf-badge") };
      if (entry.name) entry.name.classList.add("nbf-name");
      if (entry.status) entry.status.classList.add("nbf-state-text");
      if (folded[name]) g.dataset.fold = folded[name].kind;
      g.dataset.name = name;
      view.byName.set(name, entry);
      names.set(name, true);
    }
    // an expanded group's box: clicking its label collapses the group
    for (const c of svg.querySelectorAll("g.cluster")) {
      const t = c.querySelector("title");
      const m = t && /^cluster_(\d+)$/.exec(t.textContent);
      const group = m && (graph.groups || [])[Number(m[1])];
      const label = c.querySelector("text");
      if (!group || !label) continue;
      c.dataset.unit = `group/${group[0]}`;
      label.classList.add("nbf-cluster-label");
      const tip = document.createElementNS(NS, "title");
      tip.textContent = `group ${group[0]} (${group[1].length} tasks): click to collapse it into one node`;
      label.append(tip);
    }
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
    if (view.selected && !view.byName.has(view.selected) && !view.byName.has(view.focus)) select(null);
    view.placed = false;
    place();
    el.dataset.nodes = String(view.byName.size);
  }

  // The first view of a layout: fitted, or centred on the node an action asked for. A
  // view drawn before it is attached (or while hidden) has no size: then once it has.
  function place() {
    const svg = canvas.querySelector("svg");
    if (!svg || view.placed || !stage.getBoundingClientRect().width) return;
    view.placed = true;
    if (!view.sized) sizeStage(svg);
    fit();
    const focus = view.focus;
    view.focus = null;
    if (focus && view.byName.has(focus)) { centreOn(focus); select(focus); }
    runSearch(false);
  }

  // A graph taller than the stage at a readable size gets a taller stage, once per view
  // (the user may resize it after).
  function sizeStage(svg) {
    const r = stage.getBoundingClientRect();
    if (!r.height) return;  // hidden: try with the next layout
    view.sized = true;
    const want = Math.min(640, (svg.height.baseVal.value || 0) * readableScale() + 8);
    if (want > r.height) stage.style.height = `${Math.round(want)}px`;
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
    // a centred name keeps clear of a command's "$" badge in the top left corner
    const room = roomOf(entry) - (entry.badge && text === entry.name ? 16 : 0);
    if (room <= 0 || !text.getComputedTextLength) return;  // not rendered yet: refit later
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
  const resized = new ResizeObserver(() => { fitLabels(); place(); scheduleMini(); });
  resized.observe(stage);

  // -- painting nodes -----------------------------------------------------------
  function statusLine(info) {
    const s = info.s || rules().initial;
    const line = lineOf(s);
    if (info.st) return `${s} ${info.n || 0} items` + (info.st.rate ? ` · ${info.st.rate}/s` : "");
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
    if (entry.badge && info.cmd) {
      const tip = entry.badge.querySelector("title");
      if (tip) tip.textContent = `command task: $ ${info.cmd}`;
    }
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
    const done = info.st ? info.st.done : info.d;  // a stream: what its consumers finished
    const frac = info.n ? Math.min(1, (done || 0) / info.n) : 0;
    entry.bar.setAttribute("width", String(entry.barWidth * frac));
  }

  function apply(nodes) {
    for (const [name, info] of Object.entries(nodes)) {
      view.nodes[name] = info;
      paint(name);
    }
    view.paints += 1;
    el.dataset.paints = String(view.paints);
    scheduleMini();
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
      if (info.g) continue;  // a collapsed group or chain: its tasks are counted
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
    el.dataset.flow = model.get("flow_name");
  }

  // Running nodes show elapsed time: repaint them twice a second.
  const ticker = setInterval(() => {
    for (const [name, info] of Object.entries(view.nodes)) if (lineOf(info.s) === "elapsed") paint(name);
  }, 500);

  // -- details panel ------------------------------------------------------------
  function row(label, value) {
    return value === "" || value == null ? null : h("tr", {}, h("th", {}, label), h("td", {}, String(value)));
  }

  // the group or chain (expanded) that task `name` is in, if any
  function unitOf(name) {
    const units = (model.get("graph") || {}).units || {};
    for (const [id, unit] of Object.entries(units))
      if (!unit.collapsed && unit.members.includes(name)) return { id, ...unit };
    return null;
  }

  function showFoldPanel(name, fold) {
    const info = view.nodes[name] || { s: rules().initial };
    const ended = info.c ? Object.entries(info.c).map(([k, v]) => `${v} ${k}`).join(", ") : "";
    const rows = [
      row("state", info.s),
      row(fold.kind, fold.kind === "group" ? fold.label : `${fold.members[0]} → ${fold.members[fold.members.length - 1]}`),
      row("tasks ended", `${info.d || 0}/${info.n ?? fold.members.length}` + (ended ? ` (${ended})` : "")),
      row("started", fmtTime(info.t0)),
      row("ended", fmtTime(info.t1)),
      row("duration", info.t0 && info.t1 ? fmtSeconds(info.t1 - info.t0) : ""),
    ].filter(Boolean);
    const members = fold.members.map((m) => {
      const s = (view.nodes[m] || {}).s || rules().initial;
      const open = h("a", { href: "#", class: "nbf-member", title: "expand and show this task",
                            onclick: (ev) => { ev.preventDefault(); view.focus = m; send("expand", name); } }, m);
      return h("tr", { "data-state": drawnAs(s) }, h("td", {}, open), h("td", {}, s));
    });
    panel.replaceChildren(
      h("div", { class: "nbf-panel-head" }, h("b", {}, `${fold.kind} ${fold.label}`),
        h("button", { class: "nbf-close", title: "close", onclick: () => select(null) }, "×")),
      h("table", { class: "nbf-facts" }, ...rows),
      h("div", { class: "nbf-actions" },
        h("button", { class: "nbf-act-expand", title: "draw these tasks again",
                      onclick: () => { view.focus = fold.members[0]; send("expand", name); } }, "⊞ expand")),
      h("h4", {}, `${fold.members.length} tasks`),
      h("table", { class: "nbf-members" }, ...members));
    panel.hidden = false;
  }

  function showPanel(name) {
    const fold = ((model.get("graph") || {}).folded || {})[name];
    if (fold) return showFoldPanel(name, fold);
    const info = view.nodes[name] || { s: rules().initial };
    const rows = [
      row("state", info.s),
      row("started", fmtTime(info.t0)),
      row("ended", fmtTime(info.t1)),
      row("duration", info.t0 && info.t1 ? fmtSeconds(info.t1 - info.t0) : ""),
      row("attempts", info.a),
      row("where", info.w),
      row("host", info.host),
      row("image", info.img),
      row("items", info.st ? `${info.n || 0} made, ${(info.n || 0) - (info.st.done || 0)} in flight, ` +
        `${info.st.done || 0} done` + (info.st.rate ? `, ${info.st.rate}/s` : "") : ""),
      row("branches", info.n != null && !info.st ? `${info.d || 0}/${info.n}` +
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
    const unit = unitOf(name);
    if (unit)
      buttons.push(h("button", { class: "nbf-act-collapse", title: `draw the ${unit.members.length} tasks of this ${unit.kind} as one node`,
                                 onclick: () => { view.focus = unit.id; send("collapse", unit.id); } },
        unit.kind === "group" ? `⊟ collapse group ${unit.label}` : `⊟ collapse chain (${unit.members.length} tasks)`));
    parts.push(h("div", { class: "nbf-actions" }, ...buttons));
    if (info.cmd != null) parts.push(h("h4", {}, "command"), h("pre", { class: "nbf-command" }, `$ ${info.cmd}`));
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
    el.dataset.scale = view.scale.toFixed(3);
    scheduleMini();
  }
  // the scale at which a task name is READABLE_PX tall on screen (Graphviz sizes text
  // in points, and the SVG maps its viewBox onto its width)
  function readableScale() {
    const svg = canvas.querySelector("svg");
    const text = svg && svg.querySelector("g.node text");
    if (!text) return 1;
    const box = svg.viewBox.baseVal;
    const unit = box && box.width ? svg.width.baseVal.value / box.width : 1;
    const size = parseFloat(text.getAttribute("font-size")) || 11;
    return Math.min(1, READABLE_PX / (size * unit));
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
    // the whole graph, unless its labels would be too small to read: then the top of
    // it, centred, and the minimap
    const whole = Math.min(1.5, r.width / w, Math.max(r.height, 200) / hgt);
    const readable = readableScale();
    view.scale = Math.max(whole, readable);
    view.tx = (r.width - w * view.scale) / 2;
    view.ty = 0;
    el.dataset.readable = readable.toFixed(3);
    transform();
  }
  // where each node is drawn at scale 1, relative to the canvas (measured once per layout)
  function positions() {
    if (view.pos) return view.pos;
    const c = canvas.getBoundingClientRect();
    if (!c.width) return {};
    view.pos = {};
    for (const [name, e] of view.byName) {
      const r = e.g.getBoundingClientRect();
      view.pos[name] = { x: (r.left - c.left) / view.scale, y: (r.top - c.top) / view.scale,
                         w: r.width / view.scale, h: r.height / view.scale };
    }
    return view.pos;
  }
  // node `name` in the middle of the stage, at a readable scale at least
  function centreOn(name) {
    const p = positions()[name];
    const r = stage.getBoundingClientRect();
    if (!p || !r.width) return;
    view.scale = Math.max(view.scale, readableScale());
    view.tx = r.width / 2 - (p.x + p.w / 2) * view.scale;
    view.ty = r.height / 2 - (p.y + p.h / 2) * view.scale;
    transform();
  }

  // -- search ---------------------------------------------------------------------------
  // Matches are the drawn nodes whose name (or, for a collapsed node, its label or one
  // of its tasks) contains the text, in reading order (top to bottom, left to right).
  function runSearch(centre) {
    const q = search.value.trim().toLowerCase();
    const folded = (model.get("graph") || {}).folded || {};
    const hit = (name) => [name, ...(folded[name] ? [folded[name].label, ...folded[name].members] : [])]
      .some((text) => text.toLowerCase().includes(q));
    const pos = positions();
    const at = (n) => pos[n] ? [Math.round(pos[n].y + pos[n].h / 2), pos[n].x] : [0, 0];
    view.matches = q ? [...view.byName.keys()].filter(hit) : [];
    view.matches.sort((a, b) => at(a)[0] - at(b)[0] || at(a)[1] - at(b)[1]);
    view.match = view.matches.length ? 0 : -1;
    el.classList.toggle("nbf-searching", q !== "");
    markMatches(centre);
  }
  function step(by) {
    const n = view.matches.length;
    if (!n) return;
    view.match = (view.match + by + n) % n;
    markMatches(true);
  }
  function markMatches(centre) {
    const found = new Set(view.matches);
    const current = view.matches[view.match];
    for (const [n, e] of view.byName) {
      e.g.classList.toggle("nbf-match", found.has(n));
      e.g.classList.toggle("nbf-current", n === current);
    }
    searchCount.textContent = !search.value.trim() ? "" :
      view.matches.length ? `${view.match + 1}/${view.matches.length}` : "no match";
    el.dataset.matches = String(view.matches.length);
    if (current) el.dataset.match = current; else delete el.dataset.match;
    if (current && centre) centreOn(current);
    scheduleMini();
  }
  search.addEventListener("input", () => runSearch(true));
  search.addEventListener("keydown", (ev) => {
    ev.stopPropagation();  // keys typed here are not notebook shortcuts (Shift+Enter runs a cell)
    if (ev.key === "Enter") { ev.preventDefault(); step(ev.shiftKey ? -1 : 1); }
    else if (ev.key === "Escape") { search.value = ""; runSearch(false); }
  });

  // -- minimap --------------------------------------------------------------------------
  // Shown while the graph does not fit the stage: every node as a dot in its state's
  // outline colour (search matches in amber), and a box where the view is.
  let miniFrame = 0;
  function scheduleMini() {
    if (!miniFrame) miniFrame = requestAnimationFrame(() => { miniFrame = 0; drawMinimap(); });
  }
  function drawMinimap() {
    const svg = canvas.querySelector("svg");
    const r = stage.getBoundingClientRect();
    const w = svg ? svg.width.baseVal.value : 0, hgt = svg ? svg.height.baseVal.value : 0;
    const fits = !w || !hgt || !r.width || (w * view.scale <= r.width + 1 && hgt * view.scale <= r.height + 1);
    if (mini.hidden !== fits) { mini.hidden = fits; showFoldButtons(); }
    el.dataset.minimap = fits ? "hidden" : "shown";
    if (fits) return;
    const k = view.miniK = Math.min(MINI_W / w, MINI_H / hgt);
    const cw = Math.max(1, Math.round(w * k)), ch = Math.max(1, Math.round(hgt * k));
    if (miniCanvas.width !== cw) miniCanvas.width = cw;
    if (miniCanvas.height !== ch) miniCanvas.height = ch;
    const ctx = miniCanvas.getContext("2d");
    ctx.clearRect(0, 0, cw, ch);
    const pos = positions();
    const found = new Set(view.matches);
    for (const name of view.byName.keys()) {
      const p = pos[name];
      if (!p) continue;
      const hit = found.has(name), pad = hit ? 1.5 : 0;
      ctx.fillStyle = hit ? "#f0a800" : styleOf(drawnAs((view.nodes[name] || {}).s)).stroke;
      ctx.fillRect(p.x * k - pad, p.y * k - pad, Math.max(1.5, p.w * k) + 2 * pad, Math.max(1.5, p.h * k) + 2 * pad);
    }
    Object.assign(miniView.style, {
      left: `${-view.tx / view.scale * k}px`, top: `${-view.ty / view.scale * k}px`,
      width: `${r.width / view.scale * k}px`, height: `${r.height / view.scale * k}px` });
  }
  let miniDrag = false;
  function miniMove(ev) {
    const b = miniCanvas.getBoundingClientRect();
    const r = stage.getBoundingClientRect();
    if (!view.miniK) return;
    view.tx = r.width / 2 - (ev.clientX - b.left) / view.miniK * view.scale;
    view.ty = r.height / 2 - (ev.clientY - b.top) / view.miniK * view.scale;
    transform();
  }
  mini.addEventListener("pointerdown", (ev) => {
    ev.stopPropagation();
    miniDrag = true;
    if (mini.setPointerCapture) mini.setPointerCapture(ev.pointerId);
    miniMove(ev);
  });
  mini.addEventListener("pointermove", (ev) => { if (miniDrag) { ev.stopPropagation(); miniMove(ev); } });
  mini.addEventListener("pointerup", (ev) => { ev.stopPropagation(); miniDrag = false; });
  mini.addEventListener("click", (ev) => ev.stopPropagation());
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
    const label = ev.target.closest && ev.target.closest("text.nbf-cluster-label");
    const unit = label && label.closest("g.cluster").dataset.unit;
    if (unit) { view.focus = unit; send("collapse", unit); return; }
    const g = ev.target.closest && ev.target.closest("g.node");
    select(g ? g.dataset.name : null);
  });

  // -- is a kernel behind this view? ----------------------------------------------------
  // A view drawn from widget state saved in the notebook, after the kernel restarted,
  // has no model in any kernel: its ping goes unanswered. A kernel busy running a cell
  // answers once the cell ends (deltas of a run still arrive meanwhile).
  function heard() {
    if (view.live) return;
    view.live = true;
    offline.hidden = true;
    el.dataset.live = "yes";
  }
  function stateTime() {
    let t = 0;
    try { t = JSON.parse(model.get("snapshot_json") || "{}").time || 0; } catch (e) { t = 0; }
    return Math.max(t, (model.get("delta") || {}).time || 0);
  }
  const pad2 = (n) => String(n).padStart(2, "0");
  const pingTimer = setTimeout(() => {
    if (view.live) return;
    const t = stateTime(), d = new Date(t * 1000);
    const at = t ? ` of ${pad2(d.getHours())}:${pad2(d.getMinutes())}` : "";
    offline.textContent = `no answer from the kernel (showing the saved state${at})`;
    offline.hidden = false;
    el.dataset.live = "no";
  }, PING_WAIT);
  try { model.send({ action: "ping" }); } catch (e) { /* no comm: the note says so */ }
  const fromKernel = (fn) => (...args) => { heard(); return fn(...args); };

  model.on("msg:custom", (msg) => {
    heard();
    if (msg && msg.error) status.textContent = `nbflow: ${msg.error}`;
  });
  model.on("change:svg", fromKernel(() => { drawSvg(); updateStatus(); }));
  model.on("change:graph", fromKernel(() => { applyFilter(); showFoldButtons(); }));
  model.on("change:snapshot_json", fromKernel(onSnapshot));
  model.on("change:delta", fromKernel(onDelta));
  function showDashboard() {
    const link = model.get("dashboard");
    if (link) { dashboard.href = link; dashboard.hidden = false; } else dashboard.hidden = true;
  }

  function showFoldButtons() {
    const units = Object.values((model.get("graph") || {}).units || {});
    foldGroups.hidden = !units.some((u) => u.kind === "group" && !u.collapsed);
    // (chains only when the graph is too large to see whole: a panel collapses one anyway)
    foldChains.hidden = !units.some((u) => u.kind === "chain" && !u.collapsed) || mini.hidden;
    unfoldAll.hidden = !units.some((u) => u.collapsed);
  }

  model.on("change:run_status", fromKernel(updateStatus));
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
  showFoldButtons();
  showDashboard();
  drawSvg();
  onSnapshot();
  updateStatus();
  return () => { clearInterval(ticker); clearTimeout(pingTimer); resized.disconnect(); };
}

export default { render };
