/**
 * Alarm rules and alarms as data: the zod schemas every edge (state service,
 * MDP service, REST, CLI) reads them with, and the event-bus payload of a
 * transition.
 *
 * @module
 */
import { z } from "zod";

/** The service name the alarms component registers at the broker. */
export const ALARMS_SERVICE = "org.plantd.Alarms";
/** Scope of the rules in the state service: key = rule id, value = rule JSON. */
export const RULES_SCOPE = "org.plantd.Alarms";
/** Scope of the alarms themselves (open ones and history): key = alarm id. */
export const ALARMS_SCOPE = "org.plantd.Alarms.alarms";

export const SEVERITIES = ["info", "warning", "critical"] as const;
export type Severity = (typeof SEVERITIES)[number];

export const RULE_KINDS = ["above", "below", "rate"] as const;

/** Rule ids and alarm ids are path segments and state keys: plain characters only. */
export const RULE_ID = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/;

const ruleShape = {
  device: z.string().min(1).max(1024),
  channel: z.string().min(1).max(1024),
  /**
   * above: value > threshold; below: value < threshold; rate: |Δvalue/Δt| >
   * threshold, in the channel's units per second between consecutive points.
   */
  kind: z.enum(RULE_KINDS),
  threshold: z.number().finite(),
  /** Hysteresis: the alarm clears only once the value is back past threshold by this much. */
  deadband: z.number().finite().min(0).default(0),
  severity: z.enum(SEVERITIES).default("warning"),
  /** Text of the alarm's events; a default names the rule's condition. */
  message: z.string().max(1024).optional(),
  enabled: z.boolean().default(true),
};

const rateNeedsThreshold = {
  check: (rule: { kind: string; threshold: number }) => rule.kind !== "rate" || rule.threshold > 0,
  message: "a rate rule needs a threshold above 0 (units per second)",
};

/** A rule without its id (the REST body of PUT /api/alarms/rules/{id}). */
export const RuleBodySchema = z.strictObject(ruleShape).refine(rateNeedsThreshold.check, {
  message: rateNeedsThreshold.message,
  path: ["threshold"],
});

/** A rule as stored: its id and its body. */
export const RuleSchema = z.strictObject({
  id: z.string().regex(RULE_ID, "rule id: letters, digits, . _ - (up to 128)"),
  ...ruleShape,
}).refine(rateNeedsThreshold.check, { message: rateNeedsThreshold.message, path: ["threshold"] });
export type RuleBody = z.input<typeof RuleBodySchema>;
export type Rule = z.infer<typeof RuleSchema>;

export const ALARM_STATES = ["active", "acknowledged", "cleared"] as const;
export type AlarmState = (typeof ALARM_STATES)[number];

/** One alarm: raised by a rule, maybe acknowledged, cleared when the condition ends. */
export const AlarmSchema = z.object({
  id: z.string(),
  rule: z.string(),
  device: z.string(),
  channel: z.string(),
  kind: z.enum(RULE_KINDS),
  severity: z.enum(SEVERITIES),
  /** active: raised, not acknowledged; acknowledged: raised and acknowledged; cleared: over. */
  state: z.enum(ALARM_STATES),
  message: z.string(),
  /** The value that raised it. */
  value: z.number().nullable(),
  /** The latest value seen while it was raised. */
  last_value: z.number().nullable(),
  raised_at: z.string(),
  acknowledged_at: z.string().optional(),
  acknowledged_by: z.string().optional(),
  cleared_at: z.string().optional(),
  cleared_value: z.number().nullable().optional(),
});
export type Alarm = z.infer<typeof AlarmSchema>;

export const TRANSITIONS = ["raised", "cleared", "acknowledged"] as const;
export type TransitionState = (typeof TRANSITIONS)[number];

/** The event-bus payload of a transition (topic `alarm.<device>.<channel>`). */
export interface AlarmEvent {
  kind: "alarm";
  state: TransitionState;
  severity: Severity;
  device: string;
  channel: string;
  rule: string;
  value: number | null;
  time: string;
  message: string;
  by?: string;
}

/** The event-bus topic of an alarm's events. */
export function alarmTopic(alarm: Pick<Alarm, "device" | "channel">): string {
  return `alarm.${alarm.device}.${alarm.channel}`;
}

/** A rule's default message: its condition in words. */
export function describeRule(rule: Rule): string {
  const where = `${rule.device}/${rule.channel}`;
  if (rule.kind === "rate") return `${where} changes faster than ${rule.threshold}/s`;
  return `${where} ${rule.kind} ${rule.threshold}`;
}
