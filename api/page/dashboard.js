// The operator's dashboard: lists new and in-progress orders, moves them along, and
// refetches the (cached) dashboard whenever the API's /events stream says an order changed.
//
// The operator key lives in sessionStorage and goes with every request as a Bearer token.
// EventSource cannot send headers, so /events is read with fetch and a stream reader.
// Every value from the API reaches the DOM through textContent, never as HTML.
"use strict";

const KEY_STORE = "mes.operatorKey";
const STATS_EVERY_MS = 5000;
const MAX_RETRY_MS = 10000;

const MOVES = {
  new: [["in_progress", "Take into work", "primary"], ["cancelled", "Cancel", "danger"]],
  in_progress: [["done", "Finish", "primary"], ["cancelled", "Cancel", "danger"]],
};
const SECTIONS = { new: "new", in_progress: "in-progress" };

const $ = (id) => document.getElementById(id);
let operatorKey = sessionStorage.getItem(KEY_STORE);
let stream = null; // the AbortController of the open /events request
let loading = null; // the dashboard fetch in flight
let loadAgain = false;

class Unreachable extends Error {}
class Unauthorized extends Error {}

// --- talking to the API -----------------------------------------------------------------

async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (operatorKey) headers.set("Authorization", "Bearer " + operatorKey);
  let resp;
  try {
    resp = await fetch(path, { ...init, headers, cache: "no-store" });
  } catch (err) {
    if (init.signal && init.signal.aborted) throw err;
    throw new Unreachable(String(err));
  }
  if (resp.status === 401) {
    askForKey("The operator key was refused: enter it again.");
    throw new Unauthorized();
  }
  if (resp.status === 403) {
    askForKey("This key is not an operator's key.");
    throw new Unauthorized();
  }
  return resp;
}

async function detailOf(resp) {
  try {
    const body = await resp.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  } catch (_) { /* not JSON: fall through */ }
  return "HTTP " + resp.status;
}

// --- messages ---------------------------------------------------------------------------

function say(text, kind = "error") {
  const item = document.createElement("li");
  item.className = kind;
  const span = document.createElement("span");
  span.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "quiet";
  close.textContent = "×";
  close.title = "dismiss";
  close.addEventListener("click", () => item.remove());
  item.append(span, close);
  $("messages").prepend(item);
  while ($("messages").children.length > 5) $("messages").lastChild.remove();
  if (kind === "info") setTimeout(() => item.remove(), 4000);
}

function connection(problem) {
  const banner = $("connection");
  banner.hidden = !problem;
  banner.textContent = problem || "";
}

function setLive(on) {
  const live = $("live");
  live.className = on ? "on" : "off";
  live.textContent = on ? "live" : "reconnecting…";
}

// --- the key ----------------------------------------------------------------------------

function askForKey(reason) {
  operatorKey = null;
  sessionStorage.removeItem(KEY_STORE);
  if (stream) stream.abort();
  $("board").hidden = true;
  $("key-form").hidden = false;
  $("key-input").value = "";
  $("key-input").focus();
  if (reason) say(reason);
}

function useKey(key) {
  operatorKey = key;
  sessionStorage.setItem(KEY_STORE, key);
  $("key-form").hidden = true;
  $("board").hidden = false;
  follow();
}

// --- the dashboard ----------------------------------------------------------------------

function refetch() {
  if (loading) {
    loadAgain = true; // a change arrived mid-fetch: fetch once more when this one ends
    return;
  }
  loading = loadDashboard().finally(() => {
    loading = null;
    if (loadAgain) {
      loadAgain = false;
      refetch();
    }
  });
}

async function loadDashboard() {
  let resp;
  try {
    resp = await api("/orders/dashboard");
  } catch (err) {
    if (err instanceof Unreachable) connection("API unreachable, retrying…");
    return;
  }
  if (!resp.ok) {
    say("Could not load the dashboard: " + (await detailOf(resp)));
    return;
  }
  render((await resp.json()).items);
  loadStats();
}

function render(orders) {
  for (const [status, prefix] of Object.entries(SECTIONS)) {
    const rows = orders.filter((o) => o.status === status);
    const body = $(prefix + "-orders");
    const fragment = document.createDocumentFragment();
    for (const order of rows) fragment.append(row(order));
    body.replaceChildren(fragment);
    $(prefix + "-count").textContent = String(rows.length);
    $(prefix + "-empty").hidden = rows.length > 0;
  }
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(order) {
  const tr = document.createElement("tr");
  tr.dataset.orderId = String(order.id);
  tr.dataset.status = order.status;

  const customer = cell(order.customer, "customer");
  const params = Object.entries(order.params || {})
    .map(([k, v]) => k + " " + (typeof v === "object" ? JSON.stringify(v) : v))
    .join(", ");
  if (params) {
    const small = document.createElement("span");
    small.className = "params";
    small.textContent = params;
    customer.append(small);
  }
  const actions = document.createElement("td");
  actions.className = "actions";
  for (const [target, label, style] of MOVES[order.status] || []) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = style;
    button.dataset.action = target;
    button.textContent = label;
    button.addEventListener("click", () => move(order.id, target, tr));
    actions.append(button);
  }
  tr.append(
    cell(String(order.id), "num"),
    customer,
    cell("model " + order.model_id + " · material " + order.material_id, "nowrap"),
    cell(String(order.quantity), "num"),
    cell(String(order.total_price), "num"),
    cell(when(order.updated_at), "nowrap"),
    actions,
  );
  return tr;
}

function when(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

async function move(id, target, tr) {
  tr.classList.add("busy");
  tr.querySelectorAll("button").forEach((b) => (b.disabled = true));
  let resp;
  try {
    resp = await api("/orders/" + encodeURIComponent(id), {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ status: target }),
    });
  } catch (err) {
    if (err instanceof Unreachable) say("API unreachable: order " + id + " was not moved.");
    unbusy(tr);
    return;
  }
  if (!resp.ok) {
    say(await detailOf(resp));
    unbusy(tr);
    return;
  }
  // The row moves when the listener announces the change: only then is the cached
  // dashboard right, so refetching now could show the old row again.
  const order = await resp.json();
  say("Order " + order.id + " is " + order.status.replace("_", " ") + ".", "info");
  unbusy(tr);
}

function unbusy(tr) {
  tr.classList.remove("busy");
  tr.querySelectorAll("button").forEach((b) => (b.disabled = false));
}

// --- stats ------------------------------------------------------------------------------

async function loadStats() {
  let resp;
  try {
    resp = await api("/stats");
  } catch (_) {
    return; // the stream reports an unreachable API
  }
  if (!resp.ok) return;
  const stats = await resp.json();
  const ratio = $("hit-ratio");
  ratio.textContent = stats.hit_ratio === null ? "–" : (stats.hit_ratio * 100).toFixed(1) + " %";
  ratio.title = stats.hits + " hits, " + stats.misses + " misses (this API process)";
  showLag(stats.invalidation_lag_ms);
}

function showLag(ms) {
  const lag = $("lag");
  if (typeof ms !== "number") {
    lag.textContent = "–";
    lag.title = "no change announced yet";
    return;
  }
  lag.textContent = ms < 10 ? ms.toFixed(1) + " ms" : Math.round(ms) + " ms";
  lag.title = "commit to invalidation of the last change";
}

// --- the change stream ------------------------------------------------------------------

function* events(text) {
  // Server-Sent Events: blocks separated by a blank line; ':' lines are keep-alives.
  for (const block of text.split(/\r\n\r\n|\n\n|\r\r/)) {
    let name = "message";
    const data = [];
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (!line || line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) yield [name, data.join("\n")];
  }
}

function onEvent(name, data) {
  let body = {};
  try {
    body = JSON.parse(data);
  } catch (_) { /* keep-alive or unknown: ignore */ }
  if (name === "ready" || name === "resync") {
    refetch();
  } else if (name === "change") {
    if (typeof body.lag_ms === "number") showLag(body.lag_ms);
    if (body.orders === null || (Array.isArray(body.orders) && body.orders.length)) refetch();
  }
}

async function follow() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  let delay = 500;
  while (!controller.signal.aborted && operatorKey) {
    try {
      const resp = await api("/events", { signal: controller.signal });
      if (!resp.ok) throw new Unreachable(await detailOf(resp));
      connection(null);
      setLive(true);
      delay = 500;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const end = Math.max(buffer.lastIndexOf("\r\n\r\n"), buffer.lastIndexOf("\n\n"));
        if (end < 0) continue;
        const complete = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^(\r\n|\n)+/, "");
        for (const [name, data] of events(complete)) onEvent(name, data);
      }
      throw new Unreachable("stream ended");
    } catch (err) {
      if (controller.signal.aborted || err instanceof Unauthorized) return;
      setLive(false);
      connection("API unreachable, retrying…");
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, MAX_RETRY_MS);
  }
}

// --- start ------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (key) useKey(key);
  });
  $("change-key").addEventListener("click", () => askForKey(null));
  setInterval(() => {
    if (operatorKey && !document.hidden) loadStats();
  }, STATS_EVERY_MS);
  if (operatorKey) useKey(operatorKey);
  else askForKey(null);
});
