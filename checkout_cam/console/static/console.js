// The attendant's page: lane grid, review queue (live via server-sent events), actions, history.
// Everything the server sends is put on the page with textContent, never as HTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const ROLE = document.querySelector('meta[name="role"]').content;
const REASONS = {
  low_confidence: "low confidence",
  low_margin: "close call",
  untrained: "untrained model",
};
const OUTCOME_WORDS = { accept: "accepted", correct: "corrected", no_item: "no item" };

const known = new Set();        // queue item ids already shown
let firstLoad = true;
let labels = [];
let lastState = null;
let serverOffset = 0;           // server clock minus ours, ms
window.__queueSeen = {};        // event id -> Date.now() when its card appeared (tests measure latency)

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "width") e.style.width = v;   // CSSOM, which the page's CSP allows (style attributes it does not)
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() + serverOffset - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function duration(seconds) {
  if (seconds == null) return "";
  if (seconds < 60) return `${seconds.toFixed(0)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function stat(stats, ...names) {
  if (!stats) return null;
  for (const n of names) if (typeof stats[n] === "number") return stats[n];
  return null;
}

async function api(path, options = {}) {
  const r = await fetch(path, { credentials: "same-origin", ...options });
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  return r;
}

// ---------------------------------------------------------------- alert and sound

let audio = null;
document.addEventListener("click", () => {
  if (!audio && window.AudioContext) audio = new AudioContext();
}, { once: true });

function beep() {
  if (!audio) return;
  const o = audio.createOscillator(), g = audio.createGain();
  o.frequency.value = 880;
  g.gain.setValueAtTime(0.2, audio.currentTime);
  g.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.4);
  o.connect(g).connect(audio.destination);
  o.start();
  o.stop(audio.currentTime + 0.4);
}

function alertNew(items) {
  const box = document.getElementById("alert");
  const lanes = [...new Set(items.map(i => i.lane_id))].join(", ");
  box.textContent = items.length === 1 ? `New item to review on ${lanes}` : `${items.length} new items to review (${lanes})`;
  box.classList.remove("hidden");
  box.classList.remove("flash");
  void box.offsetWidth;           // restart the animation
  box.classList.add("flash");
  clearTimeout(alertNew.timer);
  alertNew.timer = setTimeout(() => box.classList.add("hidden"), 8000);
  beep();
  if (navigator.vibrate) navigator.vibrate(200);
}

// ---------------------------------------------------------------- lanes

function renderLanes(lanes) {
  const box = document.getElementById("lanes");
  box.replaceChildren();
  if (!lanes.length) { box.append(el("p", { class: "empty", text: "No lane has reported yet." })); return; }
  for (const l of lanes) {
    const cam = stat(l.stats, "camera_fps"), inf = stat(l.stats, "inference_fps");
    // the lane's MQTT link reports its outbox under stats.mqtt (fleet/lane_stats.py)
    const outbox = stat(l.stats && l.stats.mqtt, "outbox_depth") ?? stat(l.stats, "outbox_depth", "outbox");
    const item = l.current_label
      ? el("span", { class: l.current_review ? "item review" : "item", text: l.current_label })
      : el("span", { class: "item none", text: "no item" });
    box.append(el("div", { class: `lane ${l.available}`, "data-lane": l.lane_id },
      el("div", { class: "lane-head" },
        el("b", { text: l.lane_id }),
        el("span", { class: `avail ${l.available}`, text: l.available }),
        el("span", { class: "since", "data-since": l.available_since || "", text: l.available_since ? `for ${ago(l.available_since)}` : "" })),
      el("div", { class: "lane-item" }, item,
        l.stats && l.stats.camera_online === false ? el("span", { class: "cam-off", text: " camera offline" }) : null),
      el("div", { class: "lane-stats" },
        el("span", { text: `camera ${cam == null ? "–" : cam.toFixed(1)} fps` }),
        el("span", { text: `model ${inf == null ? "–" : inf.toFixed(1)} fps` }),
        el("span", { text: `outbox ${outbox == null ? "–" : outbox}` }))));
  }
  const sel = document.getElementById("f-lane"), chosen = sel.value;
  const have = new Set([...sel.options].map(o => o.value));
  for (const l of lanes) if (!have.has(l.lane_id)) sel.append(el("option", { value: l.lane_id, text: l.lane_id }));
  sel.value = chosen;
}

// ---------------------------------------------------------------- queue

function topBars(top) {
  return el("ol", { class: "top3" }, ...top.map(p => el("li", {},
    el("span", { class: "lbl", text: p.label }),
    el("span", { class: "bar" }, el("span", { class: "fill", width: `${Math.round(p.prob * 100)}%` })),
    el("span", { class: "pct", text: `${(p.prob * 100).toFixed(0)}%` }))));
}

function matches(query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return [];
  return labels.filter(l => words.every(w => l.toLowerCase().includes(w))).slice(0, 8);
}

function correctPanel(item, card) {
  const input = el("input", { type: "search", class: "search", placeholder: "type the product…", "aria-label": "right product", autocomplete: "off" });
  const list = el("div", { class: "choices" });
  const update = () => {
    const q = input.value.trim();
    list.replaceChildren();
    const found = matches(q);
    for (const l of found) {
      list.append(el("button", { type: "button", class: "choice", "data-label": l, text: l,
        onclick: () => send(item, card, { outcome: "correct", label: l, index: labels.indexOf(l) }) }));
    }
    if (q && !found.some(l => l.toLowerCase() === q.toLowerCase())) {
      list.append(el("button", { type: "button", class: "choice free", "data-free": q, text: `Not in the list: use “${q}”`,
        onclick: () => send(item, card, { outcome: "correct", label: q, index: null }) }));
    }
  };
  input.addEventListener("input", update);
  input.addEventListener("keydown", e => {
    if (e.key === "Enter") { e.preventDefault(); const b = list.querySelector("button"); if (b) b.click(); }
    if (e.key === "Escape") panel.remove();
  });
  // the model's own Top-3 first: most corrections are one of them
  const quick = el("div", { class: "choices quick" }, ...item.top.slice(1).map(p =>
    el("button", { type: "button", class: "choice", "data-label": p.label, text: p.label,
      onclick: () => send(item, card, { outcome: "correct", label: p.label, index: p.index }) })));
  const panel = el("div", { class: "correct-panel" }, quick, input, list);
  setTimeout(() => input.focus(), 0);
  return panel;
}

async function send(item, card, answer) {
  card.classList.add("busy");
  const msg = card.querySelector(".msg");
  try {
    const r = await api("/api/resolve", {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
      body: JSON.stringify({ event_id: item.id, ...answer }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.detail || `HTTP ${r.status}`);
    card.classList.add("done");
    msg.textContent = `${OUTCOME_WORDS[answer.outcome]}${body.label ? ": " + body.label : ""}`;
    setTimeout(refresh, 300);
    loadHistory();
  } catch (e) {
    msg.textContent = `Not saved: ${e.message}`;
    msg.classList.add("error");
  } finally {
    card.classList.remove("busy");
  }
}

function queueCard(item) {
  const card = el("article", { class: "card", id: `item-${item.id}`, "data-id": item.id, "data-lane": item.lane_id });
  card._item = item;   // updateCard swaps it; the buttons below read the current one
  const pic = item.picture
    ? el("img", { class: "pic", src: item.picture, alt: `scanning area of ${item.lane_id}` })
    : el("div", { class: "pic none", text: "no picture" });
  const reasons = (item.reasons || []).map(r => REASONS[r] || r.replace(/_/g, " ")).join(", ");
  const actions = el("div", { class: "actions" });
  if (ROLE === "attendant") {
    actions.append(
      el("button", { type: "button", class: "accept primary", text: `Accept: ${item.label}`,
        onclick: () => send(card._item, card, { outcome: "accept" }) }),
      el("button", { type: "button", class: "correct", text: "Correct…", onclick: () => {
        const open = card.querySelector(".correct-panel");
        if (open) open.remove(); else card.querySelector(".body").append(correctPanel(card._item, card));
      } }),
      el("button", { type: "button", class: "noitem", text: "No item", onclick: () => send(card._item, card, { outcome: "no_item" }) }));
  }
  card.append(pic, el("div", { class: "body" },
    el("div", { class: "card-head" },
      el("b", { class: "lane-name", text: item.lane_id }),
      el("span", { class: "waited", "data-since": item.received_at, text: `waiting ${ago(item.received_at)}` }),
      item.state === "open" ? el("span", { class: "pill live", text: "on the counter" }) : null),
    el("p", { class: "reasons", text: `Flagged: ${reasons || "review"}` }),
    topBars(item.top), actions, el("p", { class: "msg" })));
  return card;
}

function updateCard(card, item) {
  const fresh = queueCard(item);
  card._item = item;
  for (const sel of [".pic", ".top3", ".reasons", ".card-head"]) {
    const a = card.querySelector(sel), b = fresh.querySelector(sel);
    if (a && b) a.replaceWith(b);
  }
  const accept = card.querySelector("button.accept");
  if (accept) accept.textContent = `Accept: ${item.label}`;
}

function renderQueue(queue) {
  const box = document.getElementById("queue");
  document.getElementById("queue-count").textContent = queue.length;
  document.title = queue.length ? `(${queue.length}) checkout_cam console` : "checkout_cam console";
  const ids = new Set(queue.map(q => q.id));
  for (const card of [...box.querySelectorAll(".card")]) {
    if (!ids.has(card.dataset.id) && !card.classList.contains("leaving")) {
      card.classList.add("leaving");
      // an answered card shows its answer for a moment; one answered elsewhere goes at once
      setTimeout(() => card.remove(), card.classList.contains("done") ? 600 : 0);
    }
  }
  const fresh = [];
  for (const item of queue) {
    const sig = JSON.stringify([item.picture, item.state, item.top, item.reasons, item.label]);
    const old = document.getElementById(`item-${item.id}`);
    if (old) {
      // the picture may come after the item, and its end may bring a new Top-3: update the card in
      // place (its buttons and an open Correct panel stay where the attendant's finger is)
      if (old.dataset.sig !== sig && !old.classList.contains("leaving")) {
        updateCard(old, item);
        old.dataset.sig = sig;
      }
      continue;
    }
    const card = queueCard(item);
    card.dataset.sig = sig;
    // oldest first: insert before the first card that is newer
    const after = [...box.querySelectorAll(".card:not(.leaving)")].find(c => c.dataset.received > item.received_at);
    card.dataset.received = item.received_at;
    box.insertBefore(card, after || null);
    window.__queueSeen[item.id] = Date.now();
    if (!known.has(item.id)) { known.add(item.id); if (!firstLoad) { fresh.push(item); card.classList.add("new"); } }
  }
  const empty = box.querySelector(".empty");
  if (queue.length && empty) empty.remove();
  if (!queue.length && !empty) box.append(el("p", { class: "empty", text: "Nothing to review." }));
  if (fresh.length) alertNew(fresh);
  const unknown = queue.flatMap(q => q.top.map(p => p.label)).some(l => !labels.includes(l));
  if (unknown) loadLabels();
}

function tick() {
  for (const e of document.querySelectorAll("[data-since]")) {
    if (!e.dataset.since) continue;
    e.textContent = e.classList.contains("waited") ? `waiting ${ago(e.dataset.since)}` : `for ${ago(e.dataset.since)}`;
  }
}

// ---------------------------------------------------------------- history

function historyQuery() {
  const p = new URLSearchParams();
  const lane = document.getElementById("f-lane").value, outcome = document.getElementById("f-outcome").value;
  const hours = document.getElementById("f-time").value;
  if (lane) p.set("lane", lane);
  if (outcome) p.set("outcome", outcome);
  if (hours) p.set("since", new Date(Date.now() + serverOffset - hours * 3600e3).toISOString());
  return p.toString();
}

async function loadHistory() {
  const q = historyQuery();
  document.getElementById("csv").href = "/history.csv" + (q ? "?" + q : "");
  const r = await api("/api/history" + (q ? "?" + q : ""));
  if (!r.ok) return;
  const rows = (await r.json()).history;
  const body = document.querySelector("#history tbody");
  body.replaceChildren(...rows.map(h => el("tr", { "data-id": h.event_id, class: h.outcome },
    el("td", { text: new Date(h.resolved_at).toLocaleString() }),
    el("td", { text: h.lane_id }),
    el("td", { text: OUTCOME_WORDS[h.outcome] + (h.outcome === "correct" ? `: ${h.label}` : "") }),
    el("td", { text: h.model_label ? `${h.model_label}${h.model_confidence != null ? ` (${Math.round(h.model_confidence * 100)}%)` : ""}` : "" }),
    el("td", { class: "who", text: h.resolver }),
    el("td", { text: duration(h.waited_s) }))));
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: "6", class: "empty", text: "Nothing resolved in this range." })));
}

// ---------------------------------------------------------------- state and live updates

async function loadLabels() {
  if (loadLabels.busy) return;
  loadLabels.busy = true;
  try {
    const r = await api("/api/labels");
    if (r.ok) labels = (await r.json()).labels;
  } finally { loadLabels.busy = false; }
}

async function refresh() {
  if (refresh.running) { refresh.again = true; return; }
  refresh.running = true;
  try {
    const r = await api("/api/state");
    if (!r.ok) return;
    const s = await r.json();
    serverOffset = Date.parse(s.now) - Date.now();
    lastState = s;
    const broker = document.getElementById("broker");
    broker.textContent = s.broker === false ? "broker offline" : "broker ok";
    broker.className = s.broker === false ? "pill bad" : "pill ok";
    renderLanes(s.lanes);
    renderQueue(s.queue);
    const dropped = Object.entries(s.counters).filter(([k]) => k.startsWith("dropped_")).reduce((a, [, v]) => a + v, 0);
    document.getElementById("counters").textContent = dropped ? `${dropped} malformed message(s) dropped` : "";
    firstLoad = false;
  } finally {
    refresh.running = false;
    if (refresh.again) { refresh.again = false; refresh(); }
  }
}

function live() {
  const es = new EventSource("/api/stream");
  es.addEventListener("version", () => refresh());
  es.onerror = () => { document.getElementById("broker").textContent = "reconnecting…"; };
}

document.addEventListener("DOMContentLoaded", async () => {
  if (ROLE !== "attendant") document.getElementById("viewer-note").classList.remove("hidden");
  for (const id of ["f-lane", "f-outcome", "f-time"]) document.getElementById(id).addEventListener("change", loadHistory);
  await loadLabels();
  await refresh();
  loadHistory();
  live();
  setInterval(tick, 1000);
  setInterval(refresh, 15000);   // a safety net if the event stream is cut by a proxy
  setInterval(loadHistory, 30000);
});
