// The live dashboard: one EventSource (/api/stream), no page reloads, no build step.
"use strict";

const MAX_EVENTS = 200;
const MAX_ALERTS = 100;
const agents = new Map(); // agent id -> last row from the worker
let openChain = null;
let traceTimer = null;

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function ago(us) {
  if (!us) return "never";
  const s = Math.max(0, Date.now() / 1000 - us / 1e6);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function clock(us) {
  return new Date(us / 1000).toISOString().slice(11, 23);
}

function toast(text, bad = false) {
  const box = $("#toast");
  box.textContent = text;
  box.style.borderColor = bad ? "var(--bad)" : "var(--ok)";
  box.classList.add("show");
  clearTimeout(box.timer);
  box.timer = setTimeout(() => box.classList.remove("show"), 5000);
}

// -- the command API ---------------------------------------------------------------------

function token() {
  const dev = document.querySelector('meta[name="trc-dev-token"]').content;
  return sessionStorage.getItem("trc-token") || (dev && !dev.startsWith("{{") ? dev : "");
}

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("#token-dialog");
    $("#token-input").value = sessionStorage.getItem("trc-token") || "";
    dialog.onclose = () => {
      if (dialog.returnValue === "ok" && $("#token-input").value) {
        sessionStorage.setItem("trc-token", $("#token-input").value.trim());
        resolve(true);
      } else resolve(false);
    };
    dialog.showModal();
  });
}

function confirmCommand(kind, targetType, targetId) {
  return new Promise((resolve) => {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = `${kind} ${targetType} ${targetId}?`;
    $("#confirm-ok").textContent = kind;
    dialog.returnValue = "";
    dialog.onclose = () => resolve(dialog.returnValue === "ok" ? $("#confirm-reason").value : null);
    dialog.showModal();
  });
}

async function sendCommand(kind, targetType, targetId) {
  const reason = await confirmCommand(kind, targetType, targetId);
  if (reason === null) return;
  if (!token() && !(await askToken())) return;
  for (let attempt = 0; attempt < 2; attempt++) {
    let response;
    try {
      response = await fetch("/api/commands", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token()}` },
        body: JSON.stringify({ kind, target_type: targetType, target_id: targetId, reason }),
      });
    } catch (error) {
      toast(`${kind} not sent: the worker does not answer (${error})`, true);
      return;
    }
    const body = await response.json().catch(() => ({}));
    if (response.status === 401 && attempt === 0) {
      sessionStorage.removeItem("trc-token");
      if (await askToken()) continue;
      return;
    }
    if (response.ok) {
      toast(`${kind} ${targetId}: command ${body.command_id || ""} accepted`);
    } else {
      toast(`${kind} refused (${response.status}): ${body.error || body.message || JSON.stringify(body)}`, true);
    }
    return;
  }
}

// -- the fleet ---------------------------------------------------------------------------

const ACTIONS = [
  ["KILL", (s) => s === "running" || s === "paused" || s === "silent"],
  ["PAUSE", (s) => s === "running"],
  ["RESUME", (s) => s === "paused"],
  ["ROLLBACK", (s) => s !== "finished"],
];

function renderAgent(row) {
  agents.set(row.agent_id, row);
  let tr = document.querySelector(`#fleet tbody tr[data-agent="${CSS.escape(row.agent_id)}"]`);
  if (!tr) {
    tr = el("tr", { "data-agent": row.agent_id });
    for (const name of ["agent", "state", "step", "tpm", "cost", "beat", "chain", "actions"]) {
      tr.append(el("td", { class: `col-${name}` }));
    }
    for (const [kind] of ACTIONS) {
      tr.querySelector(".col-actions").append(
        el("button", {
          type: "button",
          "data-action": kind,
          class: kind === "KILL" ? "danger" : "",
          text: kind.toLowerCase(),
          onclick: () => sendCommand(kind, "agent", row.agent_id),
        }),
        " ",
      );
    }
    const rows = [...document.querySelectorAll("#fleet tbody tr")];
    const after = rows.find((r) => r.dataset.agent > row.agent_id);
    $("#fleet tbody").insertBefore(tr, after || null);
  }
  tr.dataset.state = row.state;
  tr.querySelector(".col-agent").textContent = row.agent_type ? `${row.agent_id} (${row.agent_type})` : row.agent_id;
  const state = tr.querySelector(".col-state");
  state.replaceChildren(el("span", { class: `badge state state-${row.state}`, text: row.state }));
  tr.querySelector(".col-step").textContent = row.current_step ? `#${row.step_index} ${row.current_step}` : `#${row.step_index}`;
  tr.querySelector(".col-tpm").textContent = row.tokens_per_minute.toLocaleString();
  tr.querySelector(".col-tpm").className = "col-tpm num";
  tr.querySelector(".col-cost").textContent = `$${row.cost_usd.toFixed(4)}`;
  tr.querySelector(".col-cost").className = "col-cost num";
  tr.querySelector(".col-beat").textContent = ago(row.last_heartbeat_at);
  tr.querySelector(".col-chain").replaceChildren(
    el("a", { text: row.correlation_id.slice(0, 12), title: row.correlation_id, onclick: () => showTrace(row.correlation_id) }),
  );
  for (const [kind, allowed] of ACTIONS) {
    tr.querySelector(`button[data-action="${kind}"]`).disabled = !allowed(row.state);
  }
  $("#fleet-empty").hidden = agents.size > 0;
  renderCounts();
}

function renderFleet(rows) {
  const present = new Set(rows.map((r) => r.agent_id));
  for (const tr of document.querySelectorAll("#fleet tbody tr")) {
    if (!present.has(tr.dataset.agent)) {
      agents.delete(tr.dataset.agent);
      tr.remove();
    }
  }
  rows.forEach(renderAgent);
  $("#fleet-empty").hidden = agents.size > 0;
  renderCounts();
}

function renderCounts() {
  const counts = {};
  for (const row of agents.values()) counts[row.state] = (counts[row.state] || 0) + 1;
  $("#counts").textContent = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(" · ");
}

// -- alerts and events -------------------------------------------------------------------

function addAlert(a) {
  const li = el(
    "li",
    { class: `sev-${a.severity} level-${a.level}`, "data-agent": a.agent_id, "data-detector": a.detector },
    el("span", { class: "muted", text: `${clock(a.detected_at)} ` }),
    el("strong", { text: `${a.detector} ` }),
    el("span", { class: "badge", text: `${a.level} · ${a.category}` }),
    ` ${a.agent_id}: ${a.detail} `,
    a.command_id ? el("span", { class: "badge state-killed", text: "KILL issued" }) : "",
    " ",
    el("a", { text: "trace", onclick: () => showTrace(a.correlation_id) }),
  );
  $("#alerts").prepend(li);
  while ($("#alerts").children.length > MAX_ALERTS) $("#alerts").lastChild.remove();
}

function addEvent(e) {
  const what = [e.type, e.action, e.tool && `${e.tool}()`, e.stage, e.error].filter(Boolean).join(" ");
  const li = el("li", { class: `status-${e.status}`, "data-agent": e.agent },
    `${clock(e.at)} ${e.agent} #${e.step} ${what}${e.status !== "ok" ? ` [${e.status}]` : ""}`);
  $("#events").prepend(li);
  while ($("#events").children.length > MAX_EVENTS) $("#events").lastChild.remove();
  if (openChain && e.chain === openChain && !traceTimer) {
    traceTimer = setTimeout(() => { traceTimer = null; showTrace(openChain, false); }, 500);
  }
}

// -- the trace view: graph, timeline and tree --------------------------------------------

function walk(nodes, depth, out) {
  for (const node of nodes) {
    out.push([node, depth]);
    walk(node.children, depth + 1, out);
  }
  return out;
}

function renderGraph(trace) {
  const flat = walk(trace.roots, 0, []);
  const W = 190, H = 44, GX = 60, GY = 14;
  const pos = new Map();
  flat.forEach(([node, depth], i) => pos.set(node.task_id, [20 + depth * (W + GX), 14 + i * (H + GY)]));
  const width = 40 + Math.max(1, ...flat.map(([, d]) => d + 1)) * (W + GX);
  const height = 28 + flat.length * (H + GY);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text) node.textContent = text;
    svg.append(node);
    return node;
  };
  for (const [node] of flat) {
    for (const child of node.children) {
      const [x1, y1] = pos.get(node.task_id);
      const [x2, y2] = pos.get(child.task_id);
      add("path", { d: `M${x1 + W},${y1 + H / 2} C${x1 + W + GX / 2},${y1 + H / 2} ${x2 - GX / 2},${y2 + H / 2} ${x2},${y2 + H / 2}`, stroke: "#4a9eea", fill: "none" });
    }
  }
  const colors = { ok: "#3fb27f", error: "#e05050", killed: "#e05050", running: "#4a9eea" };
  for (const [node] of flat) {
    const [x, y] = pos.get(node.task_id);
    const g = add("g", { class: "graph-node", "data-task": node.task_id });
    const rect = document.createElementNS(ns, "rect");
    Object.entries({ x, y, width: W, height: H, rx: 6, fill: "#18202a", stroke: node.root_cause ? "#fff" : colors[node.status] || "#8894a2", "stroke-width": node.root_cause ? 3 : 1.5 })
      .forEach(([k, v]) => rect.setAttribute(k, v));
    g.append(rect);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", x + 8);
    label.setAttribute("y", y + 18);
    label.setAttribute("fill", "#dde3ea");
    label.textContent = node.agent_id.slice(0, 24);
    g.append(label);
    const sub = document.createElementNS(ns, "text");
    sub.setAttribute("x", x + 8);
    sub.setAttribute("y", y + 35);
    sub.setAttribute("fill", "#8894a2");
    sub.setAttribute("font-size", "11");
    sub.textContent = `${node.status} · ${node.steps.length} steps · ${node.tokens} tok${node.root_cause ? " · ROOT CAUSE" : ""}`;
    g.append(sub);
  }
  $("#trace-graph").replaceChildren(svg);
}

function renderTimeline(trace) {
  const flat = walk(trace.roots, 0, []);
  const start = trace.started_at;
  const span = Math.max(1, trace.duration_ms);
  const box = $("#trace-timeline");
  box.replaceChildren();
  for (const [node, depth] of flat) {
    const track = el("div", { class: "timeline-track" });
    for (const step of node.steps) {
      const left = ((step.started_at - start) / 1000 / span) * 100;
      const width = Math.max(0.3, (step.duration_ms / span) * 100);
      track.append(el("div", {
        class: `timeline-bar ${step.status}${step.root_cause ? " root" : ""}`,
        style: `left:${Math.min(99.7, left)}%;width:${width}%`,
        title: `step ${step.step} ${step.action || ""} ${step.tools.join(",")} ${step.duration_ms} ms ${step.tokens} tok ${step.status}`,
      }));
    }
    box.append(el("div", { class: "timeline-row", "data-task": node.task_id },
      el("span", { class: "timeline-label", text: `${"  ".repeat(depth)}${node.agent_id}`, title: node.task_id }), track));
  }
}

function renderTree(trace) {
  const list = (nodes) => el("ul", {}, ...nodes.map((node) => el("li", {},
    el("span", { class: `task${node.root_cause ? " root-cause" : ""}`, text: `${node.agent_id} task ${node.task_id.slice(0, 12)}` }),
    el("span", { class: "muted", text: ` ${node.status}${node.error ? ` (${node.error})` : ""} · ${node.duration_ms} ms · ${node.tokens} tok · $${node.cost_usd}${node.root_cause && !node.steps.some((s) => s.root_cause) ? "  ← ROOT CAUSE" : ""}` }),
    el("ul", {}, ...node.steps.map((s) => el("li", { class: s.root_cause ? "root-cause" : s.status === "error" ? "step-error" : "", "data-step": `${node.task_id}:${s.step}` },
      `#${s.step} ${s.action || ""} ${s.tools.map((t) => `${t}()`).join(" ")} · ${s.duration_ms} ms · ${s.tokens} tok · ${s.status}`
      + (s.errors.length ? ` · ${s.errors.join("; ")}` : "") + (s.root_cause ? "  ← ROOT CAUSE" : "")))),
    node.children.length ? list(node.children) : "")));
  $("#trace-tree").replaceChildren(el("div", { class: "tree" }, list(trace.roots)));
}

async function showTrace(chain, scroll = true) {
  openChain = chain;
  location.hash = `trace=${encodeURIComponent(chain)}`;
  $("#trace-section").hidden = false;
  $("#trace-id").textContent = chain;
  let response;
  try {
    response = await fetch(`/api/trace/${encodeURIComponent(chain)}`);
  } catch (error) {
    $("#trace-summary").textContent = `the worker does not answer: ${error}`;
    return;
  }
  if (!response.ok) {
    $("#trace-summary").textContent = (await response.json().catch(() => ({}))).error || `HTTP ${response.status}`;
    for (const id of ["#trace-graph", "#trace-timeline", "#trace-tree"]) $(id).replaceChildren();
    return;
  }
  const trace = await response.json();
  const cause = trace.root_cause;
  $("#trace-summary").replaceChildren(
    `${trace.events} events · ${trace.tasks} tasks · ${trace.agents.length} agents · ${trace.duration_ms} ms · ${trace.tokens} tokens · $${trace.cost_usd}`,
    trace.dropped_events ? ` · ${trace.dropped_events} oldest events dropped` : "",
    el("br"),
    cause ? el("span", { class: "root-cause", id: "root-cause", text: `root cause: ${cause.agent_id} step ${cause.step}: ${cause.what}` }) : el("span", { text: "no failure in this chain" }),
  );
  renderGraph(trace);
  renderTimeline(trace);
  renderTree(trace);
  if (scroll) $("#trace-section").scrollIntoView();
}

// -- wiring ------------------------------------------------------------------------------

function connect() {
  const source = new EventSource("/api/stream");
  const badge = $("#connection");
  source.onopen = () => { badge.textContent = "live"; badge.className = "badge online"; };
  source.onerror = () => { badge.textContent = "reconnecting"; badge.className = "badge offline"; };
  source.addEventListener("fleet", (m) => renderFleet(JSON.parse(m.data)));
  source.addEventListener("agent", (m) => renderAgent(JSON.parse(m.data)));
  source.addEventListener("anomaly", (m) => addAlert(JSON.parse(m.data)));
  source.addEventListener("event", (m) => addEvent(JSON.parse(m.data)));
}

$("#trace-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const chain = $("#trace-input").value.trim();
  if (chain) showTrace(chain);
});
$("#trace-close").addEventListener("click", () => {
  openChain = null;
  $("#trace-section").hidden = true;
  history.replaceState(null, "", location.pathname);
});
$("#token-button").addEventListener("click", askToken);
setInterval(() => {
  for (const row of agents.values()) {
    const tr = document.querySelector(`#fleet tbody tr[data-agent="${CSS.escape(row.agent_id)}"]`);
    if (tr) tr.querySelector(".col-beat").textContent = ago(row.last_heartbeat_at);
  }
}, 1000);

connect();
const initial = new URLSearchParams(location.hash.slice(1)).get("trace");
if (initial) showTrace(initial);
