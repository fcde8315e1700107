/**
 * The commands of `plant`, mirroring Go plantd's client (`echo`, `state …`)
 * plus `services`, `call`, `sub`, `pub`, `health`, `dlq …`, `events` and `alarms …`. Each prints a table or
 * a line for people and one JSON document per result with `--json`.
 *
 * @module
 */
import type { CurveClientKeys } from "../transport/curve.ts";
import type { Backend, BusLine, Frame } from "./backend.ts";
import { GatewayBackend } from "./gateway_backend.ts";
import { CliError, EXIT, type ExitCode, UsageError } from "./errors.ts";
import { isoTime, type Output } from "./output.ts";
import type { AccountContext } from "./profiles.ts";

/** What a command gets from the command line. */
export interface Context {
  out: Output;
  /** The backend, created on first use (pub does not need one). */
  backend(): Promise<Backend>;
  positionals: string[];
  /**
   * The state scope: `--service`/`--scope` (Go plantd's flag), PLANTD_CLI_SCOPE
   * or the profile's; reading it without any of them is a usage error
   * naming them.
   */
  readonly scope: string;
  timeoutMs: number;
  /** `sub`: stop after this many messages. */
  count?: number;
  /** `sub`/`pub`: the bus endpoint given with `--endpoint`. */
  endpoint?: string;
  /** `pub`: default endpoint of a bus's frontend. */
  frontendOf(bus: string): string;
  /** `sub`: direct subscription endpoint when `--endpoint` or broker mode says so. */
  directBackendOf(bus: string): string | undefined;
  /** `pub`: send `[topic, payload]` rather than Go plantd's single frame. */
  frames: boolean;
  /** `pub`: how long to wait for a subscriber. */
  waitMs: number;
  /** `health --url`: a component's own health server. */
  healthUrl?: string;
  /** `events`: the filters (since as an RFC 3339 time) and how many at most. */
  events?: { device?: string; severity?: string; since?: string; limit: number };
  /** Aborted on Ctrl-C (SIGINT) and SIGTERM. */
  signal: AbortSignal;
  /** CURVE keys for a broker and buses that require CURVE (PLANTD_CLI_CURVE_*). */
  curve?: CurveClientKeys;
  /** The profile and what `login`, `logout` and `profile` need. */
  account: AccountContext;
}

/** One command: its words, arguments, options and what it does. */
export interface Command {
  /** e.g. ["state", "get"] */
  words: string[];
  /** Positional arguments as shown in help; `[X]` is optional. */
  args: string[];
  /** Options it accepts besides the global ones. */
  options: string[];
  summary: string;
  run(context: Context): Promise<ExitCode | void>;
}

/** A dead letter as `/api/dlq` lists it. */
interface DeadLetterRow {
  id: string;
  service: string;
  reason: string;
  detail: string;
  attempts: number;
  received_at: string;
  dead_at: string;
  failures: Array<{ at: string; reason: string }>;
  replays: number;
  operation?: string;
}

/** An event as `/api/events` lists it. */
interface EventRow {
  id: number;
  time: string;
  bus: string;
  topic: string;
  device: string | null;
  severity: string | null;
  kind: string | null;
  payload: unknown;
}

/** One line of an event: an alarm's state and message, else the payload. */
function eventText(payload: unknown): string {
  if (payload !== null && typeof payload === "object" && !Array.isArray(payload)) {
    const fields = payload as Record<string, unknown>;
    const parts = [fields.state, fields.message].filter((p) => typeof p === "string");
    if (parts.length > 0) return parts.join(": ");
  }
  const text = typeof payload === "string" ? payload : JSON.stringify(payload);
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}

/** An alarm as `/api/alarms` lists it. */
interface AlarmRow {
  id: string;
  rule: string;
  device: string;
  channel: string;
  severity: string;
  state: string;
  message: string;
  value: number | null;
  raised_at: string;
  acknowledged_by?: string;
  acknowledged_at?: string;
  cleared_at?: string;
}

/** An alarm rule as `/api/alarms/rules` lists it. */
interface RuleRow {
  id: string;
  device: string;
  channel: string;
  kind: string;
  threshold: number;
  deadband: number;
  severity: string;
  enabled: boolean;
}

const ALARM_FILTERS = ["all", "open", "active", "acknowledged", "cleared"];

/** Go plantd's client name, which `echo` sends as its service. */
export const DEFAULT_SCOPE = "org.plantd.Client";
export const ECHO_SERVICE = "org.plantd.module.Echo";

function frameText(frame: Frame): string {
  if (frame.base64 !== undefined) return `<base64:${frame.base64}>`;
  if (frame.json !== undefined && typeof frame.json === "object" && frame.json !== null) {
    return JSON.stringify(frame.json, null, 2);
  }
  return frame.text ?? "";
}

/** A plantd reply that says it failed: `{"success":false,"error":"…"}`. */
function replyError(frames: Frame[]): string | undefined {
  for (const frame of frames) {
    const json = frame.json as { success?: unknown; error?: unknown } | undefined;
    if (json && typeof json === "object" && json.success === false) {
      return String(json.error ?? "the service reported a failure");
    }
  }
  return undefined;
}

function parseJsonArg(raw: string, what: string): string {
  try {
    JSON.parse(raw);
  } catch (error) {
    throw new UsageError(`${what} is not valid JSON: ${(error as Error).message}`);
  }
  return raw;
}

/** The scope of `state create-scope|delete-scope|list`: the positional or --service. */
function scopeArg(context: Context): string {
  return context.positionals[0] ?? context.scope;
}

function printLine(out: Output, line: BusLine): void {
  out.data(line);
  out.line(
    `${line.topic} ${line.encoding === "base64" ? `<base64:${line.payload}>` : line.payload}`,
  );
}

const state = (name: string, args: string[], summary: string, run: Command["run"]): Command => ({
  words: ["state", name],
  args,
  options: ["service"],
  summary,
  run,
});

export const COMMANDS: Command[] = [
  {
    words: ["echo"],
    args: ["MESSAGE"],
    options: [],
    summary: "round trip through the broker to org.plantd.module.Echo",
    async run({ out, backend, positionals }) {
      const message = positionals[0]!;
      const body = JSON.stringify({ service: DEFAULT_SCOPE, message });
      const started = performance.now();
      const frames = await (await backend()).call(ECHO_SERVICE, "echo", body);
      const ms = Math.round((performance.now() - started) * 10) / 10;
      const reply = frames[0]?.json as { message?: unknown } | undefined;
      out.data({ service: ECHO_SERVICE, reply: reply ?? frames, elapsed_ms: ms });
      out.line(
        `${
          typeof reply?.message === "string" ? reply.message : frames.map(frameText).join(" ")
        }  (${ms} ms)`,
      );
    },
  },
  {
    words: ["services"],
    args: ["[NAME...]"],
    options: [],
    summary: "services known to the broker (or those named), with workers and queue depths",
    async run({ out, backend, positionals }) {
      const from = await backend();
      const services = await from.services(positionals);
      const source = from.servicesSource?.();
      if (source) out.note(source);
      out.data({ count: services.length, services, ...(source ? { source } : {}) });
      if (services.length === 0) return out.line("no services");
      const count = (n: number | null) => n ?? "?";
      out.table(
        ["SERVICE", "WORKERS", "IDLE", "BUSY", "QUEUED"],
        services.map((
          s,
        ) => [s.name, count(s.workers), count(s.idle), count(s.busy), count(s.queued)]),
      );
    },
  },
  {
    words: ["call"],
    args: ["SERVICE", "OPERATION", "[JSON]"],
    options: [],
    summary: "send any Majordomo request [OPERATION, JSON] and print the reply frames",
    async run({ out, backend, positionals }) {
      const [service, operation, raw = "{}"] = positionals as [string, string, string?];
      const frames = await (await backend()).call(
        service,
        operation,
        parseJsonArg(raw, "the JSON argument"),
      );
      out.data({ service, frames });
      for (const frame of frames) out.line(frameText(frame));
      const failed = replyError(frames);
      if (failed !== undefined) {
        throw new CliError(`${service} answered with an error: ${failed}`, "REPLY_ERROR");
      }
    },
  },
  {
    words: ["health"],
    args: [],
    options: ["url"],
    summary: "health of the gateway's view of the system (or of any component with --url)",
    async run({ out, backend, healthUrl, timeoutMs }) {
      const health = healthUrl
        ? await new GatewayBackend(healthUrl, timeoutMs, "health server").health()
        : await (await backend()).health();
      out.data(health);
      out.table(
        ["CHECK", "STATUS", "SINCE", "OUTPUT"],
        health.checks.map((c) => [c.name, c.status, c.lastUpdated, c.output ?? ""]),
      );
      out.line(`status: ${health.status}`);
      if (health.status !== "UP") {
        const down = health.checks.filter((c) => c.status === "DOWN" && c.required !== false);
        throw new CliError(
          `system is DOWN: ${
            down.map((c) => `${c.name}${c.output ? ` (${c.output})` : ""}`).join(", ")
          }`,
          "DOWN",
        );
      }
    },
  },
  {
    words: ["sub"],
    args: ["BUS", "[PREFIX]"],
    options: ["endpoint", "count"],
    summary: "print the messages of a bus whose topic starts with PREFIX, until Ctrl-C",
    async run(context) {
      const { out, positionals, count, signal } = context;
      const [bus, prefix = ""] = positionals as [string, string?];
      const stop = new AbortController();
      const onStop = () => stop.abort();
      signal.addEventListener("abort", onStop, { once: true });
      let received = 0;
      const options = {
        signal: stop.signal,
        onReady: (where: string) =>
          out.note(`subscribed to bus '${bus}' prefix '${prefix}' at ${where}`),
        onMessage: (line: BusLine) => {
          if (stop.signal.aborted) return;
          printLine(out, line);
          if (count !== undefined && ++received >= count) stop.abort();
        },
      };
      try {
        const direct = context.directBackendOf(bus);
        if (direct) {
          const { subscribeDirect } = await import("./bus_direct.ts");
          await subscribeDirect(direct, bus, prefix, context.timeoutMs, options, context.curve);
        } else {
          await (await context.backend()).subscribe(bus, prefix, options);
        }
      } finally {
        signal.removeEventListener("abort", onStop);
      }
    },
  },
  {
    words: ["pub"],
    args: ["BUS", "TOPIC", "PAYLOAD"],
    options: ["endpoint", "frames", "single", "wait"],
    summary: "publish one message on a bus (straight to its frontend)",
    async run({ out, positionals, frontendOf, frames, waitMs, timeoutMs, curve }) {
      const [bus, topic, payload] = positionals as [string, string, string];
      const endpoint = frontendOf(bus);
      const { publishDirect } = await import("./bus_direct.ts");
      const { flushClosedSockets } = await import("../transport/pubsub.ts");
      const published = await publishDirect(endpoint, bus, topic, payload, {
        form: frames ? "frames" : "single",
        waitMs,
        timeoutMs,
        ...(curve ? { curve } : {}),
      });
      await flushClosedSockets();
      out.data(published);
      out.line(
        `published ${published.bytes} bytes on bus '${bus}' topic '${topic}' at ${endpoint}`,
      );
      if (!published.subscribed) {
        out.note(
          `no subscriber for '${topic}' on bus '${bus}' within ${waitMs} ms: the message was dropped`,
        );
      }
    },
  },
  {
    words: ["events"],
    args: [],
    options: ["device", "severity", "since", "limit"],
    summary: "event history recorded from the event buses, newest first (gateway only)",
    async run({ out, backend, events: filter }) {
      const gateway = await backend();
      if (!gateway.events) {
        throw new UsageError(
          "event history is read from the gateway (GET /api/events): drop --broker",
        );
      }
      const limit = filter?.limit ?? 100;
      const events: EventRow[] = [];
      let before: string | undefined;
      do {
        const page = await gateway.events({
          limit: String(Math.min(1000, limit - events.length)),
          ...(filter?.device ? { device: filter.device } : {}),
          ...(filter?.severity ? { severity: filter.severity } : {}),
          ...(filter?.since ? { from: filter.since } : {}),
          ...(before ? { before } : {}),
        });
        events.push(...page.events as EventRow[]);
        before = page.next as string | undefined;
      } while (before && events.length < limit);
      out.data({ count: events.length, events });
      if (events.length === 0) return out.line("no events");
      out.table(
        ["TIME", "SEVERITY", "DEVICE", "TOPIC", "EVENT"],
        events.map((e) => [
          e.time,
          e.severity ?? "",
          e.device ?? "",
          e.topic,
          eventText(e.payload),
        ]),
      );
    },
  },
  {
    words: ["dlq", "ls"],
    args: ["[SERVICE]"],
    options: [],
    summary: "dead letters of durable requests (of one service), oldest first",
    async run({ out, backend, positionals }) {
      const service = positionals[0];
      const letters: DeadLetterRow[] = [];
      let after: string | undefined;
      let durable = true;
      do {
        const page = await (await backend()).dlq("list", {
          limit: 1000,
          ...(service ? { service } : {}),
          ...(after ? { after } : {}),
        });
        letters.push(...page.dead_letters as DeadLetterRow[]);
        after = page.next as string | undefined;
        if (page.durable === false) durable = false;
      } while (after);
      out.data({ count: letters.length, dead_letters: letters });
      if (!durable) return out.line("no dead letters: the broker has no durable services");
      if (letters.length === 0) return out.line("no dead letters");
      out.table(
        ["ID", "SERVICE", "REASON", "ATTEMPTS", "DEAD AT", "OPERATION"],
        letters.map((l) => [l.id, l.service, l.reason, l.attempts, l.dead_at, l.operation ?? ""]),
      );
    },
  },
  {
    words: ["dlq", "show"],
    args: ["ID"],
    options: [],
    summary: "one dead letter: why, when, its failures and its body",
    async run({ out, backend, positionals }) {
      const letter = (await (await backend()).dlq("show", {
        id: positionals[0]!,
      })) as unknown as DeadLetterRow & { body?: Frame[] };
      out.data(letter);
      out.table(["FIELD", "VALUE"], [
        ["id", letter.id],
        ["service", letter.service],
        ["reason", `${letter.reason}: ${letter.detail}`],
        ["attempts", letter.attempts],
        ["received", letter.received_at],
        ["dead", letter.dead_at],
        ["replays", letter.replays],
        ...letter.failures.map((f, i) => [`failure ${i + 1}`, `${f.at} ${f.reason}`]),
        ...(letter.body ?? []).map((f, i) => [`frame ${i}`, frameText(f)]),
      ]);
    },
  },
  {
    words: ["dlq", "replay"],
    args: ["ID"],
    options: [],
    summary: "route a dead letter again (its reply is kept under its id)",
    async run({ out, backend, positionals }) {
      const replayed = await (await backend()).dlq("replay", { id: positionals[0]! });
      out.data(replayed);
      out.line(`replayed ${replayed.id} to ${replayed.service}`);
    },
  },
  {
    words: ["dlq", "delete"],
    args: ["ID"],
    options: [],
    summary: "delete one dead letter",
    async run({ out, backend, positionals }) {
      const deleted = await (await backend()).dlq("delete", { id: positionals[0]! });
      out.data(deleted);
      out.line(`deleted ${deleted.id}`);
    },
  },
  {
    words: ["dlq", "purge"],
    args: ["[SERVICE]"],
    options: [],
    summary: "delete every dead letter (of one service)",
    async run({ out, backend, positionals }) {
      const service = positionals[0];
      const purged = await (await backend()).dlq("purge", service ? { service } : {});
      out.data(purged);
      out.line(`deleted ${purged.deleted} dead letter${purged.deleted === 1 ? "" : "s"}`);
    },
  },
  {
    words: ["alarms", "ls"],
    args: ["[STATE]"],
    options: [],
    summary: "alarms, newest first: all (default), open, active, acknowledged or cleared",
    async run({ out, backend, positionals }) {
      const filter = positionals[0] ?? "all";
      if (!ALARM_FILTERS.includes(filter)) {
        throw new UsageError(`STATE is one of ${ALARM_FILTERS.join(", ")}, not '${filter}'`);
      }
      const listed = await (await backend()).alarms(
        "list",
        filter === "all" ? {} : {
          state: filter,
        },
      );
      const alarms = listed.alarms as AlarmRow[];
      out.data(listed);
      if (alarms.length === 0) return out.line("no alarms");
      out.table(
        ["ID", "SEVERITY", "STATE", "DEVICE/CHANNEL", "VALUE", "RAISED", "ACKNOWLEDGED BY"],
        alarms.map((a) => [
          a.id,
          a.severity,
          a.state,
          `${a.device}/${a.channel}`,
          a.value ?? "",
          a.raised_at,
          a.acknowledged_by ?? "",
        ]),
      );
    },
  },
  {
    words: ["alarms", "ack"],
    args: ["ID"],
    options: [],
    summary: "acknowledge an alarm (as the gateway's user; --broker: the local user)",
    async run({ out, backend, positionals }) {
      const alarm = await (await backend()).alarms("ack", { id: positionals[0]! });
      out.data(alarm);
      out.line(`acknowledged ${alarm.id} by ${alarm.acknowledged_by} at ${alarm.acknowledged_at}`);
    },
  },
  {
    words: ["alarms", "rules"],
    args: [],
    options: [],
    summary: "alarm rules",
    async run({ out, backend }) {
      const listed = await (await backend()).alarms("rules", {});
      const rules = listed.rules as RuleRow[];
      out.data(listed);
      if (listed.invalid) out.note(`${listed.invalid} stored rule(s) are not valid and skipped`);
      if (rules.length === 0) return out.line("no rules");
      out.table(
        ["ID", "DEVICE/CHANNEL", "KIND", "THRESHOLD", "DEADBAND", "SEVERITY", "ENABLED"],
        rules.map((r) => [
          r.id,
          `${r.device}/${r.channel}`,
          r.kind,
          r.threshold,
          r.deadband,
          r.severity,
          String(r.enabled),
        ]),
      );
    },
  },
  {
    words: ["alarms", "rule-set"],
    args: ["ID", "JSON"],
    options: [],
    summary:
      'create or replace a rule: \'{"device":"boiler","channel":"temp","kind":"above","threshold":80}\'',
    async run({ out, backend, positionals }) {
      const body = JSON.parse(parseJsonArg(positionals[1]!, "the rule"));
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        throw new UsageError("the rule is a JSON object (docs/alarms.md)");
      }
      const rule = await (await backend()).alarms("rule-set", {
        rule: { ...body, id: positionals[0]! },
      });
      out.data(rule);
      out.line(`rule ${rule.id} set`);
    },
  },
  {
    words: ["alarms", "rule-rm"],
    args: ["ID"],
    options: [],
    summary: "delete a rule (its open alarm clears)",
    async run({ out, backend, positionals }) {
      const deleted = await (await backend()).alarms("rule-delete", { id: positionals[0]! });
      out.data(deleted);
      out.line(`rule ${deleted.id} deleted`);
    },
  },
  state("get", ["KEY"], "read a key of the scope", async ({ out, backend, scope, positionals }) => {
    const entry = await (await backend()).get(scope, positionals[0]!);
    out.data(entry);
    out.table(
      ["SCOPE", "KEY", "VALUE", "REVISION", "UPDATED"],
      [[entry.scope, entry.key, entry.value, entry.revision, isoTime(entry.updated_at)]],
    );
  }),
  state("set", ["KEY", "VALUE"], "write a key (creates the scope if needed)", async (c) => {
    const [key, value] = c.positionals as [string, string];
    const revision = await (await c.backend()).set(c.scope, key, value);
    c.out.data({ scope: c.scope, key, value, revision });
    c.out.line(`set ${c.scope} ${key} (revision ${revision})`);
  }),
  state("delete", ["KEY"], "delete a key", async ({ out, backend, scope, positionals }) => {
    const key = positionals[0]!;
    await (await backend()).delete(scope, key);
    out.data({ scope, key, status: "deleted" });
    out.line(`deleted ${scope} ${key}`);
  }),
  state("history", ["KEY"], "who changed a key, when, old and new value (newest first)", async (
    { out, backend, scope, positionals },
  ) => {
    const key = positionals[0]!;
    const entries = await (await backend()).history(scope, key);
    out.data({ scope, key, entries });
    if (entries.length === 0) return out.line(`no history of ${scope} ${key}`);
    const shown = (value: string | null) => value === null ? "-" : value;
    out.table(
      ["REVISION", "OP", "WHEN", "WHO", "OLD", "NEW"],
      entries.map((e) => [
        e.revision,
        e.op,
        isoTime(e.at),
        e.actor,
        shown(e.old_value),
        shown(e.new_value),
      ]),
    );
  }),
  state("list", ["[SCOPE]"], "list the keys of the scope", async (context) => {
    const scope = scopeArg(context);
    const keys = await (await context.backend()).listKeys(scope);
    context.out.data({ scope, count: keys.length, keys });
    if (keys.length === 0) return context.out.line(`no keys in scope '${scope}'`);
    context.out.table(["KEY"], keys.map((k) => [k]));
  }),
  state("create-scope", ["[SCOPE]"], "create a scope", async (context) => {
    const scope = scopeArg(context);
    await (await context.backend()).createScope(scope);
    context.out.data({ scope, status: "created" });
    context.out.line(`created scope ${scope}`);
  }),
  state("delete-scope", ["[SCOPE]"], "delete a scope and all its keys", async (context) => {
    const scope = scopeArg(context);
    await (await context.backend()).deleteScope(scope);
    context.out.data({ scope, status: "deleted" });
    context.out.line(`deleted scope ${scope}`);
  }),
  state("list-scopes", [], "list the scopes", async ({ out, backend }) => {
    const scopes = await (await backend()).listScopes();
    out.data({ count: scopes.length, scopes });
    if (scopes.length === 0) return out.line("no scopes");
    out.table(["SCOPE"], scopes.map((s) => [s]));
  }),
];

/** The exit code of a command that returned normally. */
export function exitOf(result: ExitCode | void): ExitCode {
  return result ?? EXIT.OK;
}
