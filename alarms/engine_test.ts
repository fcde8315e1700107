import assert from "node:assert/strict";
import { AckError, AlarmEngine, eventOf } from "./engine.ts";
import { type Rule, RuleSchema } from "./rules.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const rule = (fields: Record<string, unknown>): Rule =>
  RuleSchema.parse({ id: "r1", device: "boiler", channel: "temp", ...fields });
const point = (value: number, seconds: number, channel = "temp") => ({
  device: "boiler",
  channel,
  value,
  time: T0 + seconds * 1000,
});

Deno.test("threshold above: raises past it, clears only past the deadband", () => {
  const engine = new AlarmEngine();
  engine.setRules([rule({ kind: "above", threshold: 80, deadband: 5, severity: "critical" })], T0);
  assert.deepEqual(engine.evaluate(point(80, 1)), [], "at the threshold is not above it");
  const [raised] = engine.evaluate(point(81, 2));
  assert.equal(raised?.state, "raised");
  assert.equal(raised?.alarm.state, "active");
  assert.deepEqual(engine.evaluate(point(90, 3)), [], "one open alarm per rule");
  assert.deepEqual(engine.evaluate(point(76, 4)), [], "inside the deadband it stays raised");
  const [cleared] = engine.evaluate(point(75, 5));
  assert.equal(cleared?.state, "cleared");
  assert.equal(cleared?.alarm.cleared_value, 75);
  assert.deepEqual(engine.counts(), { active: 0, acknowledged: 0, cleared: 1 });
  const event = eventOf(raised!);
  assert.deepEqual(event, {
    kind: "alarm",
    state: "raised",
    severity: "critical",
    device: "boiler",
    channel: "temp",
    rule: "r1",
    value: 81,
    time: "2026-01-01T00:00:02.000Z",
    message: "boiler/temp above 80",
  });
});

Deno.test("threshold below with hysteresis", () => {
  const engine = new AlarmEngine();
  engine.setRules([rule({ kind: "below", threshold: 10, deadband: 2 })], T0);
  assert.equal(engine.evaluate(point(9, 1))[0]?.state, "raised");
  assert.deepEqual(engine.evaluate(point(11, 2)), []);
  assert.equal(engine.evaluate(point(12, 3))[0]?.state, "cleared");
  assert.deepEqual(engine.evaluate(point(100, 4, "other")), [], "other channels are not watched");
});

Deno.test("rate of change: units per second between consecutive points", () => {
  const engine = new AlarmEngine();
  engine.setRules([rule({ kind: "rate", threshold: 2, deadband: 0.5 })], T0);
  assert.deepEqual(engine.evaluate(point(0, 0)), [], "one point has no rate");
  assert.deepEqual(engine.evaluate(point(4, 2)), [], "2/s is not above 2/s");
  const [raised] = engine.evaluate(point(0, 3));
  assert.equal(raised?.state, "raised", "a fall of 4/s counts as well");
  assert.deepEqual(engine.evaluate(point(1.8, 4)), [], "1.8/s is inside the deadband");
  assert.equal(engine.evaluate(point(3, 5))[0]?.state, "cleared", "1.2/s clears");
  assert.deepEqual(engine.evaluate(point(100, 5)), [], "no time elapsed: no rate");
});

Deno.test("acknowledge: who and when, once; a cleared alarm stays cleared", () => {
  const engine = new AlarmEngine();
  engine.setRules([rule({ kind: "above", threshold: 1 })], T0);
  const [raised] = engine.evaluate(point(5, 1));
  const id = raised!.alarm.id;
  const ack = engine.acknowledge(id, "user:ann", T0 + 2000);
  assert.equal(ack.alarm.state, "acknowledged");
  assert.equal(ack.alarm.acknowledged_by, "user:ann");
  assert.equal(eventOf(ack).by, "user:ann");
  assert.throws(() => engine.acknowledge(id, "user:bob", T0 + 3000), AckError);
  assert.throws(() => engine.acknowledge("nope", "user:bob", T0), AckError);
  assert.deepEqual(engine.list({ state: "open" }).map((a) => a.id), [id]);
  const [cleared] = engine.evaluate(point(0, 4));
  assert.equal(cleared?.alarm.state, "cleared");
  assert.equal(cleared?.alarm.acknowledged_by, "user:ann", "the acknowledgement is kept");
  // Cleared before anyone looked: acknowledging records it without reopening.
  engine.evaluate(point(5, 5));
  const second = engine.list({ state: "active" })[0]!;
  engine.evaluate(point(0, 6));
  assert.equal(engine.acknowledge(second.id, "user:bob", T0 + 7000).alarm.state, "cleared");
});

Deno.test("removing or disabling a rule clears its alarm; restore keeps open ones open", () => {
  const engine = new AlarmEngine();
  engine.setRules([rule({ kind: "above", threshold: 1 })], T0);
  engine.evaluate(point(5, 1));
  const [cleared] = engine.removeRule("r1", T0 + 2000);
  assert.equal(cleared?.state, "cleared");
  assert.match(cleared!.alarm.message, /rule removed/);

  engine.putRule(rule({ kind: "above", threshold: 1 }), T0);
  const [raised] = engine.evaluate(point(5, 3));
  const after = new AlarmEngine();
  after.restore(engine.list());
  after.setRules(engine.rules, T0);
  assert.deepEqual(after.evaluate(point(6, 4)), [], "the restored alarm is still open");
  assert.equal(after.evaluate(point(0, 5))[0]?.alarm.id, raised!.alarm.id);
  const [disabled] = engine.putRule(rule({ kind: "above", threshold: 1, enabled: false }), T0);
  assert.equal(disabled?.state, "cleared");
});

Deno.test("history is pruned to its limit, oldest cleared first", () => {
  const engine = new AlarmEngine(2);
  engine.setRules([rule({ kind: "above", threshold: 1 })], T0);
  for (let i = 0; i < 4; i++) {
    engine.evaluate(point(5, i * 2));
    engine.evaluate(point(0, i * 2 + 1));
  }
  const before = engine.list().map((a) => a.id);
  const gone = engine.prune();
  assert.deepEqual(gone, before.slice(2).reverse());
  assert.equal(engine.list().length, 2);
});

Deno.test("malformed rules are refused with the field named", () => {
  const bad = RuleSchema.safeParse({
    id: "x",
    device: "d",
    channel: "c",
    kind: "rate",
    threshold: 0,
  });
  assert.equal(bad.success, false);
  assert.match(JSON.stringify(bad.error?.issues), /threshold/);
  assert.equal(
    RuleSchema.safeParse({ id: "a/b", device: "d", channel: "c", kind: "above", threshold: 1 })
      .success,
    false,
  );
  assert.equal(
    RuleSchema.safeParse({
      id: "a",
      device: "d",
      channel: "c",
      kind: "above",
      threshold: 1,
      extra: 1,
    }).success,
    false,
  );
});
