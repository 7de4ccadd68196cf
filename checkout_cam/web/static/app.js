// The page: photo upload with Top-K bars, and (under `serve --http`) the lane's live view and status.
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

async function pollStatus() {
  try {
    const s = await (await fetch("/api/status")).json();
    const l = s.lane;
    if (!l) return;
    const cam = $("st-camera");
    cam.textContent = l.camera;
    cam.className = l.camera === "online" ? "online" : "offline";
    $("st-camera-fps").textContent = fmt(l.camera_fps);
    $("st-inference-fps").textContent = fmt(l.inference_fps);
    $("st-latency").textContent = `${fmt(l.latency_p50_ms, 0)} / ${fmt(l.latency_p95_ms, 0)} ms`;
    $("st-dropped").textContent = String(l.dropped);
    $("st-items").textContent = `${l.items} (${l.flagged})`;
    $("status").dataset.updated = String(Date.now());
    const d = l.decision;
    const b = $("decision-band");
    if (!d || d.stale || d.empty || !d.top.length) {
      b.className = "band idle";
      b.textContent = d && d.error ? "inference error" : "no item";
      $("decision-bars").replaceChildren();
    } else {
      band(b, d.review, d.review_reasons);
      bars($("decision-bars"), d.top);
    }
    $("live-note").textContent = l.camera === "online" ? "" : "CAMERA OFFLINE: reconnecting…";
  } catch (err) {
    $("live-note").textContent = `status unavailable: ${err}`;
  }
}

async function pollEvents() {
  try {
    const events = await (await fetch("/api/events?limit=10")).json();
    const rows = events.slice().reverse().map((e) => {
      const tr = document.createElement("tr");
      const t = typeof e.t_end === "string" ? new Date(e.t_end).toLocaleTimeString() : String(e.t_end);
      const cells = [t, e.label, pct(e.confidence), e.review ? "REVIEW: " + words(e.review_reasons) : "OK",
                     `${e.frame_start}-${e.frame_end}`];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        td.textContent = c;
        if (i === 3) td.className = e.review ? "review" : "ok";
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

async function init() {
  setupUpload();
  const info = await (await fetch("/api/info")).json();
  $("model-name").textContent = info.model.name;
  $("untrained").hidden = info.model.trained;
  maxBytes = info.max_upload_bytes;
  $("max-mb").textContent = (maxBytes / 1048576).toFixed(0);
  if (info.lane) {
    $("lane").hidden = false;
    $("lane-id").textContent = info.lane;
    $("lane-name").textContent = "lane " + info.lane;
    $("lane-name").hidden = false;
    $("live").src = "/stream.mjpg";
    $("live").addEventListener("error", () => {
      $("live-note").textContent = "live view unavailable (too many viewers?); showing snapshots";
      setInterval(() => { $("live").src = "/latest.jpg?t=" + Date.now(); }, 1000);
    }, { once: true });
    pollStatus();
    pollEvents();
    setInterval(pollStatus, 1000);
    setInterval(pollEvents, 2000);
  }
}

init();
