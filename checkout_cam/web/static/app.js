// The page: photo upload with Top-K bars, and under `serve --http` the lanes: one lane's live view and
// status (the only lane, or ?lane=ID), or with several lanes an overview of them all (snapshots, camera,
// the current decision), each card opening its lane.
"use strict";

const $ = (id) => document.getElementById(id);
const REASONS = { low_confidence: "low confidence", low_margin: "top two too close", untrained: "untrained model" };
const words = (reasons) => reasons.map((r) => REASONS[r] || r.replace(/_/g, " ")).join(", ");
const pct = (p) => (p * 100).toFixed(1) + "%";

function bars(container, top) {
  container.replaceChildren(...top.map((t) => {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.dataset.label = t.label;
    row.dataset.prob = String(t.prob);
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = t.label;
    label.title = t.label;
    const track = document.createElement("div");
    track.className = "bar-track";
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.style.width = (Math.max(0, Math.min(1, t.prob)) * 100).toFixed(2) + "%";
    track.append(fill);
    const num = document.createElement("span");
    num.className = "bar-pct";
    num.textContent = pct(t.prob);
    row.append(label, track, num);
    return row;
  }));
}

function band(el, review, reasons) {
  el.hidden = false;
  el.className = "band " + (review ? "review" : "ok");
  el.textContent = review ? "REVIEW: " + words(reasons) : "OK";
}

// An attendant's answer (a ResolutionRecord from the console, via MQTT), as the overlay says it.
function resolvedWords(r) {
  if (r.outcome === "no_item") return `no item (${r.resolver})`;
  return `${r.outcome === "accept" ? "accepted" : "resolved"} by ${r.resolver}` + (r.label ? `: ${r.label}` : "");
}

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

let maxBytes = 10 * 1024 * 1024;

async function upload(file) {
  showError("");
  $("bars").replaceChildren();
  $("verdict").hidden = true;
  $("timing").textContent = "";
  const preview = $("preview");
  if (file.type.startsWith("image/")) {
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  } else {
    preview.hidden = true;
  }
  if (file.size > maxBytes) {
    showError(`${file.name} is too big: ${(file.size / 1048576).toFixed(1)} MB, the limit is ${(maxBytes / 1048576).toFixed(0)} MB.`);
    return;
  }
  const form = new FormData();
  form.append("image", file, file.name);
  let answer;
  try {
    const resp = await fetch("/predict", { method: "POST", body: form });
    answer = await resp.json().catch(() => ({ detail: `the server answered ${resp.status} without JSON` }));
    if (!resp.ok) {
      showError(`Could not classify the photo: ${answer.detail || resp.statusText} (HTTP ${resp.status})`);
      return;
    }
  } catch (err) {
    showError(`Could not reach the server: ${err}`);
    return;
  }
  bars($("bars"), answer.top);
  band($("verdict"), answer.review, answer.review_reasons);
  $("timing").textContent = `${answer.model.name} · ${answer.latency_ms.toFixed(0)} ms`;
  $("photo").dataset.done = String(Date.now());
}

function setupUpload() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
  });
}

function fmt(v, digits = 1) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

const lanePath = (id) => "/lanes/" + encodeURIComponent(id);
const apiLanePath = (id) => "/api/lanes/" + encodeURIComponent(id);

// The decision band (and bars, when given) of a lane's status, as the overlay says it.
function showDecision(b, barsEl, d) {
  if (!d || d.stale || d.empty || !d.top.length) {
    b.className = "band idle";
    b.textContent = d && d.error ? "inference error" : "no item";
    if (barsEl) barsEl.replaceChildren();
    return;
  }
  band(b, d.review, d.review_reasons);
  if (d.resolution) {
    b.className = "band resolved";
    b.textContent = resolvedWords(d.resolution).replace(/^./, (c) => c.toUpperCase());
  } else if (!barsEl) {
    b.textContent = (d.review ? "REVIEW " : "OK ") + d.top[0].label;
  }
  if (barsEl) bars(barsEl, d.top);
}

function showLane(l) {
  const cam = $("st-camera");
  cam.textContent = l.camera;
  cam.className = l.camera === "online" ? "online" : "offline";
  $("st-camera-fps").textContent = fmt(l.camera_fps);
  $("st-inference-fps").textContent = fmt(l.inference_fps);
  $("st-latency").textContent = `${fmt(l.latency_p50_ms, 0)} / ${fmt(l.latency_p95_ms, 0)} ms`;
  $("st-dropped").textContent = String(l.dropped);
  $("st-items").textContent = `${l.items} (${l.flagged})`;
  $("status").dataset.updated = String(Date.now());
  showDecision($("decision-band"), $("decision-bars"), l.decision);
  $("live-note").textContent = l.camera === "online" ? "" : "CAMERA OFFLINE: reconnecting…";
}

async function pollStatus(laneId) {
  try {
    const s = await (await fetch("/api/status")).json();
    const l = s.lanes.find((x) => x.lane_id === laneId);
    if (l) showLane(l);
  } catch (err) {
    $("live-note").textContent = `status unavailable: ${err}`;
  }
}

async function pollEvents(laneId) {
  try {
    const events = await (await fetch(apiLanePath(laneId) + "/events?limit=10")).json();
    const rows = events.slice().reverse().map((e) => {
      const tr = document.createElement("tr");
      const t = typeof e.t_end === "string" ? new Date(e.t_end).toLocaleTimeString() : String(e.t_end);
      const verdict = e.resolution ? resolvedWords(e.resolution)
        : e.review ? "REVIEW: " + words(e.review_reasons) : "OK";
      const cells = [t, e.label, pct(e.confidence), verdict, `${e.frame_start}-${e.frame_end}`];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        td.textContent = c;
        if (i === 3) td.className = e.resolution ? "resolved" : e.review ? "review" : "ok";
        tr.append(td);
      });
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 5;
      td.className = "empty";
      td.textContent = "no item closed yet";
      tr.append(td);
      rows.push(tr);
    }
    $("events").tBodies[0].replaceChildren(...rows);
  } catch (err) { /* the status poll reports trouble */ }
}

// One lane, full size: the MJPEG live view (snapshots once the viewer cap is reached).
function openLane(laneId, several) {
  $("lane").hidden = false;
  $("all-lanes").hidden = !several;
  $("lane-id").textContent = laneId;
  $("lane-name").textContent = "lane " + laneId;
  $("lane-name").hidden = false;
  document.title = `checkout-cam · lane ${laneId}`;
  const live = $("live");
  live.src = lanePath(laneId) + "/stream.mjpg";
  live.addEventListener("error", () => {
    $("live-note").textContent = "live view unavailable (too many viewers?); showing snapshots";
    setInterval(() => { live.src = lanePath(laneId) + "/latest.jpg?t=" + Date.now(); }, 1000);
  }, { once: true });
  pollStatus(laneId);
  pollEvents(laneId);
  setInterval(() => pollStatus(laneId), 1000);
  setInterval(() => pollEvents(laneId), 2000);
}

// Every lane at a glance: a snapshot a second each (not a stream each: one JPEG per lane per second
// costs the box little), the camera's state and the current decision.
function laneCard(laneId) {
  const a = document.createElement("a");
  a.className = "lane-card";
  a.dataset.lane = laneId;
  a.href = "/?lane=" + encodeURIComponent(laneId);
  const snap = document.createElement("div");
  snap.className = "snap";
  const img = document.createElement("img");
  img.alt = `lane ${laneId}`;
  img.width = 320;
  img.height = 240;
  img.hidden = true;
  const note = document.createElement("span");
  note.className = "snap-note";
  note.textContent = "waiting for a picture…";
  snap.append(img, note);
  const head = document.createElement("div");
  head.className = "lane-card-head";
  const name = document.createElement("strong");
  name.textContent = laneId;
  const cam = document.createElement("span");
  cam.className = "cam";
  cam.textContent = "–";
  head.append(name, cam);
  const b = document.createElement("div");
  b.className = "band idle";
  b.textContent = "no item";
  const figs = document.createElement("div");
  figs.className = "lane-card-figs";
  a.append(snap, head, b, figs);
  return a;
}

function refreshSnapshot(card) {
  const img = card.querySelector("img");
  if (img.dataset.loading === "1") return;   // the previous one is still on its way
  img.dataset.loading = "1";
  const note = card.querySelector(".snap-note");
  const done = () => { img.dataset.loading = "0"; };
  img.onload = () => {
    done();
    img.hidden = false;
    note.hidden = true;
    card.dataset.shown = String(Date.now());
  };
  img.onerror = () => {   // 503 until the camera's first frame
    done();
    img.hidden = true;
    note.hidden = false;
    note.textContent = card.classList.contains("offline") ? "CAMERA OFFLINE: reconnecting…" : "no picture yet";
  };
  img.src = lanePath(card.dataset.lane) + "/latest.jpg?t=" + Date.now();
}

function showCard(card, l) {
  const cam = card.querySelector(".cam");
  cam.textContent = l.camera;
  cam.className = "cam " + (l.camera === "online" ? "online" : "offline");
  card.classList.toggle("offline", l.camera !== "online");
  showDecision(card.querySelector(".band"), null, l.decision);
  card.querySelector(".lane-card-figs").textContent =
    `${fmt(l.camera_fps)} fps · ${fmt(l.inference_fps)} results/s · ` +
    (l.latency_p95_ms === null ? "" : `p95 ${fmt(l.latency_p95_ms, 0)} ms · `) +
    `${l.items} items (${l.flagged} flagged)`;
  card.dataset.updated = String(Date.now());
}

function openOverview(laneIds, unknown) {
  $("lanes").hidden = false;
  $("lanes-count").textContent = String(laneIds.length);
  $("lanes-note").textContent = unknown ? `There is no lane "${unknown}" here; these are the lanes.` : "";
  const cards = laneIds.map(laneCard);
  $("lane-cards").replaceChildren(...cards);
  const poll = async () => {
    cards.forEach(refreshSnapshot);
    try {
      const s = await (await fetch("/api/status")).json();
      for (const l of s.lanes) {
        const card = cards.find((c) => c.dataset.lane === l.lane_id);
        if (card) showCard(card, l);
      }
      $("lanes").dataset.updated = String(Date.now());
    } catch (err) {
      $("lanes-note").textContent = `status unavailable: ${err}`;
    }
  };
  poll();
  setInterval(poll, 1000);
}

async function init() {
  setupUpload();
  const info = await (await fetch("/api/info")).json();
  $("model-name").textContent = info.model.name;
  $("untrained").hidden = info.model.trained;
  maxBytes = info.max_upload_bytes;
  $("max-mb").textContent = (maxBytes / 1048576).toFixed(0);
  const laneIds = info.lanes || [];
  const asked = new URLSearchParams(location.search).get("lane");
  if (laneIds.length === 1) openLane(laneIds[0], false);
  else if (asked && laneIds.includes(asked)) openLane(asked, true);
  else if (laneIds.length > 1) openOverview(laneIds, asked);
}

init();
