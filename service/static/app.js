// The inbox console: a client of the public API (POST /object, POST /alert, GET /object/{id},
// POST /object/{id}/ack, and /inbox/{id} as a WebSocket or as Server-Sent Events).
"use strict";

const CLOSE_REASONS = {
  1000: "closed",
  1001: "server going away",
  1006: "connection lost",
  1011: "server error",
  1013: "database unavailable",
  4008: "too slow",
};

const $ = (selector) => document.querySelector(selector);

// -- API errors ------------------------------------------------------------------------------

function showError(text) {
  const box = $("#error");
  box.textContent = text;
  box.hidden = false;
}

function clearError() {
  $("#error").hidden = true;
}

// Turn the standard error body {"error", "message", "fields"?} into readable lines.
function describeError(status, body) {
  if (!body || typeof body !== "object" || !body.error) {
    return `HTTP ${status}`;
  }
  const lines = [`${status} ${body.error}: ${body.message}`];
  for (const [field, messages] of Object.entries(body.fields || {})) {
    const text = Array.isArray(messages) ? messages.join(" ") : JSON.stringify(messages);
    lines.push(`  ${field}: ${text}`);
  }
  return lines.join("\n");
}

// -- credentials -----------------------------------------------------------------------------
// The API key stays in this tab; each object's inbox token is remembered once seen (from
// POST /object, GET /object/{id} with a key, or pasted), and opens that object's routes.

const KEY_STORAGE = "inbox-api-key";
const tokens = {};

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function showKeyState() {
  $("#key-state").textContent = apiKey()
    ? "an API key is set: it is sent on every request"
    : "no API key: fine while access control is off";
}

function saveKey(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  $("#api-key").value = "";
  showKeyState();
}

function remember(obj) {
  if (obj && obj.inbox_token) tokens[obj.id] = obj.inbox_token;
}

// The credential for a request: the key when there is one, else the object's token.
function credential(objectId) {
  return apiKey() || (objectId !== undefined && tokens[objectId]) || "";
}

async function api(method, path, body, objectId) {
  const headers = body === undefined ? {} : { "Content-Type": "application/json" };
  const secret = credential(objectId);
  if (secret) headers.Authorization = `Bearer ${secret}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(`${method} ${path}: the service is unreachable (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch (_err) {
    data = null;
  }
  if (!response.ok) {
    throw new Error(describeError(response.status, data));
  }
  return data;
}

// -- objects ---------------------------------------------------------------------------------

function addObjectRow(obj) {
  const row = document.createElement("tr");
  row.dataset.objectId = obj.id;
  const pick = document.createElement("input");
  pick.type = "checkbox";
  pick.className = "pick";
  pick.value = obj.id;
  pick.addEventListener("change", syncPickedIds);
  const watch = document.createElement("button");
  watch.type = "button";
  watch.className = "close";
  watch.textContent = "Watch";
  watch.addEventListener("click", () => openInbox(obj.id));
  const cells = [pick, String(obj.id), obj.email, obj.phone_number, watch];
  for (const content of cells) {
    const cell = document.createElement("td");
    if (typeof content === "string") cell.textContent = content;
    else cell.append(content);
    row.append(cell);
  }
  $("#objects tbody").append(row);
}

function syncPickedIds() {
  const ids = [...document.querySelectorAll("#objects .pick:checked")].map((box) => box.value);
  $("#alert-ids").value = ids.join(", ");
}

async function createObject(event) {
  event.preventDefault();
  clearError();
  try {
    const obj = await api("POST", "/object", {
      email: $("#email").value,
      phone_number: $("#phone").value,
    });
    remember(obj);
    addObjectRow(obj);
  } catch (err) {
    showError(err.message);
  }
}

// -- alerts ----------------------------------------------------------------------------------

function parseIds(raw) {
  const parts = raw.split(/[\s,]+/).filter(Boolean);
  return parts.map((part) => (/^\d+$/.test(part) ? Number(part) : part));
}

async function sendAlert(event) {
  event.preventDefault();
  clearError();
  const all = $("#alert-all").checked;
  const body = { text: $("#alert-text").value, alert_all: all };
  if (!all) body.object_ids = parseIds($("#alert-ids").value);
  try {
    const alert = await api("POST", "/alert", body);
    $("#alert-result").textContent =
      `alert ${alert.id} sent to ${alert.number_of_objects_receiving_alert} object(s)`;
  } catch (err) {
    $("#alert-result").textContent = "";
    showError(err.message);
  }
}

// -- inboxes ---------------------------------------------------------------------------------
// Unread, as this view keeps it: the alerts it received with an id above the read cursor. The
// view opens with ?after=0 (it receives every alert of the object), learns the cursor from
// GET /object/{id} once the stream is open (so no move is missed between the two), and from
// every ack frame after that; the cursor only grows, so a frame told twice changes nothing.

const MAX_SHOWN = 200; // alerts listed per view; older ones still count

class Inbox {
  constructor(objectId, transport) {
    this.objectId = objectId;
    this.transport = transport;
    this.lastId = 0;
    this.cursor = 0;
    this.received = []; // alert ids, ascending
    this.closedByUser = false;
    this.delay = 500;
    const node = $("#inbox-template").content.firstElementChild.cloneNode(true);
    node.id = `inbox-${objectId}`;
    node.dataset.objectId = objectId;
    node.dataset.transport = transport;
    node.querySelector(".title").textContent = `inbox of object ${objectId}`;
    node.querySelector(".transport").textContent =
      transport === "eventsource" ? "EventSource" : "WebSocket";
    node.querySelector(".close").addEventListener("click", () => this.close());
    node.querySelector(".ack-all").addEventListener("click", () => {
      if (this.received.length) this.ack(this.received[this.received.length - 1]);
    });
    this.node = node;
    this.stateNode = node.querySelector(".state");
    this.unreadNode = node.querySelector(".unread-count");
    this.list = node.querySelector(".alerts");
    $("#inboxes").prepend(node);
    this.showUnread();
    this.connect();
  }

  setState(state, detail) {
    this.stateNode.dataset.state = state;
    this.stateNode.textContent = detail ? `${state}: ${detail}` : state;
  }

  url(scheme) {
    const params = new URLSearchParams({ after: String(this.lastId) });
    const token = tokens[this.objectId];
    if (token) params.set("token", token); // a browser cannot set headers on these
    return `${scheme}//${location.host}/inbox/${this.objectId}?${params}`;
  }

  connect() {
    this.setState(this.lastId ? "reconnecting" : "connecting");
    if (this.transport === "eventsource") this.connectEventSource();
    else this.connectWebSocket();
  }

  opened() {
    this.delay = 500;
    this.setState("open");
    this.refreshCursor();
  }

  connectWebSocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(this.url(scheme));
    this.stream = ws;
    ws.onopen = () => this.opened();
    ws.onmessage = (event) => this.frame(JSON.parse(event.data));
    ws.onclose = (event) => {
      const reason = event.reason || CLOSE_REASONS[event.code] || "closed";
      this.setState("closed", `${event.code} ${reason}`);
      this.retry();
    };
  }

  connectEventSource() {
    // EventSource resumes by itself with Last-Event-ID; `after` only matters for a new one.
    const source = new EventSource(this.url(location.protocol));
    this.stream = source;
    source.onopen = () => this.opened();
    source.onmessage = (event) => this.frame(JSON.parse(event.data));
    source.addEventListener("ack", (event) => this.frame(JSON.parse(event.data)));
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (a status other than 200): EventSource gives up; so would a retry.
        this.setState("closed", "refused");
        this.retry();
      } else {
        this.setState("reconnecting");
      }
    };
  }

  retry() {
    if (this.closedByUser) return;
    // Resume after the last alert received: nothing is missed, nothing repeated.
    setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 10000);
  }

  frame(data) {
    if ("acked_alert_id" in data) this.moveCursor(data.acked_alert_id);
    else this.receive(data);
  }

  async refreshCursor() {
    try {
      const obj = await api("GET", `/object/${this.objectId}`, undefined, this.objectId);
      remember(obj);
      this.moveCursor(obj.acked_alert_id);
    } catch (err) {
      showError(err.message);
    }
  }

  moveCursor(acked) {
    if (acked <= this.cursor) return;
    this.cursor = acked;
    for (const item of this.list.children) {
      if (Number(item.dataset.alertId) <= acked) {
        item.classList.replace("unread", "read");
      }
    }
    this.showUnread();
  }

  showUnread() {
    // `received` is ascending: count from the end down to the cursor.
    let count = 0;
    for (let i = this.received.length - 1; i >= 0 && this.received[i] > this.cursor; i--) count++;
    this.unreadNode.dataset.count = String(count);
    this.unreadNode.textContent = `${count} unread`;
  }

  async ack(alertId) {
    clearError();
    try {
      const state = await api(
        "POST", `/object/${this.objectId}/ack`, { alert_id: alertId }, this.objectId);
      this.moveCursor(state.acked_alert_id);
    } catch (err) {
      showError(err.message);
    }
  }

  receive(alert) {
    if (alert.id <= this.lastId) return;
    this.lastId = alert.id;
    this.received.push(alert.id);
    const item = document.createElement("li");
    item.className = `alert ${alert.id > this.cursor ? "unread" : "read"}`;
    item.dataset.alertId = alert.id;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = alert.text;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = ` #${alert.id} · ${new Date(alert.created_at).toLocaleTimeString()}`;
    const read = document.createElement("button");
    read.type = "button";
    read.className = "ack";
    read.textContent = "read up to here";
    read.addEventListener("click", () => this.ack(alert.id));
    item.append(text, meta, read);
    this.list.append(item);
    while (this.list.children.length > MAX_SHOWN) this.list.firstElementChild.remove();
    this.list.scrollTop = this.list.scrollHeight;
    this.showUnread();
  }

  close() {
    this.closedByUser = true;
    if (this.stream) this.stream.close();
    this.node.remove();
    delete inboxes[this.objectId];
  }
}

const inboxes = {};

async function openInbox(objectId, transport) {
  clearError();
  if (inboxes[objectId]) return;
  const pasted = $("#inbox-token").value.trim();
  if (pasted) tokens[objectId] = pasted;
  try {
    // The handshake of a missing object fails without a readable reason: ask first. With a
    // key, the answer carries the object's token, which the stream needs.
    remember(await api("GET", `/object/${encodeURIComponent(objectId)}`, undefined, objectId));
  } catch (err) {
    showError(err.message);
    return;
  }
  inboxes[objectId] = new Inbox(objectId, transport || $("#inbox-transport").value);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#object-form").addEventListener("submit", createObject);
  $("#alert-form").addEventListener("submit", sendAlert);
  $("#alert-all").addEventListener("change", (event) => {
    $("#alert-ids").disabled = event.target.checked;
  });
  $("#inbox-form").addEventListener("submit", (event) => {
    event.preventDefault();
    openInbox($("#inbox-id").value.trim());
  });
  $("#key-form").addEventListener("submit", saveKey);
  showKeyState();
});
