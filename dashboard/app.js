// The plantd dashboard: plain ES modules, no build step. It speaks only the
// gateway's public API: REST under /api, /healthz, and the /ws protocol
// (docs/websocket.md).
import { $, api, dateTime, el, onUnauthorized, setStatus } from "./lib.js";
import { startAudit } from "./audit.js";
import { startEvents } from "./events.js";
import { Live } from "./live.js";
import { startGatewayPanel } from "./gateway_panel.js";
import { startPanels } from "./panels.js";
import { startAlarmsPanel } from "./alarms.js";
import { refreshSession, scheduleRefresh, showLogin } from "./session.js";
import { historyButton, historyChanged, setViewer } from "./state_history.js";

onUnauthorized(showLogin);

// ---------------------------------------------------------------- login

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").hidden = true;
  try {
    await api("/api/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        username: $("login-username").value,
        password: $("login-password").value,
      }),
    });
    $("login-password").value = "";
    location.reload();
  } catch (error) {
    $("login-error").textContent = error.message;
    $("login-error").hidden = false;
  }
});

$("logout").addEventListener("click", async () => {
  await api("/api/auth/logout", { method: "POST" }).catch(() => {});
  location.reload();
});

/** Who is looking: null when a login is needed first. */
async function whoAmI() {
  try {
    return await api("/api/auth/me");
  } catch (error) {
    if (error.status === 401) return null;
    throw error;
  }
}

// An expired access cookie with a live refresh cookie: renew before asking for a login.
let me = await whoAmI().catch(() => ({ auth_enabled: false }));
if (me === null && await refreshSession()) me = await whoAmI();
if (me === null) {
  showLogin();
  await new Promise(() => {}); // nothing more to run until the login form reloads the page
}
if (me.auth_enabled) {
  $("user").textContent = me.name;
  $("user").hidden = false;
  $("logout").hidden = false;
  scheduleRefresh(me.expires_at);
}
$("app").hidden = false;
setViewer(me);

const live = new Live();
startAlarmsPanel(live);

// ---------------------------------------------------------------- health and services

async function refreshHealth() {
  try {
    const response = await fetch("/healthz");
    const health = await response.json();
    setStatus("health-summary", health.status, `system ${health.status}`);
    $("health-checks").replaceChildren(
      ...health.checks.map((check) =>
        el(
          "tr",
          {},
          el("td", {}, check.name),
          el("td", { class: check.status }, check.status),
          el("td", {}, dateTime(check.lastUpdated)),
        )
      ),
    );
  } catch {
    setStatus("health-summary", "DOWN", "gateway unreachable");
  }
}

async function refreshServices() {
  try {
    const { services } = await api("/api/services");
    $("services").replaceChildren(
      ...services.map((s) =>
        el(
          "tr",
          { "data-service": s.name },
          el("td", {}, s.name),
          el("td", { class: "num" }, String(s.workers)),
          el("td", { class: "num" }, String(s.idle)),
          el("td", { class: "num" }, String(s.busy)),
          el("td", { class: "num" }, String(s.queued)),
        )
      ),
    );
  } catch (error) {
    $("services").replaceChildren(el("tr", {}, el("td", { colspan: "5" }, error.message)));
  }
}

// ---------------------------------------------------------------- dead letters

/** The broker's dead-letter queue (docs/durability.md); refreshed when one arrives. */
async function refreshDeadLetters() {
  const note = (text) => {
    $("dlq-note").textContent = text;
    $("dlq-note").hidden = !text;
  };
  try {
    const { dead_letters: letters, next, durable } = await api("/api/dlq?limit=100");
    note(
      durable === false
        ? "no durable services on the broker (docs/durability.md)"
        : letters.length === 0
        ? "no dead letters"
        : next
        ? "the 100 oldest; plant dlq ls lists them all"
        : "",
    );
    $("dead-letters").replaceChildren(
      ...letters.map((letter) =>
        el(
          "tr",
          { "data-id": letter.id, title: letter.detail },
          el("td", { class: "id" }, letter.id.slice(0, 12)),
          el("td", {}, letter.service),
          el("td", {}, letter.reason),
          el("td", { class: "num" }, String(letter.attempts)),
          el("td", {}, dateTime(letter.dead_at)),
          el("td", {}, dlqButton("replay", letter.id), dlqButton("delete", letter.id)),
        )
      ),
    );
  } catch (error) {
    $("dead-letters").replaceChildren();
    // No journal, or not this user's to see: say so rather than fail.
    note(error.status === 403 ? "not permitted (dlq:read)" : error.message);
  }
}

function dlqButton(action, id) {
  const button = el("button", { type: "button", "data-action": action }, action);
  button.addEventListener("click", async () => {
    try {
      await api(
        action === "replay" ? `/api/dlq/${id}/replay` : `/api/dlq/${id}`,
        { method: action === "replay" ? "POST" : "DELETE" },
      );
    } catch (error) {
      $("dlq-note").textContent = error.message;
      $("dlq-note").hidden = false;
      return;
    }
    await refreshDeadLetters();
  });
  return button;
}

live.hold(
  "dlq-events",
  { type: "subscribe", bus: "event", prefix: "org.plantd.Broker.dlq" },
  () => refreshDeadLetters(),
);

// ---------------------------------------------------------------- state

let currentScope = "";
const enc = encodeURIComponent;

function entryRow(key, entry) {
  return el(
    "tr",
    { "data-key": key },
    el("td", {}, key),
    el("td", { class: "value" }, entry.value),
    el("td", { class: "num" }, String(entry.revision)),
    el("td", {}, entry.updated_at ? dateTime(entry.updated_at) : ""),
    el("td", {}, historyButton(currentScope, key)),
  );
}

let knownScopes = new Set();

async function loadScopes() {
  const { scopes } = await api("/api/state");
  knownScopes = new Set(scopes);
  const select = $("scope-select");
  select.replaceChildren(...scopes.map((scope) => el("option", { value: scope }, scope)));
  select.dataset.scopes = String(scopes.length);
  if (scopes.includes(currentScope)) select.value = currentScope;
  else if (scopes.length > 0) await showScope(scopes[0]);
  else $("entries").replaceChildren();
}

// The scope list follows scopes being made and deleted by anyone: every state
// change is on the state bus; one naming a scope the list lacks (a first write
// makes its scope) or creating or deleting one reloads the list, once per burst.
let scopesReload;
live.hold("scope-list", { type: "subscribe", bus: "state", prefix: "" }, (message) => {
  if (message.type !== "message") return;
  let change;
  try {
    change = JSON.parse(message.payload);
  } catch {
    return;
  }
  const listed = knownScopes.has(change.scope);
  if (change.op === "delete-scope" ? !listed : listed && change.op !== "create-scope") return;
  clearTimeout(scopesReload);
  scopesReload = setTimeout(() => loadScopes().catch(() => {}), 100);
});

let scopeToken = 0;

/**
 * Shows a scope: watches it first, then reads it. A change made between the
 * two would otherwise be lost to the page: changes that arrive before the
 * snapshot wait and are applied over it when newer.
 */
async function showScope(scope) {
  const token = ++scopeToken;
  currentScope = scope;
  $("scope-select").value = scope;
  let early = [];
  let acknowledged;
  const watching = new Promise((resolve) => (acknowledged = resolve));
  live.hold("state-watch", { type: "watch", scope }, (message) => {
    if (message.type === "subscribed" || message.type === "error") acknowledged();
    if (message.type !== "change") return;
    if (early) early.push(message.change);
    else applyChange(message.change);
  });
  // Bounded: while the socket reconnects the watch goes out when it opens.
  await Promise.race([watching, new Promise((resolve) => setTimeout(resolve, 2000))]);
  const { keys } = await api(`/api/state/${enc(scope)}`);
  const rows = [];
  const revisions = new Map();
  if (keys.length > 0) {
    const { entries } = await api(`/api/state/${enc(scope)}?keys=${keys.map(enc).join(",")}`);
    for (const key of keys) {
      if (!entries[key]) continue;
      rows.push(entryRow(key, entries[key]));
      revisions.set(key, entries[key].revision);
    }
  }
  if (token !== scopeToken) return; // another scope was chosen meanwhile
  $("entries").replaceChildren(...rows);
  for (const change of early) {
    if (change.op === "set" && change.revision < (revisions.get(change.key) ?? 0)) continue;
    applyChange(change);
  }
  early = undefined;
}

function applyChange(change) {
  historyChanged(change);
  if (change.scope !== currentScope) return;
  if (change.op === "delete-scope") return loadScopes();
  const existing = document.querySelector(
    `#entries tr[data-key="${CSS.escape(change.key ?? "")}"]`,
  );
  if (change.op === "delete") return existing?.remove();
  if (change.op !== "set") return;
  const row = entryRow(change.key, {
    value: change.value,
    revision: change.revision,
    updated_at: Date.parse(change.timestamp),
  });
  row.classList.add("flash");
  if (existing) existing.replaceWith(row);
  else $("entries").append(row);
}

$("scope-select").addEventListener("change", (e) => showScope(e.target.value));
$("scope-refresh").addEventListener("click", () => loadScopes());
$("entry-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const scope = $("entry-scope").value.trim();
  const key = $("entry-key").value.trim();
  try {
    await api(`/api/state/${enc(scope)}/${enc(key)}`, {
      method: "PUT",
      headers: { "content-type": "text/plain" },
      body: $("entry-value").value,
    });
    $("state-error").hidden = true;
    if (scope !== currentScope) {
      await loadScopes();
      await showScope(scope);
    }
  } catch (error) {
    $("state-error").textContent = error.message;
    $("state-error").hidden = false;
  }
});

// ---------------------------------------------------------------- bus stream

const MAX_MESSAGES = 200;
live.onBuses = (buses) => {
  const select = $("bus-name");
  const previous = select.value;
  select.replaceChildren(...buses.map((bus) => el("option", { value: bus }, bus)));
  if (buses.includes(previous)) select.value = previous;
};
$("bus-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const bus = $("bus-name").value;
  const prefix = $("bus-prefix").value;
  $("bus-messages").replaceChildren();
  live.hold("bus-stream", { type: "subscribe", bus, prefix }, (message) => {
    if (message.type !== "message") return;
    const list = $("bus-messages");
    const time = dateTime(Date.now());
    // Go plantd's single-frame messages are the envelope immediately followed by the payload.
    const text = message.form === "single"
      ? `${message.topic}${message.payload}`
      : `${message.topic} ${message.payload}`;
    list.prepend(el("li", {}, `${time} ${text}`));
    while (list.children.length > MAX_MESSAGES) list.lastElementChild.remove();
  });
});

// ---------------------------------------------------------------- metrics (panels.js, gateway_panel.js)

startPanels(live);
startGatewayPanel();

// ---------------------------------------------------------------- start

refreshHealth();
refreshServices();
refreshDeadLetters();
startEvents(live, me);
startAudit(me);
loadScopes().catch((error) => {
  $("state-error").textContent = error.message;
  $("state-error").hidden = false;
});
setInterval(refreshHealth, 2000);
setInterval(refreshServices, 2000);
