// The inbox console: a client of the public API (POST /object, POST /alert, WS /inbox/{id}).
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

async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
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

class Inbox {
  constructor(objectId) {
    this.objectId = objectId;
    this.lastId = 0;
    this.closedByUser = false;
    this.delay = 500;
    const node = $("#inbox-template").content.firstElementChild.cloneNode(true);
    node.id = `inbox-${objectId}`;
    node.dataset.objectId = objectId;
    node.querySelector(".title").textContent = `inbox of object ${objectId}`;
    node.querySelector(".close").addEventListener("click", () => this.close());
    this.node = node;
    this.stateNode = node.querySelector(".state");
    this.list = node.querySelector(".alerts");
    $("#inboxes").prepend(node);
    this.connect();
  }

  setState(state, detail) {
    this.stateNode.dataset.state = state;
    this.stateNode.textContent = detail ? `${state}: ${detail}` : state;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/inbox/${this.objectId}?after=${this.lastId}`;
    this.setState(this.lastId ? "reconnecting" : "connecting");
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 500;
      this.setState("open");
    };
    ws.onmessage = (event) => this.receive(JSON.parse(event.data));
    ws.onclose = (event) => {
      const reason = event.reason || CLOSE_REASONS[event.code] || "closed";
      this.setState("closed", `${event.code} ${reason}`);
      if (!this.closedByUser) {
        // Resume after the last alert received: nothing is missed, nothing repeated.
        setTimeout(() => this.connect(), this.delay);
        this.delay = Math.min(this.delay * 2, 10000);
      }
    };
  }

  receive(alert) {
    this.lastId = alert.id;
    const item = document.createElement("li");
    item.className = "alert";
    item.dataset.alertId = alert.id;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = alert.text;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = ` #${alert.id} · ${new Date(alert.created_at).toLocaleTimeString()}`;
    item.append(text, meta);
    this.list.append(item);
    this.list.scrollTop = this.list.scrollHeight;
  }

  close() {
    this.closedByUser = true;
    if (this.ws) this.ws.close(1000);
    this.node.remove();
    delete inboxes[this.objectId];
  }
}

const inboxes = {};

async function openInbox(objectId) {
  clearError();
  if (inboxes[objectId]) return;
  try {
    // The handshake of a missing object fails without a readable reason: ask first.
    await api("GET", `/object/${encodeURIComponent(objectId)}`);
  } catch (err) {
    showError(err.message);
    return;
  }
  inboxes[objectId] = new Inbox(objectId);
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
});
