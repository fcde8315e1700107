// The plantd dashboard: plain ES modules, no build step. It speaks only the
// gateway's public API: REST under /api, /healthz, and the /ws protocol
// (docs/websocket.md).
import uPlot from "/vendor/uPlot.esm.js";
import { $, api, el, onUnauthorized, setStatus } from "./lib.js";
import { Live } from "./live.js";
import { startAlarmsPanel } from "./alarms.js";
import { refreshSession, scheduleRefresh, showLogin } from "./session.js";

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
          el("td", {}, new Date(check.lastUpdated).toLocaleTimeString()),
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
          el("td", {}, new Date(letter.dead_at).toLocaleTimeString()),
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
    el("td", {}, entry.updated_at ? new Date(entry.updated_at).toLocaleTimeString() : ""),
  );
}

async function loadScopes() {
  const { scopes } = await api("/api/state");
  const select = $("scope-select");
  select.replaceChildren(...scopes.map((scope) => el("option", { value: scope }, scope)));
  if (scopes.includes(currentScope)) select.value = currentScope;
  else if (scopes.length > 0) await showScope(scopes[0]);
}

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
    const time = new Date().toLocaleTimeString();
    // Go plantd's single-frame messages are the envelope immediately followed by the payload.
    const text = message.form === "single"
      ? `${message.topic}${message.payload}`
      : `${message.topic} ${message.payload}`;
    list.prepend(el("li", {}, `${time} ${text}`));
    while (list.children.length > MAX_MESSAGES) list.lastElementChild.remove();
  });
});

// ---------------------------------------------------------------- metrics

let chart;
const WINDOWS = { "15m": [15 * 60e3, "10s"], "1h": [3600e3, "1m"], "24h": [86400e3, "15m"] };

function drawChart(times, values) {
  const data = [times, values];
  $("metric-count").textContent = `${times.length} point${times.length === 1 ? "" : "s"}`;
  // The newest time plotted (seconds), for people and tests inspecting the page.
  $("metric-chart").dataset.lastTime = String(times.at(-1) ?? "");
  if (chart) return chart.setData(data);
  chart = new uPlot(
    {
      width: Math.max(320, $("metric-chart").clientWidth),
      height: 220,
      series: [{}, { label: "avg", stroke: "#2c6fbb", width: 1.5 }],
    },
    data,
    $("metric-chart"),
  );
}

$("metrics-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const device = $("metric-device").value.trim();
  const channel = $("metric-channel").value.trim();
  const [span, bucket] = WINDOWS[$("metric-window").value];
  const to = new Date();
  const from = new Date(to.getTime() - span);
  const note = $("metrics-note");
  const times = [];
  const values = [];
  try {
    const query = new URLSearchParams({
      device,
      channel,
      from: from.toISOString(),
      to: to.toISOString(),
      bucket,
    });
    const body = await api(`/api/metrics?${query}`);
    for (const point of body.buckets ?? body.points ?? body.data ?? []) {
      times.push(Date.parse(point.time ?? point.bucket) / 1000);
      values.push(point.avg);
    }
    note.hidden = true;
  } catch (error) {
    note.textContent = `History unavailable (${error.message}); showing live points only.`;
    note.hidden = false;
  }
  drawChart(times, values);
  // Live points from the metric bus are appended as they arrive.
  live.hold("metric-live", { type: "subscribe", bus: "metric", prefix: "" }, (message) => {
    if (message.type !== "message") return;
    let point;
    try {
      point = JSON.parse(message.payload);
    } catch {
      return;
    }
    const pointDevice = point.device ?? point.service_name;
    const pointChannel = point.channel ?? point.metric_name;
    if (pointDevice !== device || pointChannel !== channel) return;
    // The ingester stamps a point without a time when it arrives; so does the chart
    // (a NaN time would blank it for good).
    const at = Date.parse(point.time ?? point.timestamp);
    times.push((Number.isFinite(at) ? at : Date.now()) / 1000);
    values.push(Number(point.value));
    drawChart(times, values);
  });
});

// ---------------------------------------------------------------- start

refreshHealth();
refreshServices();
refreshDeadLetters();
loadScopes().catch((error) => {
  $("state-error").textContent = error.message;
  $("state-error").hidden = false;
});
setInterval(refreshHealth, 2000);
setInterval(refreshServices, 2000);
