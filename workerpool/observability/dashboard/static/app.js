// The workerpool dashboard: polls /api/overview and renders it. Plain JavaScript, no dependencies.
// Every value from the server goes into the page as text (textContent), never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "workerpool-dashboard-token";
const cards = new Map(); // table name -> card element
let refreshMs = 2000;
let actionsEnabled = false;
let timer = null;

const $ = (selector, root = document) => root.querySelector(selector);

function fmtNum(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return s.toFixed(2) + " s";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function clock(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

function token() {
  return ($("#token").value || "").trim();
}

function showMessage(text, kind) {
  const box = $("#message");
  box.textContent = text;
  box.className = "message " + kind;
  box.hidden = false;
}

// ---- actions ------------------------------------------------------------------------------

async function retry(body, what) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  let response;
  try {
    response = await fetch("/api/retry", { method: "POST", headers, body: JSON.stringify(body), cache: "no-store" });
  } catch (err) {
    showMessage(`retry of ${what} failed: the supervisor did not answer (${err.message})`, "error");
    return;
  }
  let doc = {};
  try { doc = await response.json(); } catch (err) { /* keep the status alone */ }
  if (response.ok) {
    showMessage(`retry of ${what}: returned ${doc.returned} failed row(s) to the queue`, "ok");
    refresh();
  } else {
    showMessage(`retry of ${what} refused (${response.status}): ${doc.error || response.statusText}`, "error");
  }
}

// ---- rendering ------------------------------------------------------------------------------

function card(index) {
  let el = cards.get(index.table);
  if (!el) {
    el = $("#index-card").content.firstElementChild.cloneNode(true);
    el.dataset.table = index.table;
    $(".retry-table", el).addEventListener("click", () => retry({ table: index.table }, `every failed row of ${index.table}`));
    cards.set(index.table, el);
    $("#indices").appendChild(el);
  }
  return el;
}

function renderIndex(index, now, countedFrom) {
  const el = card(index);
  $(".index-name", el).textContent = index.index || "(not watched)";
  $(".table-name", el).textContent = index.table;
  $(".badge.disabled", el).hidden = index.enabled !== false;
  for (const [status, n] of Object.entries(index.depth)) {
    const value = $(`[data-depth="${status}"]`, el);
    if (value) value.textContent = fmtNum(n);
  }
  el.querySelector(".tile.failed").classList.toggle("bad", index.depth.failed > 0);
  $(".oldest", el).textContent = fmtSeconds(index.oldest_waiting_s);
  if (index.lag) {
    $(".lag", el).textContent = `${fmtSeconds(index.lag.p50_s)} / ${fmtSeconds(index.lag.p95_s)}`;
    $(".lag-note", el).textContent = `last ${fmtNum(index.lag.samples)} acks of 5 min; max ${fmtSeconds(index.lag.max_s)}`;
  } else {
    $(".lag", el).textContent = "–";
    $(".lag-note", el).textContent = "no acks in 5 min";
  }
  if (index.searchable) {
    $(".searchable", el).textContent = `${fmtSeconds(index.searchable.p50_s)} / ${fmtSeconds(index.searchable.p95_s)}`;
    $(".searchable-note", el).textContent = `${fmtNum(index.searchable.samples)} followed to publication; max ${fmtSeconds(index.searchable.max_s)}`;
  } else {
    $(".searchable", el).textContent = "–";
    $(".searchable-note", el).textContent = "no task followed to publication in 5 min";
  }
  renderReindex(el, index.reindex);
  renderChart($(".chart", el), index.per_minute, countedFrom);
  const synced = index.per_minute.reduce((sum, m) => sum + m.synced, 0);
  const failed = index.per_minute.reduce((sum, m) => sum + m.failed, 0);
  const partial = countedFrom > index.per_minute[0].t ? `; counting the log before ${clock(countedFrom).slice(0, 5)}…` : "";
  $(".chart-total", el).textContent = `(${fmtNum(synced)} synced, ${fmtNum(failed)} failed${partial})`;
  renderFailures(el, index, now);
}

function renderReindex(el, reindex) {
  const box = $(".reindex", el);
  box.hidden = !reindex;
  if (!reindex) return;
  const total = reindex.rows_total;
  const pct = total ? Math.min(100, (100 * reindex.rows_done) / total) : 0;
  const state = reindex.running ? "running" : `interrupted (no progress for ${fmtSeconds(reindex.last_progress_s)}; run it again to resume)`;
  $(".reindex-text", box).textContent =
    `reindex (${reindex.mode}${reindex.tmp_index ? " into " + reindex.tmp_index : ""}) ${state}: ` +
    `${fmtNum(reindex.rows_done)} of ${fmtNum(total)} rows, ${pct.toFixed(1)} %`;
  $("progress", box).value = pct;
  box.dataset.running = String(reindex.running);
}

function renderChart(host, minutes, countedFrom) {
  const width = Math.max(300, Math.round(host.clientWidth) || 720), height = 140, top = 14, bottom = 18, left = 4;
  const barW = (width - left) / minutes.length;
  const peak = Math.max(1, ...minutes.map((m) => m.synced + m.failed));
  const scale = (height - top - bottom) / peak;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const total = minutes.reduce((sum, m) => sum + m.synced, 0);
  svg.setAttribute("aria-label", `${total} records synced in the last hour`);
  svg.dataset.synced = String(total);
  const base = height - bottom;
  const line = document.createElementNS(SVG, "line");
  for (const [k, v] of Object.entries({ x1: left, x2: width, y1: base + 0.5, y2: base + 0.5, class: "axis" })) line.setAttribute(k, v);
  svg.appendChild(line);
  const uncounted = minutes.filter((m) => m.t < countedFrom).length;
  if (uncounted) {  // minutes not counted yet: shaded, not drawn as zero
    const rect = document.createElementNS(SVG, "rect");
    for (const [k, v] of Object.entries({ x: left, y: top, width: uncounted * barW, height: base - top, class: "uncounted" })) rect.setAttribute(k, v);
    svg.appendChild(rect);
  }
  minutes.forEach((m, i) => {
    const x = left + i * barW;
    const group = document.createElementNS(SVG, "g");
    group.dataset.synced = String(m.synced);
    group.dataset.failed = String(m.failed);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${clock(m.t).slice(0, 5)}: ${m.synced} synced, ${m.failed} failed`;
    group.appendChild(title);
    const bars = [[m.synced, "synced", base - m.synced * scale], [m.failed, "failed", base - (m.synced + m.failed) * scale]];
    for (const [n, cls, y] of bars) {
      if (!n) continue;
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", (x + 1).toFixed(1));
      rect.setAttribute("width", Math.max(1, barW - 2).toFixed(1));
      rect.setAttribute("y", y.toFixed(1));
      rect.setAttribute("height", Math.max(1, n * scale).toFixed(1));
      rect.setAttribute("class", cls);
      group.appendChild(rect);
    }
    svg.appendChild(group);
  });
  const labels = [[left, 10, `${fmtNum(peak)}/min`, "start"], [left, height - 3, "60 min ago", "start"], [width - 2, height - 3, "now", "end"]];
  for (const [x, y, text, anchor] of labels) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", x);
    t.setAttribute("y", y);
    t.setAttribute("text-anchor", anchor);
    t.textContent = text;
    svg.appendChild(t);
  }
  host.replaceChildren(svg);
}

function renderFailures(el, index, now) {
  const box = $(".failures", el);
  const rows = index.failed_rows;
  box.hidden = index.depth.failed === 0 && rows.length === 0;
  $(".failed-note", el).textContent = index.depth.failed > rows.length
    ? `(first ${rows.length} of ${fmtNum(index.depth.failed)}, by key)` : `(${fmtNum(index.depth.failed)})`;
  $(".retry-table", el).disabled = !actionsEnabled;
  $(".retry-table", el).title = actionsEnabled ? "" : "read-only: no DASHBOARD_TOKEN is configured";
  const body = $("tbody", box);
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.id = String(row.id);
    tr.dataset.key = row.record_id;
    const cells = [row.id, row.record_id, row.operation, row.attempts,
                   row.failed_at ? fmtSeconds(Math.max(0, now - row.failed_at)) + " ago" : "–", row.last_error || ""];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      td.textContent = String(value);
      if (i === 5) td.className = "error-text";
      tr.appendChild(td);
    });
    const td = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "retry";
    button.dataset.id = String(row.id);
    button.textContent = "Retry";
    button.disabled = !actionsEnabled;
    button.addEventListener("click", () => retry({ ids: [row.id] }, `row ${row.id} (${index.table} ${row.record_id})`));
    td.appendChild(button);
    tr.appendChild(td);
    return tr;
  }));
}

function renderWorkers(doc) {
  const body = $("#workers tbody");
  $("#workers-count").textContent = `(${doc.workers.length})`;
  $("#workers-note").textContent = `every host; a worker counts as live while its heartbeat is younger than ${doc.live_worker_s} s`;
  body.replaceChildren(...doc.workers.map((w) => {
    const tr = document.createElement("tr");
    tr.dataset.worker = w.worker_id;
    for (const value of [w.host, w.pid, w.worker_id, fmtSeconds(doc.now - w.started_at),
                         fmtSeconds(w.heartbeat_age_s) + " ago", fmtNum(w.batches), fmtNum(w.records)]) {
      const td = document.createElement("td");
      td.textContent = String(value);
      tr.appendChild(td);
    }
    return tr;
  }));
}

function fmtBytes(n) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
}

function renderVacuum(v) {
  if (!v) return;
  $("#autovacuum").textContent = v.autovacuum ? "(autovacuum on)" : "(autovacuum OFF on this server)";
  $("#horizon").textContent = v.horizon_text ? `xmin horizon held by the ${v.horizon_text}` : "nothing holds the xmin horizon back";
  $("#vacuum tbody").replaceChildren(...v.tables.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.table = t.table;
    for (const value of [t.table, fmtBytes(t.size_bytes), fmtNum(t.live_tuples), fmtNum(t.dead_tuples),
                         (t.last_vacuum || "never").slice(0, 19), (t.last_autovacuum || "never").slice(0, 19)]) {
      const td = document.createElement("td");
      td.textContent = String(value);
      tr.appendChild(td);
    }
    return tr;
  }));
  $("#vacuum-warnings").replaceChildren(...v.warnings.map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
}

function render(doc) {
  refreshMs = doc.refresh_ms || refreshMs;
  actionsEnabled = Boolean(doc.actions);
  $("#auth").hidden = !actionsEnabled;
  $("#readonly").hidden = actionsEnabled;
  const banner = $("#banner");
  if (doc.database !== "ok") {
    banner.textContent = `database unreachable: ${doc.error || "no answer"} (showing the last numbers read)`;
    banner.hidden = false;
    $("#status").textContent = `database unreachable · served by ${doc.served_by}`;
    $("#status").dataset.database = "unreachable";
    return;
  }
  banner.hidden = true;
  $("#status").textContent = `updated ${clock(doc.now)} · every ${refreshMs / 1000} s · served by ${doc.served_by}`;
  $("#status").dataset.database = "ok";
  $("#status").dataset.updated = String(doc.now);
  const seen = new Set();
  for (const index of doc.indices) {
    renderIndex(index, doc.now, doc.chart_counted_from);
    seen.add(index.table);
  }
  for (const [table, el] of cards) {
    if (!seen.has(table)) { el.remove(); cards.delete(table); }
  }
  renderWorkers(doc);
  renderVacuum(doc.vacuum);
}

// ---- polling --------------------------------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  try {
    const response = await fetch("/api/overview", { cache: "no-store" });
    render(await response.json());
  } catch (err) {
    const banner = $("#banner");
    banner.textContent = `the supervisor did not answer (${err.message}); retrying`;
    banner.hidden = false;
    $("#status").dataset.database = "unknown";
  }
  // A hidden tab stops polling (no load on the database for a page nobody looks at).
  if (!document.hidden) timer = setTimeout(refresh, refreshMs);
}

document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
document.addEventListener("DOMContentLoaded", () => {
  const input = $("#token");
  input.value = sessionStorage.getItem(TOKEN_KEY) || "";
  input.addEventListener("input", () => {
    sessionStorage.setItem(TOKEN_KEY, token());
    $("#auth-state").textContent = token() ? "set for this tab" : "";
  });
  $("#auth").addEventListener("submit", (event) => event.preventDefault());
  $("#auth-state").textContent = token() ? "set for this tab" : "";
  refresh();
});
