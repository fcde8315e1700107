/**
 * The alarms process's core: reads points off the metric bus, runs them
 * through the {@link AlarmEngine}, publishes each transition on the event
 * bus and keeps rules and alarms in the state service; answers
 * `org.plantd.Alarms` requests (list, ack, rules) as a Majordomo handler.
 *
 * Rules live in state scope `org.plantd.Alarms` (key = rule id) and are read
 * again every `reloadMs`, so a rule edited through /api/state directly is
 * picked up too; edits through this service apply at once. Polling rather
 * than the state bus: change events are signed with a key only gateways and
 * the state service hold, and a reload costs two state reads.
 *
 * Alarms (open ones and the cleared history) live in scope
 * `org.plantd.Alarms.alarms`, written after each transition, read back at
 * start, so a restart keeps open alarms open and acknowledgements recorded.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { z } from "zod";
import type { BusMessage } from "../bus/envelope.ts";
import { SocketClosedError } from "../transport/closed.ts";
import type { Body } from "../mdp/client.ts";
import { cachedText, frame } from "../mdp/protocol.ts";
import type { Frames } from "../transport/frames.ts";
import { parsePoint, type RejectReason } from "../metrics/point.ts";
import { ServiceCallError } from "../mdp/errors.ts";
import type { StateClient } from "../state/client.ts";
import { logLimiter } from "../telemetry/log_window.ts";
import { AckError, type AlarmEngine, eventOf, type Transition } from "./engine.ts";
import {
  type Alarm,
  ALARM_STATES,
  ALARMS_SCOPE,
  AlarmSchema,
  alarmTopic,
  type Rule,
  RULE_ID,
  RULES_SCOPE,
  RuleSchema,
} from "./rules.ts";

/** Where points come from (a bus Subscriber). */
export interface PointSource {
  /** Rejects with SocketClosedError once closed. */
  receiveBatch(max?: number): Promise<BusMessage[]>;
  close(): Promise<void>;
}

/** Where transitions go (a bus Publisher in two-frame form). */
export interface EventSink {
  publish(topic: string, payload: string, form?: "frames"): void;
}

/** Counts of what the service did, for /metrics and the benchmark. */
export interface AlarmStats {
  points: number;
  rejected: Partial<Record<RejectReason, number>>;
  transitions: { raised: number; cleared: number; acknowledged: number };
  invalidRules: number;
  badRequests: number;
  persistFailures: number;
  /** Time the latest batch of points took from read to evaluated (ms). */
  lastBatchLagMs: number;
}

export interface AlarmServiceOptions {
  source: PointSource;
  events: EventSink;
  state: StateClient;
  engine: AlarmEngine;
  log: Logger;
  /** How often rules are read again (and failed alarm writes retried). */
  reloadMs: number;
  /** Called after each batch of points, for benchmarks and tests. */
  onBatch?: (points: number) => void;
}

const ListRequest = z.strictObject({
  state: z.enum([...ALARM_STATES, "open"]).optional(),
  device: z.string().min(1).max(1024).optional(),
  channel: z.string().min(1).max(1024).optional(),
  rule: z.string().min(1).max(128).optional(),
  limit: z.number().int().min(1).max(10_000).optional(),
});
const AckRequest = z.strictObject({
  id: z.string().min(1).max(256),
  /** Who acknowledges: the gateway's authenticated principal, or the CLI's user. */
  by: z.string().min(1).max(256),
  comment: z.string().max(1024).optional(),
});
const RuleIdRequest = z.strictObject({ id: z.string().regex(RULE_ID) });
const RuleSetRequest = z.strictObject({ rule: z.unknown() });

/** A refused request: its code is the REST status's reason. */
class RequestError extends Error {
  constructor(
    readonly code: "BAD_REQUEST" | "NOT_FOUND" | "CONFLICT" | "SERVICE_UNAVAILABLE",
    message: string,
  ) {
    super(message);
  }
}

const issues = (error: z.ZodError) =>
  error.issues.map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`).join("; ");

/** The running service. */
export class AlarmService {
  readonly stats: AlarmStats = {
    points: 0,
    rejected: {},
    transitions: { raised: 0, cleared: 0, acknowledged: 0 },
    invalidRules: 0,
    badRequests: 0,
    persistFailures: 0,
    lastBatchLagMs: 0,
  };
  #o: AlarmServiceOptions;
  #engine: AlarmEngine;
  /** Alarms to write, by id (the newest version wins); deletions are null. */
  #dirty = new Map<string, Alarm | null>();
  #writing: Promise<void> = Promise.resolve();
  #closed = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #loop: Promise<void> | undefined;
  /** Bumped by every local rule change: a reload that started before one is stale. */
  #ruleGeneration = 0;
  #ready = false;
  #stateError: string | undefined;
  #ticking = false;
  #limited = logLimiter(10_000);

  constructor(options: AlarmServiceOptions) {
    this.#o = options;
    this.#engine = options.engine;
  }

  /** Whether rules and alarms were read from the state service. */
  get ready(): boolean {
    return this.#ready;
  }

  /** Why the last read of the state service failed; undefined once one succeeds. */
  get stateError(): string | undefined {
    return this.#stateError;
  }

  get engine(): AlarmEngine {
    return this.#engine;
  }

  /** Starts reading points; rules and alarms load in the background until the state service answers. */
  start(): void {
    this.#loop = this.#run();
    this.#timer = setInterval(() => {
      void this.#tick();
    }, this.#o.reloadMs);
    void this.#tick();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#o.source.close();
    await this.#loop;
    await this.#writing;
  }

  /** Loads state once (scopes, alarms), then reloads rules and retries failed writes. */
  async #tick(): Promise<void> {
    // A slow state service must not pile reloads up behind each other.
    if (this.#ticking) return;
    this.#ticking = true;
    try {
      if (!this.#ready) {
        await this.#ensureScope(RULES_SCOPE);
        await this.#ensureScope(ALARMS_SCOPE);
        this.#engine.restore(await this.#readAlarms());
        this.#ready = true;
        this.#o.log.info("alarms loaded: {counts}", { counts: this.#engine.counts() });
      }
      await this.reloadRules();
      this.#stateError = undefined;
      this.#persist();
    } catch (error) {
      const message = String((error as Error).message ?? error);
      // Refused, not unreachable: retrying will not help until it is configured.
      const refused = error instanceof ServiceCallError &&
        (error.code === "UNAUTHENTICATED" || error.code === "FORBIDDEN");
      this.#stateError = refused
        ? `state service refused the request: ${message} (set jwt_secret or jwt_private_key, PLANTD_ALARMS_JWT_SECRET, the same as the gateway's)`
        : message;
      this.#limited(
        "tick",
        (suppressed) => {
          const fields = { error: this.#stateError, suppressed_since_last: suppressed };
          const text = "cannot read rules from the state service: {error}; retrying";
          if (refused) this.#o.log.error(text, fields);
          else this.#o.log.warn(text, fields);
        },
      );
    } finally {
      this.#ticking = false;
    }
  }

  async #ensureScope(scope: string): Promise<void> {
    try {
      await this.#o.state.createScope(scope);
    } catch (error) {
      if (!(error instanceof ServiceCallError && error.code === "SCOPE_EXISTS")) throw error;
    }
  }

  async #readAlarms(): Promise<Alarm[]> {
    const keys = await this.#o.state.listKeys(ALARMS_SCOPE);
    if (keys.length === 0) return [];
    const entries = await this.#o.state.getMany(ALARMS_SCOPE, keys);
    const out: Alarm[] = [];
    for (const [key, entry] of Object.entries(entries)) {
      if (!entry) continue;
      const parsed = AlarmSchema.safeParse(safeJson(entry.value));
      if (parsed.success && parsed.data.id === key) out.push(parsed.data);
      else this.#o.log.warn("skipping a stored alarm that does not parse: {key}", { key });
    }
    return out;
  }

  /** Reads every rule from the state service; malformed ones are skipped, logged and counted. */
  async reloadRules(): Promise<void> {
    const generation = this.#ruleGeneration;
    const keys = await this.#o.state.listKeys(RULES_SCOPE);
    const entries = keys.length > 0 ? await this.#o.state.getMany(RULES_SCOPE, keys) : {};
    const rules: Rule[] = [];
    let invalid = 0;
    for (const [key, entry] of Object.entries(entries)) {
      if (!entry) continue;
      const json = safeJson(entry.value);
      const parsed = RuleSchema.safeParse(
        json && typeof json === "object" ? { ...json, id: key } : json,
      );
      if (parsed.success) {
        rules.push(parsed.data);
        continue;
      }
      invalid++;
      this.#limited(
        `rule:${key}`,
        (suppressed) =>
          this.#o.log.warn("rule {key} in scope {scope} is not a valid rule: {error}", {
            key,
            scope: RULES_SCOPE,
            error: parsed.success ? "" : issues(parsed.error),
            suppressed_since_last: suppressed,
          }),
      );
    }
    this.stats.invalidRules = invalid;
    if (generation !== this.#ruleGeneration || this.#closed) return;
    this.#apply(this.#engine.setRules(rules, Date.now()));
  }

  async #run(): Promise<void> {
    const now = Date.now;
    while (!this.#closed) {
      let batch: BusMessage[];
      try {
        batch = await this.#o.source.receiveBatch(4096);
      } catch (error) {
        if (error instanceof SocketClosedError) return;
        throw error;
      }
      const received = now();
      for (const message of batch) {
        const result = parsePoint(message.payload, received);
        if (!result.ok) {
          this.stats.rejected[result.reason] = (this.stats.rejected[result.reason] ?? 0) + 1;
          this.#limited(
            `point:${result.reason}`,
            (suppressed) =>
              this.#o.log.warn("rejected a point: {reason}", {
                reason: result.reason,
                detail: result.detail,
                topic: message.topic,
                suppressed_since_last: suppressed,
              }),
          );
          continue;
        }
        this.stats.points++;
        const transitions = this.#engine.evaluate(result.point);
        if (transitions.length > 0) this.#apply(transitions);
      }
      this.stats.lastBatchLagMs = now() - received;
      this.#o.onBatch?.(batch.length);
    }
  }

  /** Publishes transitions and queues their alarms for the state service. */
  #apply(transitions: Transition[]): void {
    for (const transition of transitions) {
      this.stats.transitions[transition.state]++;
      const event = eventOf(transition);
      this.#o.events.publish(alarmTopic(transition.alarm), JSON.stringify(event), "frames");
      this.#dirty.set(transition.alarm.id, transition.alarm);
      this.#o.log.info("alarm {state} {device}/{channel} ({severity}): {message}", { ...event });
    }
    for (const id of this.#engine.prune()) this.#dirty.set(id, null);
    this.#persist();
  }

  /** Writes what changed, one write at a time, in order; a failure is retried on the next tick. */
  #persist(): void {
    if (this.#dirty.size === 0) return;
    this.#writing = this.#writing.then(async () => {
      if (this.#dirty.size === 0) return;
      const batch = new Map(this.#dirty);
      this.#dirty.clear();
      const sets: Record<string, string> = {};
      const deletes: string[] = [];
      for (const [id, alarm] of batch) {
        if (alarm) sets[id] = JSON.stringify(alarm);
        else deletes.push(id);
      }
      try {
        if (Object.keys(sets).length > 0) await this.#o.state.setMany(ALARMS_SCOPE, sets);
        for (const id of deletes) await this.#o.state.delete(ALARMS_SCOPE, id);
      } catch (error) {
        this.stats.persistFailures++;
        // Newer versions queued meanwhile win over the ones that failed.
        for (const [id, alarm] of batch) if (!this.#dirty.has(id)) this.#dirty.set(id, alarm);
        this.#limited(
          "persist",
          (suppressed) =>
            this.#o.log.warn("cannot store alarms in the state service: {error}; retrying", {
              error: String((error as Error).message ?? error),
              pending: this.#dirty.size,
              suppressed_since_last: suppressed,
            }),
        );
      }
    });
  }

  /** Waits until every alarm change so far is written (or failed), for tests. */
  flushed(): Promise<void> {
    return this.#writing;
  }

  /** The `org.plantd.Alarms` Majordomo handler: `[operation, json]` in, `{success,…}` out. */
  handler = async (body: Frames): Promise<Body> => {
    const operation = body[0] ? cachedText(body[0]) : "";
    try {
      let request: unknown = {};
      if (body[1] && body[1].length > 0) {
        request = safeJson(cachedText(body[1]));
        if (request === undefined) throw new RequestError("BAD_REQUEST", "request is not JSON");
      }
      const data = await this.#operate(operation, request);
      return [frame(JSON.stringify({ success: true, data }))];
    } catch (error) {
      if (error instanceof RequestError || error instanceof AckError) {
        if (error.code === "BAD_REQUEST") this.stats.badRequests++;
        return [
          frame(JSON.stringify({ success: false, code: error.code, error: error.message })),
        ];
      }
      const message = String((error as Error).message ?? error);
      return [frame(JSON.stringify({ success: false, code: "UPSTREAM_ERROR", error: message }))];
    }
  };

  async #operate(operation: string, request: unknown): Promise<unknown> {
    const parse = <T extends z.ZodType>(schema: T): z.infer<T> => {
      const parsed = schema.safeParse(request);
      if (!parsed.success) throw new RequestError("BAD_REQUEST", issues(parsed.error));
      return parsed.data;
    };
    switch (operation) {
      case "list": {
        const filter = parse(ListRequest);
        const alarms = this.#engine.list(filter);
        return { count: alarms.length, alarms, counts: this.#engine.counts() };
      }
      case "ack": {
        const { id, by } = parse(AckRequest);
        const transition = this.#engine.acknowledge(id, by, Date.now());
        this.#apply([transition]);
        return transition.alarm;
      }
      case "rules":
        return { rules: this.#engine.rules, invalid: this.stats.invalidRules };
      case "rule-set": {
        const { rule: raw } = parse(RuleSetRequest);
        const parsed = RuleSchema.safeParse(raw);
        if (!parsed.success) throw new RequestError("BAD_REQUEST", issues(parsed.error));
        const { id, ...stored } = parsed.data;
        this.#ruleGeneration++;
        await this.#o.state.set(RULES_SCOPE, id, JSON.stringify(stored));
        // A reload that read the scope while the write was under way is stale too.
        this.#ruleGeneration++;
        this.#apply(this.#engine.putRule(parsed.data, Date.now()));
        return parsed.data;
      }
      case "rule-delete": {
        const { id } = parse(RuleIdRequest);
        this.#ruleGeneration++;
        const { existed } = await this.#o.state.delete(RULES_SCOPE, id);
        this.#ruleGeneration++;
        const known = this.#engine.rule(id) !== undefined;
        if (!known && existed === false) throw new RequestError("NOT_FOUND", `No rule '${id}'`);
        this.#apply(this.#engine.removeRule(id, Date.now()));
        return { id, deleted: true };
      }
      case "status":
        return { ready: this.#ready, counts: this.#engine.counts(), stats: this.stats };
      default:
        throw new RequestError(
          "BAD_REQUEST",
          `Invalid operation '${
            operation.slice(0, 64)
          }' (list, ack, rules, rule-set, rule-delete, status)`,
        );
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
