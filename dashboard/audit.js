// The audit log (GET /api/audit, docs/security.md) for users with
// `audit:read`; hidden for everyone else.
import { can } from "./access.js";
import { $, api, dateTime, el } from "./lib.js";

let before;

function query(more) {
  const params = new URLSearchParams({ limit: "100" });
  const actor = $("audit-actor").value.trim();
  const action = $("audit-action").value.trim();
  if (actor) params.set("actor", actor);
  if (action) params.set("action", action);
  if (more && before) params.set("before", String(before));
  return `/api/audit?${params}`;
}

function row(event) {
  return el(
    "tr",
    { "data-action": event.action, "data-outcome": event.outcome },
    el("td", {}, dateTime(event.time)),
    el("td", {}, event.actor),
    el("td", {}, event.action),
    el("td", {}, event.target),
    el("td", { class: event.outcome }, event.outcome),
    el("td", {}, event.ip),
  );
}

async function load(more = false) {
  try {
    const { events } = await api(query(more));
    before = events.length === 100 ? events[events.length - 1].id : undefined;
    const rows = events.map(row);
    if (more) $("audit-events").append(...rows);
    else $("audit-events").replaceChildren(...rows);
    $("audit-older").hidden = before === undefined;
    $("audit-note").hidden = true;
  } catch (error) {
    $("audit-note").textContent = error.message;
    $("audit-note").hidden = false;
  }
}

/** Starts the audit panel when `me` may read the audit log. */
export function startAudit(me) {
  if (!me?.auth_enabled || !can(me, "audit:read")) return;
  $("audit-panel").hidden = false;
  $("audit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  $("audit-older").addEventListener("click", () => load(true));
  load();
}
