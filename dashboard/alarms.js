// Alarms (docs/alarms.md): the list with acknowledge buttons, live from the
// event bus's `alarm.` topics, and a rule editor. Talks to /api/alarms only.
import { $, api, dateTime, el } from "./lib.js";

const enc = encodeURIComponent;
const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 };

function note(text) {
  $("alarms-note").textContent = text;
  $("alarms-note").hidden = !text;
}

function time(iso) {
  return iso ? dateTime(Date.parse(iso)) : "";
}

function alarmRow(alarm) {
  const ack = alarm.acknowledged_at
    ? `${alarm.acknowledged_by} ${time(alarm.acknowledged_at)}`
    : "";
  const button = el("button", { type: "button", class: "ack" }, "ack");
  button.hidden = Boolean(alarm.acknowledged_at);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(`/api/alarms/${enc(alarm.id)}/ack`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      note("");
    } catch (error) {
      note(error.message);
    }
    await refreshAlarms();
  });
  return el(
    "tr",
    {
      "data-id": alarm.id,
      "data-state": alarm.state,
      "data-severity": alarm.severity,
      class: `alarm ${alarm.state}`,
      title: alarm.message,
    },
    el("td", {}, el("span", { class: `severity ${alarm.severity}` }, alarm.severity)),
    el("td", {}, `${alarm.device}/${alarm.channel}`),
    el("td", {}, alarm.message),
    el("td", { class: "num" }, alarm.value === null ? "" : String(alarm.value)),
    el("td", { class: "state" }, alarm.state),
    el("td", {}, time(alarm.raised_at)),
    el("td", {}, alarm.cleared_at ? time(alarm.cleared_at) : ""),
    el("td", {}, ack),
    el("td", {}, button),
  );
}

let available = true;

/** The list for the chosen filter, worst first among open alarms. */
async function refreshAlarms() {
  if (!available) return;
  const filter = $("alarm-filter").value;
  try {
    const query = filter === "all" ? "" : `&state=${enc(filter)}`;
    const { alarms, counts } = await api(`/api/alarms?limit=200${query}`);
    alarms.sort((a, b) =>
      (a.state === "cleared") - (b.state === "cleared") ||
      SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity] ||
      b.raised_at.localeCompare(a.raised_at)
    );
    $("alarm-counts").textContent =
      `${counts.active} active, ${counts.acknowledged} acknowledged, ${counts.cleared} cleared`;
    $("alarm-counts").dataset.active = String(counts.active);
    $("alarms").replaceChildren(...alarms.map(alarmRow));
    if (alarms.length === 0) {
      $("alarms").append(el("tr", {}, el("td", { colspan: "9", class: "note" }, "no alarms")));
    }
  } catch (error) {
    note(error.status === 403 ? "not permitted (alarms:read)" : error.message);
  }
}

function ruleRow(rule) {
  const remove = el("button", { type: "button", "data-action": "delete" }, "delete");
  remove.addEventListener("click", async () => {
    try {
      await api(`/api/alarms/rules/${enc(rule.id)}`, { method: "DELETE" });
      note("");
    } catch (error) {
      note(error.message);
    }
    await refreshRules();
    await refreshAlarms();
  });
  const edit = el("button", { type: "button", "data-action": "edit" }, "edit");
  edit.addEventListener("click", () => {
    for (const field of ["id", "device", "channel", "kind", "threshold", "deadband", "severity"]) {
      $(`rule-${field}`).value = String(rule[field]);
    }
  });
  // The deadband is one-sided: it says where the alarm clears.
  const condition = rule.kind === "below"
    ? `< ${rule.threshold}, clears at ≥ ${rule.threshold + rule.deadband}`
    : `${rule.kind === "rate" ? "|Δ/s|" : ""} > ${rule.threshold}, clears at ≤ ${
      rule.threshold - rule.deadband
    }`;
  return el(
    "tr",
    { "data-id": rule.id, class: rule.enabled ? "" : "disabled" },
    el("td", {}, rule.id),
    el("td", {}, `${rule.device}/${rule.channel}`),
    el("td", {}, condition.trim()),
    el("td", {}, el("span", { class: `severity ${rule.severity}` }, rule.severity)),
    el("td", {}, edit, remove),
  );
}

async function refreshRules() {
  if (!available) return;
  try {
    const { rules, invalid } = await api("/api/alarms/rules");
    $("alarm-rules").replaceChildren(...rules.map(ruleRow));
    $("alarm-rules").dataset.ready = "true";
    if (invalid > 0) note(`${invalid} stored rule(s) are not valid rules and are skipped`);
  } catch (error) {
    note(error.status === 403 ? "rules: not permitted (alarms:read)" : error.message);
  }
}

async function saveRule(event) {
  event.preventDefault();
  const id = $("rule-id").value.trim();
  const rule = {
    device: $("rule-device").value.trim(),
    channel: $("rule-channel").value.trim(),
    kind: $("rule-kind").value,
    threshold: Number($("rule-threshold").value),
    deadband: Number($("rule-deadband").value || 0),
    severity: $("rule-severity").value,
  };
  try {
    await api(`/api/alarms/rules/${enc(id)}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(rule),
    });
    note("");
  } catch (error) {
    note(`rule not saved: ${error.message}`);
    return;
  }
  await refreshRules();
}

/**
 * Starts the panel: asks whether an alarms service runs (a system without
 * one shows a note instead of failing requests), then keeps the list live.
 */
export async function startAlarmsPanel(live) {
  try {
    const { services } = await api("/api/services");
    available = services.some((s) => s.name === "org.plantd.Alarms" && s.workers > 0);
  } catch {
    available = true; // not allowed to list services: ask /api/alarms and show what it says
  }
  if (!available) {
    note("no alarms service running (main.ts alarms, or deno task dev)");
    $("alarm-rule-form").hidden = true;
    return;
  }
  $("alarm-filter").addEventListener("change", refreshAlarms);
  $("alarm-rule-form").addEventListener("submit", saveRule);
  // Events only say something changed; the list is read again, one read at a time, and
  // once more after a read that an event overtook (that read may predate the change).
  let reading = false;
  let again = false;
  const reread = async () => {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    do {
      again = false;
      await refreshAlarms();
    } while (again);
    reading = false;
  };
  live.hold("alarm-events", { type: "subscribe", bus: "event", prefix: "alarm." }, (message) => {
    if (message.type === "message") reread();
  });
  // Events make it live; a slow re-read poll catches up after a failed read.
  setInterval(reread, 5000);
  await Promise.all([refreshRules(), refreshAlarms()]);
}
