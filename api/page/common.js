// What both pages share: the key, requests to the API, messages, money, and following a
// Server-Sent Events stream (EventSource cannot send headers, so the stream is read with
// fetch and a stream reader).
//
// Each page calls startPage({...}) once. The key lives in sessionStorage and goes with
// every request as a Bearer token. Every value from the API reaches the DOM through
// textContent, never as HTML.
"use strict";

const MAX_RETRY_MS = 10000;
const $ = (id) => document.getElementById(id);

class Unreachable extends Error {}
class Unauthorized extends Error {}

const page = {
  keyStore: "", // sessionStorage entry of this page's key
  refusedRole: "", // what a 403 on the page's own requests means
  onKey: () => {}, // a key was entered (or found): load everything and follow the stream
  key: null,
  stream: null, // the AbortController of the open stream request
};

// --- talking to the API -----------------------------------------------------------------

async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (page.key) headers.set("Authorization", "Bearer " + page.key);
  let resp;
  try {
    resp = await fetch(path, { ...init, headers, cache: "no-store" });
  } catch (err) {
    if (init.signal && init.signal.aborted) throw err;
    throw new Unreachable(String(err));
  }
  if (resp.status === 401) {
    askForKey("The key was refused: enter it again.");
    throw new Unauthorized();
  }
  if (resp.status === 403 && init.roleCheck !== false) {
    askForKey(page.refusedRole);
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

// --- money and time ---------------------------------------------------------------------

const CURRENCY = (document.querySelector('meta[name="currency"]') || {}).content || "EUR";
let moneyFormat;
try {
  moneyFormat = new Intl.NumberFormat(undefined, { style: "currency", currency: CURRENCY });
} catch (_) {
  moneyFormat = { format: (n) => n.toFixed(2) + " " + CURRENCY };
}

function money(value) {
  const n = Number(value);
  return Number.isFinite(n) ? moneyFormat.format(n) : String(value);
}

function when(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

// --- the key ----------------------------------------------------------------------------

function askForKey(reason) {
  page.key = null;
  sessionStorage.removeItem(page.keyStore);
  if (page.stream) page.stream.abort();
  $("board").hidden = true;
  $("key-form").hidden = false;
  $("key-input").value = "";
  $("key-input").focus();
  if (reason) say(reason);
}

function useKey(key) {
  page.key = key;
  sessionStorage.setItem(page.keyStore, key);
  $("key-form").hidden = true;
  $("board").hidden = false;
  page.onKey();
}

// --- a change stream --------------------------------------------------------------------

function* sseEvents(text) {
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

async function follow(path, onEvent) {
  if (page.stream) page.stream.abort();
  const controller = new AbortController();
  page.stream = controller;
  let delay = 500;
  while (!controller.signal.aborted && page.key) {
    try {
      const resp = await api(path, { signal: controller.signal });
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
        for (const [name, data] of sseEvents(complete)) {
          let body = {};
          try {
            body = JSON.parse(data);
          } catch (_) { /* keep-alive or unknown: ignore */ }
          onEvent(name, body);
        }
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

// A load that may be asked for again while it runs: it then runs once more at its end.
function coalesced(load) {
  let running = null;
  let again = false;
  const run = () => {
    if (running) {
      again = true;
      return;
    }
    running = load().finally(() => {
      running = null;
      if (again) {
        again = false;
        run();
      }
    });
  };
  return run;
}

// --- start ------------------------------------------------------------------------------

function startPage(options) {
  Object.assign(page, options);
  page.key = sessionStorage.getItem(page.keyStore);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (key) useKey(key);
  });
  $("change-key").addEventListener("click", () => askForKey(null));
  if (page.key) useKey(page.key);
  else askForKey(null);
}
