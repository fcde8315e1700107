// A key's history in the state panel (docs/state.md#key-history): who changed
// it, when, old and new value, revision, newest first; state admins may
// delete it. It speaks only /api/state/{scope}/{key}/history.
import { api, dateTime, el } from "./lib.js";

const enc = encodeURIComponent;
/** Who is looking (/api/auth/me): whether the delete button shows. */
let viewer = { auth_enabled: false };
/** The key whose history is open: { scope, key }, or null. */
let open = null;
let loads = 0;

export function setViewer(me) {
  viewer = me;
}

/** The button of a key's row that opens the key's history. */
export function historyButton(scope, key) {
  const button = el(
    "button",
    { type: "button", class: "history", title: `history of ${key}` },
    "history",
  );
  button.addEventListener("click", () => showHistory(scope, key));
  return button;
}

/** A change event of the state watch: the open history follows its key. */
export function historyChanged(change) {
  if (!open || change.scope !== open.scope) return;
  if (change.op === "delete-scope" || change.key === open.key) showHistory(open.scope, open.key);
}

/**
 * Whether a grant covers a permission, in auth/permissions.ts's rules for the
 * two the deletion needs (a `*` segment matches one segment, a trailing `*`
 * the rest; a scoped grant names its scope whole). The gateway decides; this
 * only spares people a button that would be refused.
 */
function covers(grant, needed) {
  if (grant === needed || grant === "*") return true;
  const g = grant.split(":");
  const r = needed.split(":");
  const scoped = (s) => s.length >= 4 && s[0] === "state" && s[1] === "scope";
  if (scoped(g)) {
    if (!scoped(r)) return false;
    const scope = g.slice(2, -1).join(":");
    const op = g.at(-1);
    return (scope === "*" || scope === r.slice(2, -1).join(":")) && (op === "*" || op === r.at(-1));
  }
  for (let i = 0; i < g.length; i++) {
    if (g[i] === "*" && i === g.length - 1) return r.length >= g.length;
    if (i >= r.length || (g[i] !== "*" && g[i] !== r[i])) return false;
  }
  return g.length === r.length;
}

function mayDelete(scope) {
  if (!viewer.auth_enabled) return true;
  const needed = ["state:admin:full", `state:scope:${scope}:admin`];
  return (viewer.permissions ?? []).some((grant) => needed.some((n) => covers(grant, n)));
}

function panel() {
  let node = document.getElementById("key-history");
  if (!node) {
    node = el("div", { id: "key-history" });
    document.getElementById("state-panel").append(node);
  }
  return node;
}

/** A value as shown: an absent one (before creation, after deletion) as a dash. */
function valueCell(name, value) {
  return value === null
    ? el("td", { class: `${name} absent` }, "—")
    : el("td", { class: `${name} value` }, value);
}

function row(entry) {
  return el(
    "tr",
    { "data-id": String(entry.id), "data-op": entry.op },
    el("td", { class: "num revision" }, String(entry.revision)),
    el("td", { class: "when" }, dateTime(entry.at)),
    el("td", { class: "actor" }, entry.actor),
    valueCell("old", entry.old_value),
    el("td", { class: "arrow" }, "→"),
    valueCell("new", entry.new_value),
  );
}

/** Opens (or reloads) the history of `key`. */
export async function showHistory(scope, key) {
  const load = ++loads;
  open = { scope, key };
  const node = panel();
  const error = el("p", { class: "error", id: "history-error", hidden: "" });
  let entries = [];
  try {
    ({ entries } = await api(`/api/state/${enc(scope)}/${enc(key)}/history`));
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
  }
  if (load !== loads) return; // another history was opened meanwhile
  const close = el("button", { type: "button", id: "history-close" }, "close");
  close.addEventListener("click", () => {
    open = null;
    node.replaceChildren();
    delete node.dataset.key;
  });
  const actions = el("div", { class: "row" });
  if (mayDelete(scope) && entries.length > 0) {
    const remove = el("button", { type: "button", id: "history-delete" }, "delete history");
    remove.addEventListener("click", () => deleteHistory(scope, key, error));
    actions.append(remove);
  }
  actions.append(close);
  const body = entries.length === 0
    ? el("p", { class: "note", id: "history-empty" }, "no changes recorded")
    : el(
      "table",
      {},
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", {}, "rev"),
          el("th", {}, "when"),
          el("th", {}, "who"),
          el("th", {}, "old"),
          el("th", {}, ""),
          el("th", {}, "new"),
        ),
      ),
      el("tbody", { id: "history-entries" }, ...entries.map(row)),
    );
  node.dataset.scope = scope;
  node.dataset.key = key;
  node.replaceChildren(el("h3", {}, `history of ${scope} / ${key}`), body, actions, error);
}

async function deleteHistory(scope, key, error) {
  if (!confirm(`Delete the history of ${scope} / ${key}? The key itself stays.`)) return;
  try {
    await api(`/api/state/${enc(scope)}/${enc(key)}/history`, { method: "DELETE" });
    await showHistory(scope, key);
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
  }
}
