// udpraft dashboard: follows /events (one JSON snapshot per message) and draws it; every
// button is a POST /api/<action>. Plain JavaScript, no build step, no dependencies.
// Node cards are built once per node and then only updated, so a button never moves or
// disappears under the pointer; the tables are redrawn only when their content changed.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const ROLES = {
  leader: ["★", "Leader"], follower: ["○", "Follower"], candidate: ["◆", "Candidate"],
  pre_candidate: ["◇", "Pre-vote"], down: ["✕", "Down"], stopped: ["■", "Stopped"],
  paused: ["‖", "Paused"], starting: ["…", "Starting"], "no answer": ["?", "No answer"],
};
const KIND_ICON = {
  election: "◆", elected: "★", fault: "⚡", heal: "✚", died: "✕", started: "▶",
  restarted: "↻", up: "▲", leader: "★", submit: "✎", transfer: "⇄", warn: "!", info: "·",
  member: "⊕",
};

let frozen = false;
let latest = null;
let built = null; // the node ids the page was built for, joined by ","
const drawn = { log: "", links: "", timeline: "", topo: "" };

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function fmtRate(x) { return x >= 100 ? x.toFixed(0) : x.toFixed(1); }

function fmtTime(ts) {
  const d = new Date(ts * 1000);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function faultText(f) {
  if (f.cut) return "✂ cut";
  const parts = [];
  if (f.delay_ms) parts.push(`${f.delay_ms} ms delay` + (f.jitter_ms ? ` ±${f.jitter_ms}` : ""));
  if (f.drop_pct) parts.push(`${f.drop_pct}% loss`);
  return parts.join(", ");
}

// ------------------------------------------------------------------ connection

function setConn(state, text) {
  const el = $("#conn");
  el.dataset.state = state;
  el.innerHTML = `<span aria-hidden="true">${state === "live" ? "●" : "◌"}</span> ${esc(text)}`;
}

function connect() {
  const es = new EventSource("/events");
  es.onopen = () => setConn("live", "live");
  es.onmessage = (ev) => {
    latest = JSON.parse(ev.data);
    if (!frozen) render(latest);
  };
  es.onerror = () => setConn("lost", "reconnecting…");  // EventSource retries by itself
}

// ------------------------------------------------------------------ actions

async function act(name, body) {
  const out = $("#action-result");
  out.dataset.state = "busy";
  out.textContent = `${name}…`;
  try {
    const r = await fetch(`/api/${name}`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const j = await r.json();
    if (!j.ok) throw new Error(j.error || `HTTP ${r.status}`);
    out.dataset.state = j.errors && j.errors.length ? "warn" : "ok";
    out.textContent = describe(name, body, j);
    return j;
  } catch (e) {
    out.dataset.state = "error";
    out.textContent = `✕ ${name} failed: ${e.message}`;
    return null;
  }
}

function describe(name, body, j) {
  const warn = j.errors && j.errors.length ? ` (not taken by: ${j.errors.join("; ")})` : "";
  switch (name) {
    case "submit": return `✓ "${j.value}" committed at index ${j.index} (term ${j.term})`;
    case "degrade": return `✓ ${faultText(j) || "link faults cleared"} on ${j.nodes.join(",")} → ${j.peers ? j.peers.join(",") : "every peer"}${j.both_ways ? " (both ways)" : ""}${warn}`;
    case "partition": return `✓ split: ${j.groups.map((g) => g.join(",")).join(" | ")} | rest${warn}`;
    case "heal": return `✓ healed everything${warn}`;
    case "transfer": return `✓ asked ${j.asked} to hand leadership to ${j.target}`;
    default: return `✓ ${body.node}: ${j.done || name}${warn}`;
  }
}

function nodeAction(nid, action) {
  if (action === "isolate") return act("partition", { nodes: [nid] });
  if (action === "transfer") return act("transfer", { target: nid });
  return act(action, { node: nid });
}

// ------------------------------------------------------------------ building

function build(s) {
  const ids = s.nodes.map((n) => n.id);
  const box = $("#nodes");
  const tpl = $("#node-tpl");
  // A node added to (or retired from) the running cluster: cards of nodes still there stay
  // as they are; gone ones leave; new ones are appended; the pickers are refilled.
  for (const card of [...box.querySelectorAll(".node[data-node]")]) {
    if (!ids.includes(card.dataset.node)) card.remove();
  }
  for (const id of ids) {
    if (box.querySelector(`.node[data-node="${CSS.escape(id)}"]`)) continue;
    const card = tpl.content.firstElementChild.cloneNode(true);
    card.dataset.node = id;
    card.setAttribute("aria-label", `node ${id}`);
    $(".nid", card).textContent = id;
    for (const b of card.querySelectorAll("button[data-action]")) {
      b.setAttribute("aria-label", `${b.textContent} ${id}`);
      b.addEventListener("click", () => nodeAction(id, b.dataset.action));
    }
    box.appendChild(card);
  }
  const from = $("#link-from");
  const to = $("#link-to");
  const split = $("#split-nodes");
  from.replaceChildren();
  for (const o of [...to.options]) if (o.value) o.remove();
  split.replaceChildren();
  ids.forEach((id, i) => {
    from.add(new Option(id, id, i === 0, i === 0));
    to.add(new Option(id, id, i === 1, i === 1));
    split.insertAdjacentHTML("beforeend",
      `<label class="check"><input type="checkbox" id="split-${esc(id)}" value="${esc(id)}"> ${esc(id)}</label>`);
  });
  $("#cluster-id").textContent = `cluster ${s.cluster}`;
  built = ids.join(",");
}

// ------------------------------------------------------------------ rendering

function render(s) {
  if (built !== s.nodes.map((n) => n.id).join(",")) build(s);
  if ($("#summary").textContent !== s.summary) $("#summary").textContent = s.summary;
  s.nodes.forEach((n) => renderNode(n, s));
  renderLog(s);
  renderLinks(s);
  renderTopo(s);
  renderTimeline(s);
}

function setF(card, field, text) {
  const el = card.querySelector(`[data-f="${field}"]`);
  if (el.textContent !== String(text)) el.textContent = text;
}

function renderNode(n, s) {
  const card = $(`.node[data-node="${n.id}"]`);
  const [icon, label] = ROLES[n.role] || ["?", n.role];
  card.dataset.role = n.role;
  card.dataset.term = n.term;
  card.dataset.live = n.live;
  card.classList.toggle("stale", !n.live);
  $(".role .icon", card).textContent = icon;
  $(".role .rtext", card).textContent = label;
  $(".role", card).className = `role role-${n.role.replace(" ", "-")}`;
  const old = n.live ? "" : " (last seen)";
  setF(card, "term", n.term + old);
  setF(card, "vote", n.vote || "—");
  setF(card, "leader", n.leader || "—");
  setF(card, "commit_index", n.commit_index);
  setF(card, "applied_index", n.applied_index);
  setF(card, "last", `${n.last_log_index} (t${n.last_log_term})`);
  setF(card, "pid", n.pid || "—");
  setF(card, "restarts", n.restarts);
  const out = Object.values(n.rates.out).reduce((a, b) => a + b, 0);
  setF(card, "net", n.live
    ? `sends ${fmtRate(out)} msg/s · drops ${n.drops.injected + n.drops.transport} (${fmtRate(n.drops.per_s)}/s) · retransmits ${n.retransmits.total} (${fmtRate(n.retransmits.per_s)}/s)`
    : (n.role === "no answer" ? "no answer to /status" : `process ${n.state}`));
  setF(card, "fault", nodeFaults(n));
  const pause = $('button[data-action="pause"], button[data-action="resume"]', card);
  const paused = n.state === "paused";
  pause.dataset.action = paused ? "resume" : "pause";
  pause.textContent = paused ? "Resume" : "Pause";
  pause.setAttribute("aria-label", `${pause.textContent} ${n.id}`);
  const stop = $('button[data-action="stop"], button[data-action="start"]', card);
  const held = n.state === "held";
  stop.dataset.action = held ? "start" : "stop";
  stop.textContent = held ? "Start" : "Stop";
  stop.setAttribute("aria-label", `${stop.textContent} ${n.id}`);
  $('button[data-action="transfer"]', card).disabled = n.role === "leader" || !n.live;
  const prog = $("table.progress", card);
  prog.hidden = !n.progress.length;
  const rows = n.progress.map((p) =>
    `<tr><td>${esc(p.peer)}</td><td>${p.match}</td><td>${p.next}</td><td>${esc(p.state)}${p.lag ? ` (−${p.lag})` : ""}</td></tr>`).join("");
  const body = $("tbody", prog);
  if (body.innerHTML !== rows) body.innerHTML = rows;
}

function nodeFaults(n) {
  const f = n.faults || {};
  const parts = [];
  if (f.partition && f.partition.length) parts.push(`✂ cut from ${f.partition.join(",")}`);
  const all = faultText(f.all || {});
  if (all) parts.push(`→ all: ${all}`);
  for (const [p, lf] of Object.entries(f.peers || {})) {
    const t = faultText(lf);
    if (t) parts.push(`→ ${p}: ${t}`);
  }
  return parts.length ? `⚡ ${parts.join(" · ")}` : "";
}

function renderLog(s) {
  const { indexes, rows } = s.log;
  const head = `<tr><th scope="col">node</th>${indexes.map((i) => `<th scope="col">${i}</th>`).join("")}</tr>`;
  const body = s.nodes.map((n) => {
    const row = rows[n.id];
    if (!row) {
      return `<tr data-node="${esc(n.id)}"><th scope="row">${esc(n.id)}</th><td class="gone" colspan="${Math.max(1, indexes.length)}">${esc((ROLES[n.role] || ["", n.role])[1])}: log not readable now</td></tr>`;
    }
    const cells = row.map((e) => {
      if (!e) return `<td class="empty" aria-label="no entry">·</td>`;
      const cls = e.conflict ? "conflict" : e.committed ? "committed" : "pending";
      const mark = e.conflict ? "⚠" : e.committed ? "✓" : "○";
      const data = e.kind === "noop" ? "∅" : e.data;
      const tip = `index ${e.index}, term ${e.term}, ${e.kind}, ${e.size} bytes, ${e.conflict ? "CONFLICT" : e.committed ? "committed" : "not committed"}`;
      return `<td class="entry ${cls} k-${esc(e.kind)}" data-index="${e.index}" data-term="${e.term}" data-committed="${e.committed}" data-conflict="${e.conflict}" data-data="${esc(e.data)}" title="${esc(tip)}"><span class="mark" aria-hidden="true">${mark}</span><span class="t">t${e.term}</span><span class="d">${esc(data)}</span></td>`;
    }).join("");
    return `<tr data-node="${esc(n.id)}"><th scope="row">${esc(n.id)}</th>${cells}</tr>`;
  }).join("");
  const html = head + "\u0000" + body;
  if (html === drawn.log) return;
  drawn.log = html;
  $("#log thead").innerHTML = head;
  $("#log tbody").innerHTML = body;
}

function renderLinks(s) {
  const rows = s.links.map((l) => {
    const f = faultText(l);
    const state = !l.up ? "down" : l.cut ? "cut" : f ? "faulty" : "ok";
    return `<tr data-link="${esc(l.from)}-${esc(l.to)}" class="link-${state}"><th scope="row">${esc(l.from)} → ${esc(l.to)}</th><td>${l.up ? fmtRate(l.out_per_s) : "—"}</td><td>${l.up ? fmtRate(l.in_per_s) : "—"}</td><td class="fault">${esc(!l.up ? "node not answering" : f || "—")}</td></tr>`;
  }).join("");
  if (rows === drawn.links) return;
  drawn.links = rows;
  $("#links tbody").innerHTML = rows;
}

function renderTopo(s) {
  const ids = s.nodes.map((n) => n.id);
  const cx = 160, cy = 130, r = 95;
  const pos = {};
  ids.forEach((id, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / ids.length;
    pos[id] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
  });
  const byPair = {};
  for (const l of s.links) byPair[`${l.from}>${l.to}`] = l;
  let svg = `<title id="topo-t">Nodes and the links between them</title>`;
  for (let i = 0; i < ids.length; i++) {
    for (let j = i + 1; j < ids.length; j++) {
      const a = byPair[`${ids[i]}>${ids[j]}`], b = byPair[`${ids[j]}>${ids[i]}`];
      const [x1, y1] = pos[ids[i]], [x2, y2] = pos[ids[j]];
      const cut = a.cut || b.cut, faulty = faultText(a) || faultText(b);
      const up = a.up && b.up;
      const rate = (a.out_per_s || 0) + (b.out_per_s || 0);
      const cls = !up ? "down" : cut ? "cut" : faulty ? "faulty" : "ok";
      const w = up && !cut ? Math.min(6, 1 + Math.log10(1 + rate)) : 1.5;
      svg += `<line class="edge ${cls}" x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}" stroke-width="${w.toFixed(1)}"/>`;
      if (cut || faulty) {
        const label = cut ? "✂ cut" : faultText(a) || faultText(b);
        svg += `<text class="elabel ${cls}" x="${(x1 + x2) / 2}" y="${(y1 + y2) / 2 - 4}" text-anchor="middle">${esc(label)}</text>`;
      }
    }
  }
  for (const n of s.nodes) {
    const [x, y] = pos[n.id];
    const [icon] = ROLES[n.role] || ["?"];
    svg += `<g class="vnode role-${esc(n.role.replace(" ", "-"))}"><circle cx="${x}" cy="${y}" r="24"/><text x="${x}" y="${y - 2}" text-anchor="middle" class="vid">${esc(n.id)}</text><text x="${x}" y="${y + 13}" text-anchor="middle" class="vicon">${icon} t${n.term}</text></g>`;
  }
  if (svg === drawn.topo) return;
  drawn.topo = svg;
  $("#topo").innerHTML = svg;
}

function renderTimeline(s) {
  const items = s.timeline.slice().reverse().map((e) => {
    const icon = KIND_ICON[e.kind] || "·";
    return `<li class="ev ev-${esc(e.kind)}"><time datetime="${new Date(e.ts * 1000).toISOString()}">${fmtTime(e.ts)}</time> <span class="kind"><span aria-hidden="true">${icon}</span> ${esc(e.kind)}</span> <span class="text">${esc(e.text)}</span></li>`;
  }).join("");
  if (items === drawn.timeline) return;
  drawn.timeline = items;
  $("#timeline").innerHTML = items;
}

// ------------------------------------------------------------------ wiring

function numberOf(sel) {
  const v = Number($(sel).value || 0);
  return Number.isFinite(v) ? v : 0;
}

function wire() {
  $("#submit-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("#submit-value").value.trim();
    if (value) act("submit", { value });
  });
  const linkBody = (clear) => {
    const body = {
      nodes: [$("#link-from").value], both_ways: $("#link-both").checked,
      delay_ms: clear ? 0 : numberOf("#link-delay"), drop_pct: clear ? 0 : numberOf("#link-loss"),
    };
    if ($("#link-to").value) body.peers = [$("#link-to").value];
    return body;
  };
  $("#link-form").addEventListener("submit", (ev) => { ev.preventDefault(); act("degrade", linkBody(false)); });
  $("#link-clear").addEventListener("click", () => act("degrade", linkBody(true)));
  $("#split-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const side = [...document.querySelectorAll("#split-nodes input:checked")].map((i) => i.value);
    if (!side.length) {
      $("#action-result").dataset.state = "error";
      $("#action-result").textContent = "✕ tick the nodes of one side first";
      return;
    }
    act("partition", { nodes: side });
  });
  $("#heal-btn").addEventListener("click", () => act("heal", {}));
  $("#freeze").addEventListener("click", () => {
    frozen = !frozen;
    $("#freeze").setAttribute("aria-pressed", String(frozen));
    $("#freeze").textContent = frozen ? "Resume view" : "Freeze view";
    if (!frozen && latest) render(latest);
  });
}

wire();
connect();
