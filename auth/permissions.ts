/**
 * Permissions in plantd's vocabulary and how a grant covers a request.
 *
 * A permission is colon-separated segments: `state:data:read`,
 * `state:scope:plant:write`, `service:call:org.plantd.module.Echo`,
 * `bus:subscribe:metric:plant1.`. In a grant, a `*` segment matches any one
 * segment, and a trailing `*` matches everything after it (`state:*`, `*`).
 *
 * Names that may hold colons are matched whole, never by that trailing-`*`
 * rule (which made `state:scope:plant:*` cover scope `plant:x`):
 * - `state:scope:<scope>:<op>`: the scope is everything between
 *   `state:scope:` and the last segment; a grant's scope is that name or `*`
 *   (any scope), its op the op or `*`.
 * - `service:call:<name>`: the name is everything after `service:call:`; a
 *   grant names a service pattern (mdp/service_pattern.ts, the broker's rule
 *   too): a service, `*` (any), or a dotted namespace `org.plantd.*`.
 *
 * Bus grants are prefixes: `bus:subscribe:<bus>:<prefix>` allows subscribing
 * to any prefix that starts with `<prefix>`, so a subscription can never
 * receive a topic outside its grant (the bus filters by prefix too, byte for
 * byte, so segment-wise grants could not be enforced there). Topics may
 * contain colons, so everything after the bus name is the prefix; end it with
 * a `.` to stop at a segment (`plant1` also covers `plant10`).
 *
 * State operations map to permissions the way Go plantd meant them to, without
 * its defect (there `state-get`/`state-set` fell through to admin-only because
 * the table said `get`/`set`).
 *
 * @module
 */
import { patternCovers } from "../mdp/service_pattern.ts";
import { DURABLE_READ_OPERATIONS, DURABLE_WRITE_OPERATIONS } from "../mdp/broker_operations.ts";

/** Every permission name the system checks (scoped forms are built by the helpers below). */
export const PERMISSIONS = {
  stateScopeCreate: "state:scope:create",
  stateScopeDelete: "state:scope:delete",
  stateScopeList: "state:scope:list",
  stateDataRead: "state:data:read",
  stateDataWrite: "state:data:write",
  stateDataDelete: "state:data:delete",
  stateAdmin: "state:admin:full",
  servicesList: "service:list",
  metricsRead: "metrics:read",
  /** Event history (GET /api/events, docs/events.md). */
  eventsRead: "events:read",
  authAdmin: "auth:admin",
  auditRead: "audit:read",
  /** Prometheus `/metrics` of the gateway. */
  telemetryRead: "telemetry:read",
  /** Dead letters of durable requests and their journal (docs/durability.md). */
  dlqRead: "dlq:read",
  /** Replaying and deleting dead letters. */
  dlqWrite: "dlq:write",
  /** Alarms and their rules (docs/alarms.md). */
  alarmsRead: "alarms:read",
  /** Acknowledging an alarm (audited with who and when). */
  alarmsAck: "alarms:ack",
  /** Creating, changing and deleting alarm rules. */
  alarmsWrite: "alarms:write",
} as const;

/** The roles every installation has; more can be defined by admins. */
export const BUILTIN_ROLES: Record<string, string[]> = {
  admin: ["*"],
  operator: [
    "state:*",
    "bus:*",
    "service:*",
    PERMISSIONS.metricsRead,
    PERMISSIONS.eventsRead,
    // Replaying a dead letter sends a request its service:* grant could send anyway.
    "dlq:*",
    "alarms:*",
  ],
  viewer: [
    PERMISSIONS.stateDataRead,
    PERMISSIONS.stateScopeList,
    PERMISSIONS.servicesList,
    PERMISSIONS.metricsRead,
    PERMISSIONS.eventsRead,
    PERMISSIONS.alarmsRead,
    "bus:subscribe:*",
  ],
};

const PERMISSION_PATTERN = /^[^\s:]+(:[^\s]*)*$/;

/** Whether `text` is a well-formed permission or grant. */
export function isPermission(text: string): boolean {
  return text.length > 0 && text.length <= 1024 && PERMISSION_PATTERN.test(text);
}

/** Whether one grant covers one required permission. */
export function grantCovers(grant: string, required: string): boolean {
  if (grant === required || grant === "*") return true;
  const g = grant.split(":");
  const r = required.split(":");
  // Bus grants: the fourth segment on is a topic prefix, compared as text.
  if (g[0] === "bus" && r[0] === "bus" && g.length >= 3 && r.length >= 3) {
    if (!segmentMatches(g[1]!, r[1]!) || !segmentMatches(g[2]!, r[2]!)) return false;
    if (g.length === 3) return true; // no prefix: every topic of the bus
    let prefix = g.slice(3).join(":");
    if (prefix.endsWith("*")) prefix = prefix.slice(0, -1);
    return r.slice(3).join(":").startsWith(prefix);
  }
  if (isScoped(g)) return isScoped(r) && scopedCovers(g, r);
  if (g[0] === "service" && g[1] === "call" && g.length >= 3) {
    return r[0] === "service" && r[1] === "call" && r.length >= 3 &&
      patternCovers(g.slice(2).join(":"), r.slice(2).join(":"));
  }
  for (let i = 0; i < g.length; i++) {
    const segment = g[i]!;
    if (segment === "*" && i === g.length - 1) return r.length >= g.length;
    if (i >= r.length || !segmentMatches(segment, r[i]!)) return false;
  }
  return g.length === r.length;
}

function segmentMatches(grant: string, required: string): boolean {
  return grant === "*" || grant === required;
}

/** `state:scope:<scope>:<op>` (three-segment `state:scope:create` and the like are not). */
function isScoped(segments: readonly string[]): boolean {
  return segments.length >= 4 && segments[0] === "state" && segments[1] === "scope";
}

/** A scoped grant against a scoped permission: whole scope names, then the op. */
function scopedCovers(g: readonly string[], r: readonly string[]): boolean {
  const scope = g.slice(2, -1).join(":");
  return (scope === "*" || scope === r.slice(2, -1).join(":")) &&
    segmentMatches(g[g.length - 1]!, r[r.length - 1]!);
}

/** Whether any of `grants` covers any of `required` (alternatives). */
export function allows(grants: readonly string[], ...required: string[]): boolean {
  for (const need of required) {
    for (const grant of grants) if (grantCovers(grant, need)) return true;
  }
  return false;
}

/** A state operation's permission: the global form first, then the per-scope forms that also allow it. */
export function statePermissions(operation: string, scope: string | undefined): string[] | null {
  const scoped = (level: string) => scope === undefined ? [] : [`state:scope:${scope}:${level}`];
  const admin = [PERMISSIONS.stateAdmin, ...scoped("admin")];
  switch (operation) {
    case "create-scope":
      return [PERMISSIONS.stateScopeCreate, ...admin];
    case "delete-scope":
      return [PERMISSIONS.stateScopeDelete, ...admin];
    case "state-set":
    case "state-set-many":
    case "state-cas":
      return [PERMISSIONS.stateDataWrite, ...scoped("write"), ...admin];
    case "state-get":
    case "state-get-many":
    case "list-keys":
    case "state-history":
      return [PERMISSIONS.stateDataRead, ...scoped("read"), ...admin];
    case "delete":
      return [PERMISSIONS.stateDataDelete, ...scoped("delete"), ...admin];
    case "list-scopes":
      return [PERMISSIONS.stateScopeList, PERMISSIONS.stateAdmin];
    // Erasing who changed what takes more than deleting the key: a deleter
    // could otherwise cover their tracks.
    case "state-history-delete":
      return admin;
    default:
      return null;
  }
}

/** `bus:subscribe:<bus>:<prefix>`. */
export function busSubscribe(bus: string, prefix: string): string {
  return `bus:subscribe:${bus}:${prefix}`;
}

/** `bus:publish:<bus>:<topic>`. */
export function busPublish(bus: string, topic: string): string {
  return `bus:publish:${bus}:${topic}`;
}

/** `service:call:<service>`. */
export function serviceCall(service: string): string {
  return `service:call:${service}`;
}

/** Permissions of a set of roles; unknown roles grant nothing. */
export function permissionsOf(
  roles: readonly string[],
  defined: Record<string, readonly string[]>,
): string[] {
  const out = new Set<string>();
  for (const role of roles) for (const p of defined[role] ?? BUILTIN_ROLES[role] ?? []) out.add(p);
  return [...out];
}

/**
 * The permission an `org.plantd.Broker` operation needs beyond
 * `service:call:org.plantd.Broker`: the dead-letter operations ask what the
 * `/api/dlq` routes ask, so the generic bridge is no way around them.
 */
export function brokerOperationPermission(operation: string): string | undefined {
  if (DURABLE_READ_OPERATIONS.has(operation)) return PERMISSIONS.dlqRead;
  if (DURABLE_WRITE_OPERATIONS.has(operation)) return PERMISSIONS.dlqWrite;
  return undefined;
}

/**
 * The permission an `org.plantd.Alarms` operation needs beyond
 * `service:call:org.plantd.Alarms`, as the `/api/alarms` routes ask it, so
 * the generic bridge is no way around them. Unknown operations: read (the
 * service refuses them itself).
 */
export function alarmsOperationPermission(operation: string): string {
  if (operation === "ack") return PERMISSIONS.alarmsAck;
  if (operation === "rule-set" || operation === "rule-delete") return PERMISSIONS.alarmsWrite;
  return PERMISSIONS.alarmsRead;
}
