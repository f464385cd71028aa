// The client's page: the key's own orders, live, and a price calculator that places orders.
//
// The orders come from /customers/me/orders (newest first, paged by cursor) and are
// fetched again whenever /customers/me/events says one of them changed; that stream is
// filtered by the server to this key's customer. The calculator offers the catalogue's
// models and materials (/catalogue), shows the price and its breakdown
// (/models/{id}/price) and the model's picture (/models/{id}/picture, an SVG drawn by the
// server from the model's mesh), and places the order with POST /orders.
"use strict";

const PAGE_ROWS = 50;
const QUOTE_DELAY_MS = 200;
const STATUS_NAMES = {
  new: "received",
  in_progress: "in the workshop",
  done: "done",
  cancelled: "cancelled",
};
const BREAKDOWN = [
  ["metal", "Metal", true],
  ["finishing", "Finishing", true],
  ["labour", "Labour", true],
  ["design", "Design", true],
  ["weight_g", "Weight, g", false],
  ["volume_cm3", "Volume, cm³", false],
];

let customer = null; // this key's customer, from /customers/me
let loaded = []; // the orders shown, newest first
let nextCursor = null;
let models = new Map();
let materials = new Map();
let quoted = null; // the quote shown, and what it was asked for
let quoteTimer = null;
let pictureFor = null;

// --- who this key is --------------------------------------------------------------------

async function loadMe() {
  let resp;
  try {
    resp = await api("/customers/me");
  } catch (_) {
    return; // unreachable (the stream says so and retries) or a refused key (asked again)
  }
  if (!resp.ok) {
    say("Could not tell whose key this is: " + (await detailOf(resp)));
    return;
  }
  customer = (await resp.json()).customer;
  $("customer").textContent = customer;
}

// --- the orders -------------------------------------------------------------------------

async function loadOrders() {
  let resp;
  try {
    resp = await api("/customers/me/orders?limit=" + PAGE_ROWS);
  } catch (err) {
    if (err instanceof Unreachable) connection("API unreachable, retrying…");
    return;
  }
  if (!resp.ok) {
    say("Could not load your orders: " + (await detailOf(resp)));
    return;
  }
  const body = await resp.json();
  loaded = body.items;
  nextCursor = body.next_cursor;
  renderOrders();
}

async function loadOlder() {
  if (nextCursor === null) return;
  let resp;
  try {
    resp = await api(
      "/customers/me/orders?limit=" + PAGE_ROWS + "&cursor=" + encodeURIComponent(nextCursor),
    );
  } catch (_) {
    return;
  }
  if (!resp.ok) {
    say("Could not load older orders: " + (await detailOf(resp)));
    return;
  }
  const body = await resp.json();
  const have = new Set(loaded.map((o) => o.id));
  loaded = loaded.concat(body.items.filter((o) => !have.has(o.id)));
  nextCursor = body.next_cursor;
  renderOrders();
}

const refetchOrders = coalesced(loadOrders);

function renderOrders() {
  const fragment = document.createDocumentFragment();
  for (const order of loaded) fragment.append(orderRow(order));
  $("orders").replaceChildren(fragment);
  $("orders-count").textContent = String(loaded.length) + (nextCursor === null ? "" : "+");
  $("orders-empty").hidden = loaded.length > 0;
  $("more").hidden = nextCursor === null;
}

function pieceName(order) {
  const model = models.get(order.model_id);
  const material = materials.get(order.material_id);
  const size = order.params && order.params.size !== undefined ? ", size " + order.params.size : "";
  return (
    (model ? model.name : "model " + order.model_id) + " · " +
    (material ? material.name : "material " + order.material_id) + size
  );
}

function orderRow(order) {
  const tr = document.createElement("tr");
  tr.dataset.orderId = String(order.id);
  tr.dataset.status = order.status;
  const status = document.createElement("td");
  const badge = document.createElement("span");
  badge.className = "status " + order.status;
  badge.textContent = STATUS_NAMES[order.status] || order.status;
  status.append(badge);
  tr.append(
    cell(String(order.id), "num"),
    cell(pieceName(order), "piece"),
    cell(String(order.quantity), "num"),
    cell(money(order.total_price), "num price"),
    status,
    cell(when(order.updated_at), "nowrap"),
  );
  return tr;
}

// --- the calculator ---------------------------------------------------------------------

async function loadCatalogue() {
  let resp;
  try {
    resp = await api("/catalogue");
  } catch (_) {
    return;
  }
  if (!resp.ok) {
    say("Could not load the catalogue: " + (await detailOf(resp)));
    return;
  }
  const catalogue = await resp.json();
  models = new Map(catalogue.models.map((m) => [m.id, m]));
  materials = new Map(catalogue.materials.map((m) => [m.id, m]));
  fill($("model"), catalogue.models, (m) => m.name + " (" + m.kind + ")");
  fill($("material"), catalogue.materials, (m) => m.name);
  renderOrders();
  chosen();
}

function fill(select, items, label) {
  const before = select.value;
  const options = [...items]
    .sort((a, b) => label(a).localeCompare(label(b)))
    .map((item) => {
      const option = document.createElement("option");
      option.value = String(item.id);
      option.textContent = label(item);
      return option;
    });
  select.replaceChildren(...options);
  if (items.some((item) => String(item.id) === before)) select.value = before;
}

function sized(model) {
  return model !== undefined && /ring/.test(model.kind);
}

function chosen() {
  const model = models.get(Number($("model").value));
  if (sized(model) && !$("size").value) $("size").value = "17";
  if (!sized(model)) $("size").value = "";
  $("size").disabled = !sized(model);
  showPicture(model);
  clearTimeout(quoteTimer);
  quoteTimer = setTimeout(loadQuote, QUOTE_DELAY_MS);
}

async function showPicture(model) {
  const img = $("picture");
  if (!model) {
    img.hidden = true;
    return;
  }
  if (pictureFor === model.id) return;
  pictureFor = model.id;
  let resp;
  try {
    resp = await api("/models/" + encodeURIComponent(model.id) + "/picture");
  } catch (_) {
    return;
  }
  if (pictureFor !== model.id) return; // another model was chosen meanwhile
  if (!resp.ok) {
    img.hidden = true;
    return;
  }
  // An SVG shown through <img> runs nothing; a data: URL is allowed by the page's policy.
  img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(await resp.text());
  img.alt = model.name;
  img.hidden = false;
}

function request() {
  const size = $("size").value.trim();
  return {
    model: $("model").value,
    material: $("material").value,
    size: $("size").disabled ? "" : size,
    quantity: Number($("quantity").value),
  };
}

async function loadQuote() {
  const asked = request();
  if (!asked.model || !asked.material) return;
  let path =
    "/models/" + encodeURIComponent(asked.model) + "/price?material=" +
    encodeURIComponent(asked.material);
  if (asked.size) path += "&size=" + encodeURIComponent(asked.size);
  let resp;
  try {
    resp = await api(path);
  } catch (_) {
    return;
  }
  const now = request();
  if (now.model !== asked.model || now.material !== asked.material || now.size !== asked.size) {
    return; // the choice changed meanwhile: its own quote follows
  }
  if (!resp.ok) {
    quoted = null;
    showQuote(null, await detailOf(resp));
    return;
  }
  quoted = { asked, quote: await resp.json() };
  showQuote(quoted.quote, null);
}

function showQuote(quote, problem) {
  $("quote-problem").hidden = !problem;
  $("quote-problem").textContent = problem || "";
  $("place").disabled = !quote;
  if (!quote) {
    $("unit-price").textContent = "–";
    $("order-total").textContent = "";
    $("breakdown").replaceChildren();
    return;
  }
  $("unit-price").textContent = money(quote.total);
  const quantity = Number($("quantity").value);
  $("order-total").textContent =
    Number.isInteger(quantity) && quantity > 1
      ? quantity + " pieces: " + money(Number(quote.total) * quantity)
      : "";
  const rows = [];
  for (const [field, label, isMoney] of BREAKDOWN) {
    if (quote[field] === undefined || quote[field] === null) continue;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.dataset.part = field;
    dd.textContent = isMoney ? money(quote[field]) : String(quote[field]);
    rows.push(dt, dd);
  }
  $("breakdown").replaceChildren(...rows);
}

async function place(event) {
  event.preventDefault();
  if (!quoted) return;
  if (customer === null) {
    say("Whose key this is is not known yet: try again in a moment.");
    loadMe();
    return;
  }
  const { asked } = quoted;
  const quantity = Number($("quantity").value);
  if (!Number.isInteger(quantity) || quantity < 1) {
    say("The quantity must be a whole number of pieces.");
    return;
  }
  const params = asked.size ? { size: Number(asked.size) } : {};
  $("place").disabled = true;
  let resp;
  try {
    resp = await api("/orders", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        customer,
        model_id: Number(asked.model),
        material_id: Number(asked.material),
        quantity,
        params,
      }),
    });
  } catch (err) {
    if (err instanceof Unreachable) say("API unreachable: the order was not placed.");
    $("place").disabled = false;
    return;
  }
  $("place").disabled = false;
  if (!resp.ok) {
    say("The order was not placed: " + (await detailOf(resp)));
    return;
  }
  // The list shows it when the change stream announces it (the cached list is right then).
  const order = await resp.json();
  say("Order " + order.id + " placed: " + money(order.total_price) + ".", "info");
}

// --- the change stream ------------------------------------------------------------------

function onEvent(name, body) {
  if (name === "ready" || name === "resync") {
    if (customer === null) loadMe();
    if (models.size === 0) loadCatalogue();
    refetchOrders();
  } else if (name === "change" && Array.isArray(body.orders) && body.orders.length) {
    refetchOrders();
  }
}

// --- start ------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("model").addEventListener("change", chosen);
  $("material").addEventListener("change", chosen);
  $("size").addEventListener("input", chosen);
  $("quantity").addEventListener("input", () => quoted && showQuote(quoted.quote, null));
  $("quote-form").addEventListener("submit", place);
  $("more").addEventListener("click", loadOlder);
  startPage({
    keyStore: "mes.clientKey",
    refusedRole: "This key may not do that: the client page needs a client's key.",
    onKey: () => {
      customer = null;
      follow("/customers/me/events", onEvent);
      loadMe();
      loadCatalogue();
    },
  });
});
