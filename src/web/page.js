// The installer's page: polls /api/state once a second and reloads each camera's preview when a
// new frame was recognised. Read-only; the token (when the unit needs one) rides in the URL.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = (path, extra) => {
  const p = new URLSearchParams(extra || {});
  if (token) p.set("token", token);
  const s = p.toString();
  return s ? path + "?" + s : path;
};
const el = (tag, attrs, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const cams = {};

function cameraCard(name) {
  const card = el("section", { class: "camera", id: "camera-" + name });
  card.append(el("h2", {}, "Camera " + name));
  const frame = el("div", { class: "frame" });
  const img = el("img", { alt: "preview of " + name, "data-loaded": "0" });
  const canvas = el("canvas", { width: 640, height: 360 });
  frame.append(img, canvas);
  const facts = el("div", { class: "facts" });
  card.append(frame, facts);
  document.getElementById("cameras").append(card);
  const cam = { img, canvas, facts, shown: null, loading: false, state: null };
  img.onload = () => { img.dataset.loaded = "1"; cam.loading = false; draw(cam); };
  img.onerror = () => { cam.loading = false; };
  return cam;
}

function draw(cam) {
  const s = cam.state;
  const c = cam.canvas;
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  if (!s || !s.width) return;
  const sx = c.width / s.width, sy = c.height / s.height;
  ctx.lineWidth = 2;
  ctx.font = "bold 16px monospace";
  for (const b of s.boxes) {
    const good = b.w >= s.best_min && b.w <= s.best_max;
    ctx.strokeStyle = good ? "#2ecc40" : "#ff9f1a";
    ctx.strokeRect(b.x * sx, b.y * sy, b.w * sx, b.h * sy);
    const label = `${b.text} ${Math.round(b.w)}px`;
    const ty = Math.max(16, b.y * sy - 4);
    ctx.fillStyle = "rgba(0,0,0,0.6)";
    ctx.fillRect(b.x * sx, ty - 15, ctx.measureText(label).width + 6, 18);
    ctx.fillStyle = good ? "#2ecc40" : "#ff9f1a";
    ctx.fillText(label, b.x * sx + 3, ty);
  }
}

function fact(parent, name, value, cls) {
  const s = el("span", cls ? { class: cls } : {});
  s.append(el("b", {}, name + ": "), document.createTextNode(value));
  parent.append(s);
}

function showCamera(c, st, health) {
  const cam = cams[c.name] || (cams[c.name] = cameraCard(c.name));
  const best_min = st.best_plate_min_px;
  const best_max = Math.round(c.width * st.best_plate_max_fraction);
  cam.state = Object.assign({}, c, { best_min, best_max });
  if (c.seq !== null && c.seq !== cam.shown && !cam.loading) {
    cam.loading = true;
    cam.shown = c.seq;
    cam.img.src = q("preview/" + encodeURIComponent(c.name) + ".jpg", { seq: c.seq });
  } else {
    draw(cam);
  }
  const h = (health && health.cameras || []).find((x) => x.name === c.name) || {};
  cam.facts.textContent = "";
  fact(cam.facts, "state", h.state || "?", h.state === "streaming" ? "ok" : "warn");
  fact(cam.facts, "fps", h.fps !== undefined ? h.fps.toFixed(1) : "?");
  fact(cam.facts, "dropped", String(h.frames_dropped ?? "?"));
  fact(cam.facts, "frame", c.width ? `${c.width}x${c.height} #${c.seq}` : "none yet");
  const widths = c.boxes.map((b) => Math.round(b.w));
  const inRange = widths.length && widths.every((w) => w >= best_min && w <= best_max);
  fact(cam.facts, "plate width", widths.length ? widths.join(", ") + " px" : "no plate in view",
    widths.length ? (inRange ? "ok" : "warn") : "");
  fact(cam.facts, "reads best", `${best_min}-${best_max} px`);
}

function showReads(reads) {
  const body = document.getElementById("reads");
  body.textContent = "";
  for (const r of reads) {
    const tr = el("tr", { class: "read" });
    const crop = el("td");
    crop.append(el("img", { class: "crop", alt: "crop", src: q("crop/" + encodeURIComponent(r.id) + ".jpg") }));
    tr.append(crop, el("td", { class: "plate" }, r.plate), el("td", {}, r.confidence.toFixed(2)),
      el("td", {}, r.camera), el("td", {}, r.captured_at.replace("T", " ").replace(/\.\d+Z$/, "Z")));
    body.append(tr);
  }
}

function showHealth(h) {
  const dl = document.getElementById("health");
  dl.textContent = "";
  if (!h) return;
  const rows = [
    ["uptime", h.uptime_s + " s"], ["inference", h.inference_ms.toFixed(1) + " ms/frame"],
    ["reads", h.reads_total], ["buffered", h.reads_buffered],
    ["oldest unsent", h.oldest_unsent_age_s == null ? "none" : h.oldest_unsent_age_s.toFixed(0) + " s"],
    ["evictions", h.evictions], ["reads lost", h.reads_lost], ["quarantined", h.quarantined],
    ["outbox", (h.outbox_bytes / 1048576).toFixed(1) + " MiB"],
    ["disk free", h.disk_free_bytes == null ? "?" : (h.disk_free_bytes / 1073741824).toFixed(2) + " GiB"],
    ["frames recognised", h.frames_recognized], ["plate boxes", h.detections], ["boxes not plates", h.boxes_not_plates],
    ["passes dropped", `${h.passes_dropped.noise} noise, ${h.passes_dropped.low_confidence} low conf., ${h.passes_dropped.implausible} implausible`],
    ["logs dropped", h.logs_dropped], ["session takeovers", h.session_takeovers],
  ];
  for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", {}, String(v)));
}

async function poll() {
  try {
    const r = await fetch(q("api/state"), { cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + (await r.text()));
    const st = await r.json();
    document.getElementById("device").textContent = st.device;
    document.getElementById("version").textContent = "v" + st.version;
    for (const c of st.cameras) showCamera(c, st, st.health);
    showReads(st.reads);
    showHealth(st.health);
    document.getElementById("error").textContent = "";
    document.body.dataset.polled = String((Number(document.body.dataset.polled) || 0) + 1);
  } catch (e) {
    document.getElementById("error").textContent = "cannot reach the unit: " + e.message;
  }
  setTimeout(poll, 1000);
}
poll();
