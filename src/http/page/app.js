// lookout's page: live sources, standing queries (add, edit, remove) and the event list, from the REST API
// and the event stream of the same server. Plain JS, no dependencies.
"use strict";

const api = (path, options) => fetch(path, Object.assign({ credentials: "same-origin" }, options));
const el = (tag, attrs, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

// Sources: one tile each, its picture refreshed from latest.jpg, its counters from /api/v1/sources.
const tiles = new Map();
async function refreshSources() {
  let body;
  try {
    const r = await api("api/v1/sources");
    body = await r.json();
    if (!r.ok) throw new Error(body.error || r.status);
    document.getElementById("status").textContent = "connected";
  } catch (e) {
    document.getElementById("status").textContent = "disconnected: " + e.message;
    return;
  }
  const grid = document.getElementById("sources");
  for (const s of body.sources) {
    let tile = tiles.get(s.name);
    if (!tile) {
      const img = el("img", { alt: "latest frame of " + s.name, "data-source": s.name });
      tile = { img, counters: el("div", { class: "counters" }) };
      grid.append(el("div", { class: "source", "data-source": s.name }, el("div", { class: "name" }, s.name), img, tile.counters));
      tiles.set(s.name, tile);
    }
    tile.counters.textContent =
      `${s.state} · ${s.decoder || "?"} · in ${s.fps_in.toFixed(1)} fps · out ${s.fps_out.toFixed(1)} fps · ` +
      `decoded ${s.frames_decoded} · inferred ${s.frames_inferred} · dropped ${s.frames_dropped} · ` +
      `reconnects ${s.reconnects}` + (s.last_error ? ` · error: ${s.last_error}` : "");
    if (s.state !== "ended" || !tile.img.src) {
      tile.img.src = `api/v1/sources/${encodeURIComponent(s.name)}/latest.jpg?t=${Date.now()}`;
    }
  }
}

// Queries.
const form = document.getElementById("query-form");
const formError = document.getElementById("query-error");
async function refreshQueries() {
  const r = await api("api/v1/queries");
  if (!r.ok) return;
  const { queries } = await r.json();
  const body = document.querySelector("#queries tbody");
  body.replaceChildren(...queries.map((q) => el("tr", { "data-id": q.id },
    el("td", {}, q.id), el("td", {}, q.text), el("td", {}, q.label), el("td", {}, String(q.threshold)),
    el("td", {}, `${q.min_frames} of ${q.window}`), el("td", {}, q.sources.length ? q.sources.join(", ") : "all"),
    el("td", {},
      el("button", { type: "button", class: "edit", onclick: () => edit(q) }, "Edit"),
      el("button", { type: "button", class: "remove", onclick: () => remove(q.id) }, "Remove")))));
}
function edit(q) {
  form.id.value = q.id;
  form.text.value = q.text;
  form.label.value = q.label;
  form.threshold.value = q.threshold;
  form.min_frames.value = q.min_frames;
  form.window.value = q.window;
  form.sources.value = q.sources.join(", ");
  document.getElementById("query-submit").textContent = "Save " + q.id;
  document.getElementById("query-cancel").hidden = false;
}
function resetForm() {
  form.reset();
  form.id.value = "";
  document.getElementById("query-submit").textContent = "Add query";
  document.getElementById("query-cancel").hidden = true;
}
document.getElementById("query-cancel").addEventListener("click", resetForm);
async function remove(id) {
  const r = await api(`api/v1/queries/${encodeURIComponent(id)}`, { method: "DELETE" });
  formError.textContent = r.ok ? "" : (await r.json()).error;
  refreshQueries();
}
form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = { text: form.text.value };
  if (form.label.value) q.label = form.label.value;
  for (const k of ["threshold", "min_frames", "window"]) if (form[k].value !== "") q[k] = Number(form[k].value);
  q.sources = form.sources.value.split(",").map((s) => s.trim()).filter((s) => s);
  const id = form.id.value;
  const r = await api(id ? `api/v1/queries/${encodeURIComponent(id)}` : "api/v1/queries", {
    method: id ? "PUT" : "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(q),
  });
  if (r.ok) { formError.textContent = ""; resetForm(); } else { formError.textContent = (await r.json()).error; }
  refreshQueries();
});

// Events: the newest from the index, then each new line from the event stream.
const list = document.getElementById("events");
const MAX_EVENTS = 200;
function showLine(line) {
  if (line.type === "queries") { refreshQueries(); }
  const what = line.type === "queries" ? `queries: ${line.change} ${line.id}` :
    `${line.label || ""} · ${line.source || ""} · track ${line.track_id ?? ""} · frame ${line.frame ?? ""}` +
    (line.score !== undefined ? ` · score ${Number(line.score).toFixed(2)}` : "");
  const item = el("li", { class: "event", "data-type": line.type, "data-event": line.event_id || "" },
    el("span", { class: "type-" + line.type }, line.type), el("span", {}, what));
  if (line.type === "clips" && line.clips && line.clips.status === "written") {
    const base = `api/v1/events/${encodeURIComponent(line.event_id)}/`;
    const img = el("img", { src: base + "snapshot.jpg", alt: "snapshot of " + line.event_id, title: "play the clip" });
    img.addEventListener("click", () => {
      img.replaceWith(el("video", { src: base + "clip.mp4", controls: "", autoplay: "", muted: "" }));
    });
    item.append(img);
  }
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}
async function loadEvents() {
  const r = await api("api/v1/events?limit=50");
  if (!r.ok) return 0;
  const { events } = await r.json();
  events.reverse().forEach(showLine);
  return events.length ? events[events.length - 1].seq : 0;
}
let lastSeq = 0;
function follow() {
  const source = new EventSource("api/v1/events/stream");
  source.addEventListener("line", (e) => {
    const line = JSON.parse(e.data);
    if (line.seq > lastSeq) { lastSeq = line.seq; showLine(line); }
  });
}

refreshSources();
setInterval(refreshSources, 1000);
refreshQueries();
loadEvents().then((seq) => { lastSeq = seq; follow(); });
