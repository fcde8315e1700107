// Event history (docs/events.md): GET /api/events, newest first, filtered by
// time window, device and severity; events arriving on bus `event` are added
// live when they match the filters.
import { can } from "./access.js";
import { $, api, dateTime, el } from "./lib.js";

/** Rows kept in the table; older ones are dropped from the page (not from the store). */
const MAX_ROWS = 500;
const WINDOWS = { "15m": 900_000, "1h": 3_600_000, "24h": 86_400_000, "7d": 604_800_000 };

let next;

function filters() {
  const window = WINDOWS[$("events-window").value];
  return {
    from: window === undefined ? undefined : Date.now() - window,
    device: $("events-device").value.trim(),
    severity: $("events-severity").value,
  };
}

function query(filter, before) {
  const params = new URLSearchParams({ limit: "100" });
  if (filter.from !== undefined) params.set("from", new Date(filter.from).toISOString());
  if (filter.device) params.set("device", filter.device);
  if (filter.severity) params.set("severity", filter.severity);
  if (before) params.set("before", before);
  return `/api/events?${params}`;
}

/** What a row says: an alarm's message and state, else the payload. */
function summary(payload) {
  if (payload && typeof payload === "object" && !Array.isArray(payload)) {
    const parts = [payload.state, payload.message].filter((p) => typeof p === "string");
    if (parts.length > 0) return parts.join(": ");
  }
  const text = typeof payload === "string" ? payload : JSON.stringify(payload);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

function row(event) {
  return el(
    "tr",
    { "data-severity": event.severity ?? "", "data-device": event.device ?? "" },
    el("td", {}, dateTime(event.time)),
    el("td", { class: `severity ${event.severity ?? ""}` }, event.severity ?? ""),
    el("td", {}, event.device ?? ""),
    el("td", {}, event.topic),
    el("td", { class: "value" }, summary(event.payload)),
  );
}

function note(text) {
  $("events-note").textContent = text;
  $("events-note").hidden = !text;
}

async function load(append = false) {
  const filter = filters();
  try {
    const page = await api(query(filter, append ? next : undefined));
    next = page.next;
    const rows = page.events.map(row);
    if (append) $("events").append(...rows);
    else $("events").replaceChildren(...rows);
    $("events-older").hidden = !next;
    note(page.events.length === 0 && !append ? "no events match" : "");
  } catch (error) {
    note(error.status === 503 ? `history unavailable: ${error.message}` : error.message);
  }
}

/** A live bus message as the API would list it, or undefined when it does not match. */
function liveEvent(message, filter) {
  let payload = message.payload;
  if (message.encoding === "base64") payload = "(binary)";
  else {
    try {
      payload = JSON.parse(message.payload);
    } catch {
      // Text payloads are listed as text.
    }
  }
  const fields = payload && typeof payload === "object" && !Array.isArray(payload) ? payload : {};
  const at = Date.parse(fields.time);
  const event = {
    time: Number.isFinite(at) ? at : Date.now(),
    topic: message.topic,
    device: typeof fields.device === "string" ? fields.device : null,
    severity: typeof fields.severity === "string" ? fields.severity : null,
    payload,
  };
  if (filter.device && event.device !== filter.device) return undefined;
  if (filter.severity && event.severity !== filter.severity) return undefined;
  if (filter.from !== undefined && event.time < filter.from) return undefined;
  return event;
}

/** Starts the event history panel; hidden for users without `events:read`. */
export function startEvents(live, me) {
  if (!can(me, "events:read")) {
    $("events-panel").hidden = true;
    return;
  }
  $("events-form").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  $("events-older").addEventListener("click", () => load(true));
  live.hold("events-live", { type: "subscribe", bus: "event", prefix: "" }, (message) => {
    if (message.type !== "message") return;
    const event = liveEvent(message, filters());
    if (!event) return;
    $("events").prepend(row(event));
    note("");
    while ($("events").children.length > MAX_ROWS) $("events").lastElementChild.remove();
  });
  load();
}
