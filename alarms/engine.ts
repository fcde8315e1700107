/**
 * Alarm evaluation, pure: rules in, points in, transitions out. No I/O, no
 * clock of its own (every input carries its time), so it is tested alone and
 * the process around it (alarms/service.ts) decides what to persist and
 * publish.
 *
 * Each rule has at most one open (active or acknowledged) alarm. A rule
 * raises when its condition holds and clears once the value is back past
 * the threshold by the rule's deadband (hysteresis), so a value hovering at
 * the threshold does not raise and clear on every point.
 *
 * @module
 */
import {
  type Alarm,
  type AlarmEvent,
  type AlarmState,
  describeRule,
  type Rule,
  type TransitionState,
} from "./rules.ts";

/** One point as the engine needs it. */
export interface EnginePoint {
  device: string;
  channel: string;
  value: number;
  /** Milliseconds since the epoch. */
  time: number;
}

/** A change of an alarm: what to persist (`alarm`) and publish ({@link eventOf}). */
export interface Transition {
  state: TransitionState;
  alarm: Alarm;
  value: number | null;
  /** Milliseconds since the epoch. */
  time: number;
  by?: string;
}

/** Filters of {@link AlarmEngine.list}. */
export interface AlarmFilter {
  /** One state, or "open" (active and acknowledged). */
  state?: AlarmState | "open";
  device?: string;
  channel?: string;
  rule?: string;
  limit?: number;
}

/** Why an acknowledgement was refused. */
export class AckError extends Error {
  constructor(readonly code: "NOT_FOUND" | "CONFLICT", message: string) {
    super(message);
  }
}

const key = (device: string, channel: string) => `${device}\u0000${channel}`;
const iso = (ms: number) => new Date(ms).toISOString();

/** The event-bus payload of a transition. */
export function eventOf(transition: Transition): AlarmEvent {
  const { alarm } = transition;
  return {
    kind: "alarm",
    state: transition.state,
    severity: alarm.severity,
    device: alarm.device,
    channel: alarm.channel,
    rule: alarm.rule,
    value: transition.value,
    time: iso(transition.time),
    message: alarm.message,
    ...(transition.by !== undefined ? { by: transition.by } : {}),
  };
}

/** Rules, the alarms they raised, and what each rate rule last saw. */
export class AlarmEngine {
  #rules = new Map<string, Rule>();
  /** device/channel to the enabled rules watching it: the only lookup per point. */
  #watching = new Map<string, Rule[]>();
  /** Every alarm kept, by id: open ones and the newest cleared ones (history). */
  #alarms = new Map<string, Alarm>();
  /** Rule id to its open alarm. */
  #open = new Map<string, Alarm>();
  /** device/channel to its previous point, for rate rules. */
  #previous = new Map<string, { value: number; time: number }>();
  #historyLimit: number;
  #sequence = 0;

  /** `historyLimit`: cleared alarms kept; older ones are pruned. */
  constructor(historyLimit = 1000) {
    this.#historyLimit = historyLimit;
  }

  get rules(): Rule[] {
    return [...this.#rules.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  rule(id: string): Rule | undefined {
    return this.#rules.get(id);
  }

  /** Alarms read back after a restart: open ones stay open under their rules. */
  restore(alarms: Iterable<Alarm>): void {
    for (const alarm of alarms) {
      this.#alarms.set(alarm.id, alarm);
      if (alarm.state !== "cleared") this.#open.set(alarm.rule, alarm);
    }
  }

  /**
   * Replaces every rule. An open alarm whose rule is gone or disabled clears
   * (its condition no longer exists); one whose rule changed keeps going and
   * is judged by the new rule on the next point.
   */
  setRules(rules: Iterable<Rule>, now: number): Transition[] {
    this.#rules = new Map([...rules].map((rule) => [rule.id, rule]));
    this.#watching.clear();
    for (const rule of this.#rules.values()) {
      if (!rule.enabled) continue;
      const k = key(rule.device, rule.channel);
      const list = this.#watching.get(k);
      if (list) list.push(rule);
      else this.#watching.set(k, [rule]);
    }
    const out: Transition[] = [];
    for (const [ruleId, alarm] of [...this.#open]) {
      const rule = this.#rules.get(ruleId);
      if (rule?.enabled) {
        if (rule.severity !== alarm.severity) {
          this.#replace({ ...alarm, severity: rule.severity });
        }
        continue;
      }
      out.push(this.#clear(alarm, null, now, rule ? "rule disabled" : "rule removed"));
    }
    return out;
  }

  /** One rule set or replaced (the others kept). */
  putRule(rule: Rule, now: number): Transition[] {
    return this.setRules(
      [...this.#rules.values()].filter((r) => r.id !== rule.id).concat(rule),
      now,
    );
  }

  /** One rule removed; its open alarm clears. */
  removeRule(id: string, now: number): Transition[] {
    return this.setRules([...this.#rules.values()].filter((r) => r.id !== id), now);
  }

  /** Judges one point against the rules watching its device and channel. */
  evaluate(point: EnginePoint): Transition[] {
    const k = key(point.device, point.channel);
    const rules = this.#watching.get(k);
    const previous = this.#previous.get(k);
    if (!rules) return [];
    let out: Transition[] | undefined;
    let hasRate = false;
    for (const rule of rules) {
      let measured: number;
      if (rule.kind === "rate") {
        hasRate = true;
        if (!previous || point.time <= previous.time) continue;
        measured = Math.abs((point.value - previous.value) / ((point.time - previous.time) / 1000));
      } else {
        measured = point.value;
      }
      const open = this.#open.get(rule.id);
      if (open === undefined) {
        if (!breaches(rule, measured)) continue;
        (out ??= []).push(this.#raise(rule, point));
      } else if (recovered(rule, measured)) {
        (out ??= []).push(this.#clear(open, point.value, point.time));
      } else if (open.last_value !== point.value) {
        this.#replace({ ...open, last_value: point.value });
      }
    }
    if (hasRate) this.#previous.set(k, { value: point.value, time: point.time });
    return out ?? [];
  }

  /** Acknowledges an alarm for `by`; acknowledging twice is a conflict. */
  acknowledge(id: string, by: string, now: number): Transition {
    const alarm = this.#alarms.get(id);
    if (!alarm) throw new AckError("NOT_FOUND", `No alarm '${id}'`);
    if (alarm.acknowledged_at !== undefined) {
      throw new AckError(
        "CONFLICT",
        `Alarm '${id}' was acknowledged by ${alarm.acknowledged_by} at ${alarm.acknowledged_at}`,
      );
    }
    const acked: Alarm = {
      ...alarm,
      // A cleared alarm stays cleared: acknowledging it only records who saw it.
      state: alarm.state === "cleared" ? "cleared" : "acknowledged",
      acknowledged_at: iso(now),
      acknowledged_by: by,
    };
    this.#replace(acked);
    return { state: "acknowledged", alarm: acked, value: alarm.last_value, time: now, by };
  }

  get(id: string): Alarm | undefined {
    return this.#alarms.get(id);
  }

  /** Alarms, newest raised first. */
  list(filter: AlarmFilter = {}): Alarm[] {
    const out: Alarm[] = [];
    for (const alarm of this.#alarms.values()) {
      if (
        filter.state === "open" ? alarm.state === "cleared" : (
          filter.state !== undefined && alarm.state !== filter.state
        )
      ) continue;
      if (filter.device !== undefined && alarm.device !== filter.device) continue;
      if (filter.channel !== undefined && alarm.channel !== filter.channel) continue;
      if (filter.rule !== undefined && alarm.rule !== filter.rule) continue;
      out.push(alarm);
    }
    out.sort((a, b) => b.raised_at.localeCompare(a.raised_at) || b.id.localeCompare(a.id));
    return filter.limit !== undefined ? out.slice(0, filter.limit) : out;
  }

  /** Counts by state, for the health check and /metrics. */
  counts(): Record<AlarmState, number> {
    const counts = { active: 0, acknowledged: 0, cleared: 0 };
    for (const alarm of this.#alarms.values()) counts[alarm.state]++;
    return counts;
  }

  /** Drops the oldest cleared alarms beyond the history limit; returns their ids. */
  prune(): string[] {
    const cleared = [...this.#alarms.values()].filter((a) => a.state === "cleared");
    if (cleared.length <= this.#historyLimit) return [];
    cleared.sort((a, b) => (a.cleared_at ?? "").localeCompare(b.cleared_at ?? ""));
    const gone = cleared.slice(0, cleared.length - this.#historyLimit).map((a) => a.id);
    for (const id of gone) this.#alarms.delete(id);
    return gone;
  }

  #raise(rule: Rule, point: EnginePoint): Transition {
    // Unique within a process and across restarts: the raise time, then a counter.
    const id = `${rule.id}.${point.time.toString(36)}${(this.#sequence++ % 1296).toString(36)}`;
    const alarm: Alarm = {
      id,
      rule: rule.id,
      device: rule.device,
      channel: rule.channel,
      kind: rule.kind,
      severity: rule.severity,
      state: "active",
      message: rule.message ?? describeRule(rule),
      value: point.value,
      last_value: point.value,
      raised_at: iso(point.time),
    };
    this.#alarms.set(id, alarm);
    this.#open.set(rule.id, alarm);
    return { state: "raised", alarm, value: point.value, time: point.time };
  }

  #clear(alarm: Alarm, value: number | null, time: number, why?: string): Transition {
    const cleared: Alarm = {
      ...alarm,
      state: "cleared",
      cleared_at: iso(time),
      cleared_value: value,
      ...(why ? { message: `${alarm.message} (${why})` } : {}),
    };
    this.#open.delete(alarm.rule);
    this.#alarms.set(alarm.id, cleared);
    return { state: "cleared", alarm: cleared, value, time };
  }

  #replace(alarm: Alarm): void {
    this.#alarms.set(alarm.id, alarm);
    if (alarm.state !== "cleared" && this.#open.get(alarm.rule)?.id === alarm.id) {
      this.#open.set(alarm.rule, alarm);
    }
  }
}

/** Whether a measurement raises the rule. */
function breaches(rule: Rule, measured: number): boolean {
  if (rule.kind === "below") return measured < rule.threshold;
  return measured > rule.threshold;
}

/** Whether a measurement clears the rule's open alarm: past the threshold by the deadband. */
function recovered(rule: Rule, measured: number): boolean {
  if (rule.kind === "below") return measured >= rule.threshold + rule.deadband;
  return measured <= rule.threshold - rule.deadband;
}
