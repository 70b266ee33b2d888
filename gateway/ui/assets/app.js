// The dashboard's script: reads /v1 with the session cookie (never the token), draws small SVG
// charts itself (no library, nothing from a CDN), and follows /v1/stream for the live feed.
"use strict";

const PROVIDERS = document.body.dataset.providers.split(",").filter(Boolean);
const SIMULATE = document.body.dataset.simulate;
const COLOURS = ["#2f6fdf", "#e0662b", "#1d9a6c", "#9b4dca", "#c43d52"];
const FINAL_FAILURES = ["undelivered", "failed", "rejected", "expired"];
const $ = (selector) => document.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const svg = ["svg", "g", "path", "line", "rect", "text", "circle", "title"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

async function get(path) {
  const answer = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (answer.status === 401) { location.assign("/ui/login"); throw new Error("signed out"); }
  if (answer.status === 404) return null;
  if (!answer.ok) throw new Error(`${path}: HTTP ${answer.status}`);
  return answer.json();
}

function since() {
  const value = $("#since").value;
  return value ? `&since=${encodeURIComponent(value)}` : "";
}

const percent = (rate) => (rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(1)}%`);
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return `${seconds} s`;
  return seconds < 7200 ? `${(seconds / 60).toFixed(1)} min` : `${(seconds / 3600).toFixed(1)} h`;
}
const failed = (group) => FINAL_FAILURES.reduce((sum, status) => sum + (group.statuses[status] || 0), 0);

function table(target, head, rows) {
  target.replaceChildren(el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((cell, i) =>
      i === 0 ? el("th", { scope: "row" }, cell) : el("td", {}, cell))))));
}

function emptyChart(target, text) {
  target.replaceChildren(el("p", { class: "empty" }, text));
}

// A line per series over the days: each point one day's delivery rate.
function lineChart(target, series) {
  const days = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort();
  if (!days.length) return emptyChart(target, "No finished messages in this window yet.");
  const width = 560, height = 220, left = 44, bottom = 28, top = 12, right = 12;
  const x = (day) => left + (days.length === 1 ? (width - left - right) / 2
    : days.indexOf(day) * (width - left - right) / (days.length - 1));
  const y = (rate) => top + (1 - rate) * (height - top - bottom);
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Delivery rate by day" });
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(el("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "grid" }),
      el("text", { x: left - 6, y: y(tick) + 4, class: "axis", "text-anchor": "end" }, `${tick * 100}%`));
  }
  const step = Math.max(1, Math.ceil(days.length / 7));
  days.forEach((day, i) => {
    if (i % step === 0) svg.append(el("text", { x: x(day), y: height - 8, class: "axis", "text-anchor": "middle" },
      day.slice(5)));
  });
  const legend = el("ul", { class: "legend" });
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const points = s.points.filter((p) => p[1] !== null);
    if (points.length) {
      svg.append(el("path", { d: points.map((p, j) => `${j ? "L" : "M"}${x(p[0])},${y(p[1])}`).join(" "),
        stroke: colour, class: "series" }));
      for (const p of points) svg.append(el("circle", { cx: x(p[0]), cy: y(p[1]), r: 3, fill: colour },
        el("title", {}, `${s.name} ${p[0]}: ${percent(p[1])}`)));
    }
    legend.append(el("li", {}, el("span", { class: "swatch", "data-colour": i % COLOURS.length }), s.name));
  });
  target.replaceChildren(svg, legend);
}

// Horizontal bars: each failure category's messages, a bar per vendor.
function barChart(target, series) {
  const categories = [...new Set(series.flatMap((s) => s.bars.map((b) => b[0])))];
  if (!categories.length) return emptyChart(target, "No failures in this window.");
  const most = Math.max(...series.flatMap((s) => s.bars.map((b) => b[1])));
  const row = 14, gap = 10, left = 130, width = 560;
  const height = categories.length * (series.length * row + gap) + gap;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Failures by reason" });
  categories.forEach((category, c) => {
    const y0 = gap + c * (series.length * row + gap);
    svg.append(el("text", { x: left - 8, y: y0 + series.length * row / 2 + 4, class: "axis", "text-anchor": "end" },
      category.replaceAll("_", " ")));
    series.forEach((s, i) => {
      const n = (s.bars.find((b) => b[0] === category) || [category, 0])[1];
      const w = most ? (width - left - 50) * n / most : 0;
      if (!n) return;  // a vendor without this failure: no bar
      svg.append(el("rect", { x: left, y: y0 + i * row, width: Math.max(w, 2), height: row - 3,
        fill: COLOURS[i % COLOURS.length] }, el("title", {}, `${s.name}: ${n}`)),
      el("text", { x: left + w + 6, y: y0 + i * row + row - 5, class: "axis" }, n));
    });
  });
  const legend = el("ul", { class: "legend" }, ...series.map((s, i) =>
    el("li", {}, el("span", { class: "swatch", "data-colour": i % COLOURS.length }), s.name)));
  target.replaceChildren(svg, legend);
}

async function loadFigures() {
  const byProvider = await get(`/v1/stats?by=provider${since()}`);
  const groups = byProvider.groups;
  const empty = $("#vendors .empty");
  empty.hidden = groups.length > 0;
  table($("#vendor-table"), ["Vendor", "Messages", "Delivered", "Failed", "Delivery rate", "p50", "p90", "p99",
    "Top reason"], groups.map((g) => [g.key, g.messages, (g.statuses.delivered || 0) + (g.statuses.read || 0),
    failed(g), percent(g.delivery_rate), duration(g.time_to_deliver.p50), duration(g.time_to_deliver.p90),
    duration(g.time_to_deliver.p99), g.reasons.length ? `${g.reasons[0].category} (${g.reasons[0].messages})` : "–"]));
  $("#vendor-table").dataset.vendors = groups.map((g) => `${g.key}:${g.messages}:${g.delivery_rate}`).join(",");
  const providers = PROVIDERS.filter((p) => groups.some((g) => g.key === p));
  const [byDay, byCountry] = await Promise.all([
    Promise.all(providers.map((p) => get(`/v1/stats?by=day&provider=${p}${since()}`))),
    Promise.all(providers.map((p) => get(`/v1/stats?by=country&provider=${p}${since()}`))),
  ]);
  lineChart($("#rate-chart"), providers.map((p, i) => ({
    name: p, points: byDay[i].groups.map((g) => [g.key, g.delivery_rate]) })));
  barChart($("#reasons-chart"), groups.map((g) => ({
    name: g.key, bars: (g.reasons || []).map((r) => [r.category, r.messages]) })));
  const rows = [];
  providers.forEach((p, i) => byCountry[i].groups.forEach((g) => rows.push([g.key, p, g.messages,
    percent(g.delivery_rate), duration(g.time_to_deliver.p50), duration(g.time_to_deliver.p90)])));
  rows.sort((a, b) => (a[0] === b[0] ? String(a[1]).localeCompare(String(b[1])) : String(a[0]).localeCompare(b[0])));
  table($("#country-table"), ["Country", "Vendor", "Messages", "Delivery rate", "p50", "p90"], rows);
}

function eventLine(event) {
  const text = event.direction === "inbound" && event.text ? ` “${event.text.slice(0, 60)}”` : "";
  const reason = event.reason ? ` · ${event.reason.category}` : "";
  return el("li", { "data-message-id": event.message_id },
    el("time", {}, event.received_at.slice(11, 19)), " ",
    el("span", { class: `status s-${event.status}` }, event.status), " ",
    el("span", { class: "who" }, `${event.provider} ${event.message_id}`), `${reason}${text}`);
}

function follow() {
  const feed = $("#feed");
  const stream = new EventSource("/v1/stream");
  stream.onopen = () => { $("#live").className = "dot on"; $("#live").title = "live"; };
  stream.onerror = () => { $("#live").className = "dot"; $("#live").title = "reconnecting"; };
  let refresh = null;
  stream.onmessage = (message) => {
    const event = JSON.parse(message.data);
    $("#feed-empty").hidden = true;
    feed.prepend(eventLine(event));
    while (feed.children.length > 50) feed.lastChild.remove();
    clearTimeout(refresh);
    refresh = setTimeout(() => loadFigures().catch(console.error), 1500);  // the figures follow, gently
  };
}

async function search(id) {
  const target = $("#timeline");
  for (const provider of PROVIDERS) {
    const found = await get(`/v1/messages/${encodeURIComponent(provider)}/${encodeURIComponent(id)}`);
    if (!found) continue;
    const head = el("p", {}, el("strong", {}, `${found.provider} ${found.message_id}`),
      `: ${found.status} (${found.final ? "final" : "not final"}), updated ${found.updated_at}`);
    const rows = el("tbody", {}, ...found.events.map((e) => el("tr", {},
      el("td", {}, e.received_at.replace("T", " ").slice(0, 19)), el("td", {}, el("span", { class: `status s-${e.status}` },
        e.status)), el("td", {}, e.provider_status), el("td", {}, e.reason ? e.reason.category : e.error_code || ""))));
    target.replaceChildren(head, el("div", { class: "scroll" }, el("table", { class: "timeline" },
      el("thead", {}, el("tr", {}, ...["Received", "Status", "Vendor said", "Reason"].map((h) => el("th", {}, h)))),
      rows)));
    return;
  }
  target.replaceChildren(el("p", { class: "empty" }, `No message ${id} in the store.`));
}

async function loadUnread() {
  const kept = (await get("/v1/unread?limit=20")).unread;
  const target = $("#unread");
  if (!kept.length) return target.replaceChildren(el("p", { class: "empty" }, "None: every verified callback was read."));
  table(target.appendChild(el("table")), ["Endpoint", "Received", "Kind"],
    kept.map((u) => [u.endpoint, u.received_at.replace("T", " ").slice(0, 19), u.kind]));
  target.replaceChildren(target.lastChild);
}

async function loadRefused() {
  const { counts } = await get("/v1/refused?limit=1");
  const target = $("#refused");
  if (!counts.length) {
    return target.replaceChildren(el("p", { class: "empty" }, "None: every callback's signature verified."));
  }
  const rows = el("table");
  table(rows, ["Endpoint", "Refused as", "Kept", "Last"],
    counts.map((c) => [c.endpoint, c.code, c.count, c.last.replace("T", " ").slice(0, 19)]));
  target.replaceChildren(el("div", { class: "scroll" }, rows),
    el("p", { class: "hint" }, "Why, and how to rescue them: ", el("code", {}, "status-gateway explain ID"), ", then ",
      el("code", {}, "status-gateway replay --endpoint NAME"), " (README, Refused callbacks)."));
}

document.addEventListener("DOMContentLoaded", () => {
  for (const code of document.querySelectorAll(".empty code")) code.textContent = SIMULATE;
  $("#since").addEventListener("change", () => loadFigures().catch(console.error));
  $("#search").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    search($("#message-id").value.trim()).catch(console.error);
  });
  loadFigures().catch(console.error);
  loadUnread().catch(console.error);
  loadRefused().catch(console.error);
  follow();
});
