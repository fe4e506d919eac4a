// nbflow serve: the status page. Lists the jobs (GET jobs), refreshes while any runs, and
// draws the selected job's DAG with the DAG widget's own view (widget.js), so the page
// shows the same SVG, styles, status lines and details panel as a notebook.
//
// widget.js is an anywidget module: render({ model, el }) reads the widget's traits with
// model.get(name) and listens for "change:<name>". PageModel is that model, fed from the
// service's JSON instead of a kernel: GET graph gives the traits that are fixed (layout,
// structure, styles, legend, state rules), GET jobs/ID/nodes a job's node infos (sent as
// a snapshot, as the kernel does). No action is "available", so the view shows no run
// buttons; its "ping" is answered at once.
//
// With a token, open the page as /#token=TOKEN: the fragment never leaves the browser;
// the token is kept for the tab (sessionStorage) and sent as a bearer header.

import widget from "./widget.js";

// milliseconds between refreshes while a job is queued or running, and otherwise
const POLL_BUSY = 1000, POLL_IDLE = 5000;
const LIMIT = 200;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const TOKEN_KEY = "nbflow-serve-token";

const $ = (id) => document.getElementById(id);
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
const fmtTime = (t) => (t == null ? "" : new Date(t * 1000).toLocaleString());
// today's times without their date (the list stays narrow)
function fmtWhen(t) {
  if (t == null) return "";
  const d = new Date(t * 1000);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}
function fmtSeconds(s) {
  if (s == null || !isFinite(s)) return "";
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${Math.round(s - 60 * m)}s`;
}

// -- the hash: #job=ID (the selected job) and, once, #token=TOKEN ---------------------------
function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    params.delete("token");
    history.replaceState(null, "", `${location.pathname}${location.search}${params.size ? `#${params}` : ""}`);
  }
  return params.get("job");
}
function writeHash(jobId) {
  history.replaceState(null, "", `${location.pathname}${location.search}${jobId ? `#job=${encodeURIComponent(jobId)}` : ""}`);
}

// -- the API ------------------------------------------------------------------------------
class Unauthorized extends Error {}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(new URL(path, document.baseURI), { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) throw new Unauthorized((body && body.error) || "unauthorized");
  $("auth").hidden = true;  // (the token, if any, was taken)
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

// -- the widget's model, fed over HTTP ------------------------------------------------------
class PageModel {
  constructor(values) {
    this.values = { available: [], dashboard: "", delta: {}, snapshot_json: "{}", run_status: "",
                    status_line: "", actions: false, ...values };
    this.handlers = new Map();
  }
  get(name) { return this.values[name]; }
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(fn);
  }
  off() {}
  emit(event, ...args) { for (const fn of this.handlers.get(event) || []) fn(...args); }
  set(changes) {
    Object.assign(this.values, changes);
    for (const name of Object.keys(changes)) this.emit(`change:${name}`);
  }
  send(msg) {
    // the view's "ping" asks whether anything answers: this page does
    if (msg && msg.action === "ping") queueMicrotask(() => this.emit("msg:custom", {}));
  }
  save_changes() {}
}

// -- the page ----------------------------------------------------------------------------------
const page = { model: null, styles: {}, selected: readHash(), job: null, seq: 0, polls: 0,
               timer: 0, jobs: [], busyRefreshing: false, again: false, action: "" };

function problem(text) {
  $("problem").textContent = text || "";
  $("problem").hidden = !text;
}

function stateBadge(state) {
  const st = page.styles[state] || page.styles[state === "queued" ? "pending" : ""] || {};
  const badge = h("span", { class: "job-state", "data-state": state }, state);
  if (st.fill) badge.style.background = st.fill;
  if (st.stroke) badge.style.borderColor = st.stroke;
  return badge;
}

function taskSummary(job) {
  const tasks = Object.values(job.tasks || {});
  if (!tasks.length) return "";
  const ended = tasks.filter((t) => FINISHED.has(t.state) || t.state === "cached" || t.state === "skipped");
  const failed = tasks.filter((t) => t.state === "failed").length;
  return `${ended.length}/${tasks.length} ended` + (failed ? `, ${failed} failed` : "");
}

function drawJobs(jobs) {
  const rows = jobs.map((job) => {
    const row = h("tr", { "data-id": job.id, "data-state": job.state, onclick: () => select(job.id) },
      h("td", {}, h("code", {}, job.id)), h("td", {}, stateBadge(job.state)),
      h("td", { title: job.source || "" }, job.trigger), h("td", { title: fmtTime(job.created) }, fmtWhen(job.created)),
      h("td", {}, fmtSeconds(job.duration)), h("td", {}, taskSummary(job)));
    if (job.id === page.selected) row.classList.add("selected");
    return row;
  });
  $("jobs").tBodies[0].replaceChildren(...rows);
  $("no-jobs").hidden = jobs.length > 0;
  document.body.dataset.jobs = String(jobs.length);
}

async function drawCounts() {
  const counts = await api("counts");
  const parts = Object.entries(counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`);
  $("counts").textContent = parts.join(", ") || "no jobs";
}

function select(jobId) {
  page.selected = jobId;
  writeHash(jobId);
  for (const row of $("jobs").tBodies[0].rows) row.classList.toggle("selected", row.dataset.id === jobId);
  refresh();
}

function fact(label, value) {
  if (value === "" || value == null) return null;
  const cell = typeof value === "string" ? value : h("pre", {}, JSON.stringify(value, null, 2));
  return h("tr", {}, h("th", {}, label), h("td", {}, cell));
}

// The selected job's facts and DAG; what went wrong when it cannot be shown.
async function drawJob() {
  const section = $("job");
  if (!page.selected) { section.hidden = true; page.job = null; return ""; }
  let job, view;
  try {
    [job, view] = await Promise.all([api(`jobs/${encodeURIComponent(page.selected)}`),
                                     api(`jobs/${encodeURIComponent(page.selected)}/nodes`)]);
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    section.hidden = true;
    page.job = null;
    return `job ${page.selected}: ${e.message}`;
  }
  page.job = job;
  section.hidden = false;
  section.dataset.id = job.id;
  section.dataset.state = job.state;
  $("job-id").textContent = `job ${job.id}`;
  $("job-state").replaceChildren(stateBadge(job.state));
  $("job-cancel").hidden = FINISHED.has(job.state);
  $("job-error").textContent = job.error || "";
  $("job-error").hidden = !job.error;
  $("job-facts").replaceChildren(...[
    fact("trigger", job.source ? `${job.trigger} (${job.source})` : job.trigger),
    fact("created", fmtTime(job.created)), fact("started", fmtTime(job.started)),
    fact("finished", fmtTime(job.finished)), fact("duration", fmtSeconds(job.duration)),
    fact("attempts", String(job.attempts)), fact("parameters", job.params),
    fact("results", Object.keys(job.results || {}).length ? job.results : null),
  ].filter(Boolean));
  if (page.model) {
    page.seq += 1;
    page.model.set({ snapshot_json: JSON.stringify({ seq: page.seq, nodes: view.nodes, time: Date.now() / 1000 }),
                     run_status: view.state, status_line: view.status_line });
  }
  return "";
}

async function cancelJob() {
  if (!page.selected) return;
  try { await api(`jobs/${encodeURIComponent(page.selected)}`, { method: "DELETE" }); }
  catch (e) { page.action = `cancel: ${e.message}`; }
  refresh();
}

async function startDag() {
  const graph = await api("graph");
  page.styles = graph.styles;
  $("title").textContent = `nbflow serve: ${graph.workflow.name}`;
  document.title = `nbflow serve: ${graph.workflow.name}`;
  page.model = new PageModel({
    flow_name: graph.flow_name, svg: graph.svg, graph: graph.graph, styles: graph.styles,
    legend: graph.legend, state_rules: graph.state_rules, layout_status: graph.layout_status,
  });
  widget.render({ model: page.model, el: $("dag") });
}

// One refresh at a time: a refresh asked for while one runs (a click) follows it at once.
async function refresh() {
  if (page.busyRefreshing) { page.again = true; return; }
  page.busyRefreshing = true;
  clearTimeout(page.timer);
  let busy = false, note = "";
  try {
    if (!page.model) await startDag();
    const state = $("state-filter").value;
    page.jobs = await api(`jobs?limit=${LIMIT}${state ? `&state=${state}` : ""}`);
    if (!page.selected && page.jobs.length) {  // the newest job that runs, else the newest
      page.selected = (page.jobs.find((j) => j.state === "running") || page.jobs[0]).id;
    }
    drawJobs(page.jobs);
    await drawCounts();
    note = await drawJob();
    busy = page.jobs.some((j) => !FINISHED.has(j.state)) || (page.job != null && !FINISHED.has(page.job.state));
  } catch (e) {
    if (e instanceof Unauthorized) $("auth").hidden = false;
    note = e instanceof Unauthorized ? e.message : `cannot reach the service: ${e.message}`;
  }
  problem(page.action || note);
  page.action = "";
  page.polls += 1;
  document.body.dataset.polls = String(page.polls);
  document.body.dataset.busy = busy ? "yes" : "no";
  $("refresh").textContent = `updated ${new Date().toLocaleTimeString()}`;
  page.busyRefreshing = false;
  if (page.again) { page.again = false; refresh(); }
  else page.timer = setTimeout(refresh, busy ? POLL_BUSY : POLL_IDLE);
}

$("state-filter").addEventListener("change", () => refresh());
$("job-cancel").addEventListener("click", cancelJob);
$("token-save").addEventListener("click", () => {
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  refresh();
});
refresh();
