// The operator's dashboard: lists new and in-progress orders, moves them along, and
// refetches the (cached) dashboard whenever the API's /events stream says an order changed.
//
// Models and materials are shown by name, from the cached /catalogue, fetched again when
// the stream announces a catalogue change. The dashboard view holds every active order:
// the page keeps them all in memory, filters them by the search box and renders only one
// page of rows per section, so thousands of orders stay quick to show.
"use strict";

const STATS_EVERY_MS = 5000;
const PAGE_ROWS = 50;

const MOVES = {
  new: [["in_progress", "Take into work", "primary"], ["cancelled", "Cancel", "danger"]],
  in_progress: [["done", "Finish", "primary"], ["cancelled", "Cancel", "danger"]],
};
const SECTIONS = { new: "new", in_progress: "in-progress" };

let orders = []; // the dashboard view's items, as last fetched
const pageOf = { new: 0, in_progress: 0 };
const names = { models: new Map(), materials: new Map() };

// --- the catalogue's names --------------------------------------------------------------

async function loadCatalogue() {
  let resp;
  try {
    resp = await api("/catalogue");
  } catch (_) {
    return; // ids are shown until the next try
  }
  if (!resp.ok) return;
  const catalogue = await resp.json();
  names.models = new Map((catalogue.models || []).map((m) => [m.id, m.name]));
  names.materials = new Map((catalogue.materials || []).map((m) => [m.id, m.name]));
  render();
}

function modelName(id) {
  return names.models.get(id) || "model " + id;
}

function materialName(id) {
  return names.materials.get(id) || "material " + id;
}

// --- the dashboard ----------------------------------------------------------------------

const refetch = coalesced(loadDashboard);
const refetchCatalogue = coalesced(loadCatalogue);

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
  orders = (await resp.json()).items;
  render();
  loadStats();
}

function matches(order, query) {
  if (String(order.id) === query.replace(/^#/, "")) return true;
  return (
    String(order.customer).toLowerCase().includes(query) ||
    modelName(order.model_id).toLowerCase().includes(query)
  );
}

function render() {
  const query = $("search").value.trim().toLowerCase();
  const shown = query ? orders.filter((o) => matches(o, query)) : orders;
  for (const [status, prefix] of Object.entries(SECTIONS)) {
    const rows = shown.filter((o) => o.status === status);
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
    pageOf[status] = Math.min(pageOf[status], pages - 1);
    const first = pageOf[status] * PAGE_ROWS;
    const fragment = document.createDocumentFragment();
    for (const order of rows.slice(first, first + PAGE_ROWS)) fragment.append(row(order));
    $(prefix + "-orders").replaceChildren(fragment);
    $(prefix + "-count").textContent = String(rows.length);
    $(prefix + "-empty").hidden = rows.length > 0;
    $(prefix + "-empty").textContent = query
      ? "Nothing matches “" + query + "”."
      : status === "new" ? "No new orders." : "Nothing in progress.";
    const pager = $(prefix + "-pager");
    pager.hidden = pages < 2;
    pager.querySelector(".where").textContent =
      first + 1 + "–" + Math.min(first + PAGE_ROWS, rows.length) + " of " + rows.length;
    pager.querySelector(".prev").disabled = pageOf[status] === 0;
    pager.querySelector(".next").disabled = pageOf[status] >= pages - 1;
  }
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
    cell(modelName(order.model_id) + " · " + materialName(order.material_id), "piece"),
    cell(String(order.quantity), "num"),
    cell(money(order.total_price), "num price"),
    cell(when(order.updated_at), "nowrap"),
    actions,
  );
  return tr;
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
  showConsistency(stats.consistency);
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

function showConsistency(consistency) {
  const box = $("consistency-box");
  if (!consistency || typeof consistency !== "object") {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const nines = consistency.nines;
  $("consistency").textContent = typeof nines === "number" ? nines.toFixed(2) + " nines" : "–";
  $("consistency").title =
    consistency.checks + " checks, " + consistency.stale + " stale, over the last " +
    consistency.window_s + " s";
}

// --- the change stream ------------------------------------------------------------------

function onEvent(name, body) {
  if (name === "ready" || name === "resync") {
    refetchCatalogue();
    refetch();
  } else if (name === "change") {
    if (typeof body.lag_ms === "number") showLag(body.lag_ms);
    if (body.catalogue) refetchCatalogue();
    if (body.orders === null || (Array.isArray(body.orders) && body.orders.length)) refetch();
  }
}

// --- start ------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("input", () => {
    pageOf.new = pageOf.in_progress = 0;
    render();
  });
  for (const [status, prefix] of Object.entries(SECTIONS)) {
    const pager = $(prefix + "-pager");
    pager.querySelector(".prev").addEventListener("click", () => {
      pageOf[status] -= 1;
      render();
    });
    pager.querySelector(".next").addEventListener("click", () => {
      pageOf[status] += 1;
      render();
    });
  }
  setInterval(() => {
    if (page.key && !document.hidden) loadStats();
  }, STATS_EVERY_MS);
  startPage({
    keyStore: "mes.operatorKey",
    refusedRole: "This key is not an operator's key.",
    onKey: () => follow("/events", onEvent),
  });
});
