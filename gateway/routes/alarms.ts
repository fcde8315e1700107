/**
 * `/api/alarms`: the alarms of `org.plantd.Alarms` (alarms/service.ts,
 * docs/alarms.md) and their rules. Reading asks `alarms:read`,
 * acknowledging `alarms:ack` (audited: who and when), changing rules
 * `alarms:write` (audited). The service is told who acknowledges as the
 * caller's principal id, never with the caller's credential.
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { PERMISSIONS } from "../../auth/permissions.ts";
import type { Call, ServiceDirectory } from "../../mdp/directory.ts";
import {
  ALARM_STATES,
  ALARMS_SERVICE,
  RULE_ID,
  RULE_KINDS,
  RuleBodySchema,
  SEVERITIES,
} from "../../alarms/rules.ts";
import type { Guard } from "../auth/guard.ts";
import { authorize } from "../auth/http.ts";
import { ApiError, type ApiErrorCode } from "../errors.ts";
import { errorResponses, jsonResponse } from "./schemas.ts";

const AlarmSchema = z.object({
  id: z.string(),
  rule: z.string(),
  device: z.string(),
  channel: z.string(),
  kind: z.enum(RULE_KINDS),
  severity: z.enum(SEVERITIES),
  state: z.enum(ALARM_STATES).openapi({
    description: "active: raised; acknowledged: raised and acknowledged; cleared: over",
  }),
  message: z.string(),
  value: z.number().nullable().openapi({ description: "The value that raised it" }),
  last_value: z.number().nullable(),
  raised_at: z.string(),
  acknowledged_at: z.string().optional(),
  acknowledged_by: z.string().optional(),
  cleared_at: z.string().optional(),
  cleared_value: z.number().nullable().optional(),
}).openapi("Alarm");

const CountsSchema = z.object({
  active: z.number().int(),
  acknowledged: z.number().int(),
  cleared: z.number().int(),
});
const ListSchema = z.object({
  count: z.number().int(),
  alarms: z.array(AlarmSchema),
  counts: CountsSchema,
});

const RuleBody = RuleBodySchema;
const RuleSchema = z.object({
  id: z.string(),
  device: z.string(),
  channel: z.string(),
  kind: z.enum(RULE_KINDS),
  threshold: z.number(),
  deadband: z.number(),
  severity: z.enum(SEVERITIES),
  message: z.string().optional(),
  enabled: z.boolean(),
}).openapi("AlarmRule");
const RulesSchema = z.object({
  rules: z.array(RuleSchema),
  invalid: z.number().int().openapi({
    description: "Keys of the rules scope that are not valid rules (skipped by the service)",
  }),
});

const alarmId = z.string().regex(/^[A-Za-z0-9_.-]{1,256}$/, "alarm id: letters, digits, . _ -")
  .openapi({ param: { name: "id", in: "path" } });
const ruleId = z.string().regex(RULE_ID, "rule id: letters, digits, . _ - (up to 128)")
  .openapi({ param: { name: "id", in: "path" } });

const listAlarms = createRoute({
  method: "get",
  path: "/api/alarms",
  summary: "Alarms, newest raised first (alarms:read)",
  request: {
    query: z.object({
      state: z.enum([...ALARM_STATES, "open"]).optional().openapi({
        description: "One state, or open (active and acknowledged)",
      }),
      device: z.string().min(1).max(1024).optional(),
      channel: z.string().min(1).max(1024).optional(),
      rule: z.string().min(1).max(128).optional(),
      limit: z.coerce.number().int().min(1).max(10_000).optional(),
    }),
  },
  responses: {
    200: jsonResponse(ListSchema, "Alarms matching the filters, and counts per state of all"),
    ...errorResponses(400, 503, 504),
  },
});

const ackAlarm = createRoute({
  method: "post",
  path: "/api/alarms/{id}/ack",
  summary: "Acknowledge an alarm as the caller (alarms:ack; audited)",
  request: {
    params: z.object({ id: alarmId }),
    body: {
      content: {
        "application/json": {
          schema: z.strictObject({ comment: z.string().max(1024).optional() }),
        },
      },
      required: true,
    },
  },
  responses: {
    200: jsonResponse(AlarmSchema, "The acknowledged alarm"),
    ...errorResponses(400, 404, 409, 415, 503, 504),
  },
});

const listRules = createRoute({
  method: "get",
  path: "/api/alarms/rules",
  summary: "Alarm rules (alarms:read)",
  responses: {
    200: jsonResponse(RulesSchema, "Every valid rule"),
    ...errorResponses(503, 504),
  },
});

const putRule = createRoute({
  method: "put",
  path: "/api/alarms/rules/{id}",
  summary: "Create or replace an alarm rule (alarms:write; audited)",
  request: {
    params: z.object({ id: ruleId }),
    body: { content: { "application/json": { schema: RuleBody } }, required: true },
  },
  responses: {
    200: jsonResponse(RuleSchema, "The rule as stored, defaults filled in"),
    ...errorResponses(400, 415, 503, 504),
  },
});

const deleteRule = createRoute({
  method: "delete",
  path: "/api/alarms/rules/{id}",
  summary: "Delete an alarm rule; its open alarm clears (alarms:write; audited)",
  request: { params: z.object({ id: ruleId }) },
  responses: {
    200: jsonResponse(z.object({ id: z.string(), deleted: z.boolean() }), "Deleted"),
    ...errorResponses(400, 404, 503, 504),
  },
});

const CODES: Record<string, ApiErrorCode> = {
  BAD_REQUEST: "BAD_REQUEST",
  NOT_FOUND: "NOT_FOUND",
  CONFLICT: "CONFLICT",
  SERVICE_UNAVAILABLE: "SERVICE_UNAVAILABLE",
};

/** Adds the alarm routes to `app`. */
export function alarmsRoutes(
  app: OpenAPIHono,
  call: Call,
  directory: Pick<ServiceDirectory, "require">,
  guard: Guard,
): void {
  /** Asks the alarms service; its `data` as `schema` reads it, or its failure as an ApiError. */
  async function operation<T extends z.ZodType>(
    name: string,
    params: Record<string, unknown>,
    schema: T,
  ): Promise<z.infer<T>> {
    await directory.require(ALARMS_SERVICE);
    const [frame] = await call(ALARMS_SERVICE, [name, JSON.stringify(params)]);
    let reply: { success?: unknown; data?: unknown; error?: unknown; code?: unknown };
    try {
      reply = JSON.parse(new TextDecoder().decode(frame));
    } catch {
      throw new ApiError("UPSTREAM_ERROR", `The alarms service's ${name} reply is not JSON`);
    }
    if (reply.success === true) {
      const data = schema.safeParse(reply.data);
      if (data.success) return data.data;
      throw new ApiError(
        "UPSTREAM_ERROR",
        `The alarms service's ${name} reply has an unexpected shape`,
      );
    }
    throw new ApiError(
      CODES[String(reply.code)] ?? "UPSTREAM_ERROR",
      String(reply.error ?? `${name} failed`),
    );
  }

  const audit = (c: Context, action: string, target: string, details?: Record<string, unknown>) =>
    guard.audit({
      time: Date.now(),
      actor: c.get("principal").id,
      action,
      target,
      outcome: "success",
      ip: c.get("clientIp"),
      ...(details ? { details } : {}),
    });

  app.openapi(listAlarms, async (c) => {
    authorize(c, guard, PERMISSIONS.alarmsRead);
    return c.json(await operation("list", c.req.valid("query"), ListSchema), 200);
  });
  app.openapi(ackAlarm, async (c) => {
    authorize(c, guard, PERMISSIONS.alarmsAck);
    const { id } = c.req.valid("param");
    const { comment } = c.req.valid("json");
    const by = c.get("principal").id;
    const alarm = await operation("ack", { id, by }, AlarmSchema);
    audit(c, "alarm.ack", `alarm:${id}`, {
      rule: alarm.rule,
      device: alarm.device,
      channel: alarm.channel,
      severity: alarm.severity,
      acknowledged_at: alarm.acknowledged_at,
      ...(comment ? { comment } : {}),
    });
    return c.json(alarm, 200);
  });
  app.openapi(listRules, async (c) => {
    authorize(c, guard, PERMISSIONS.alarmsRead);
    return c.json(await operation("rules", {}, RulesSchema), 200);
  });
  app.openapi(putRule, async (c) => {
    authorize(c, guard, PERMISSIONS.alarmsWrite);
    const { id } = c.req.valid("param");
    const rule = await operation("rule-set", { rule: { ...c.req.valid("json"), id } }, RuleSchema);
    audit(c, "alarm.rule.set", `alarm-rule:${id}`, { rule });
    return c.json(rule, 200);
  });
  app.openapi(deleteRule, async (c) => {
    authorize(c, guard, PERMISSIONS.alarmsWrite);
    const { id } = c.req.valid("param");
    const deleted = await operation(
      "rule-delete",
      { id },
      z.object({ id: z.string(), deleted: z.boolean() }),
    );
    audit(c, "alarm.rule.delete", `alarm-rule:${id}`);
    return c.json(deleted, 200);
  });
}
