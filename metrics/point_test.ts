import assert from "node:assert/strict";
import { parseDuration } from "./duration.ts";
import { fastPoint } from "./fast_point.ts";
import { parsePoint, parseRfc3339, parseRfc3339Bytes } from "./point.ts";
import { prng } from "../tests/_helpers.ts";

const NOW = Date.UTC(2024, 0, 2);

Deno.test("parsePoint() reads Go plantd's logger payload", () => {
  const result = parsePoint(
    '{"time":"2024-01-01T00:00:00.123456789Z","device":"d","channel":"c","value":1.5}',
    NOW,
  );
  assert.deepEqual(result, {
    ok: true,
    point: {
      time: Date.UTC(2024, 0, 1, 0, 0, 0, 123),
      device: "d",
      channel: "c",
      value: 1.5,
      tags: null,
    },
  });
});

Deno.test("parsePoint() maps the seed's service_name/metric_name to device/channel with tags", () => {
  const result = parsePoint(
    new TextEncoder().encode(
      '{"timestamp":"2024-01-01T01:00:00+01:00","service_name":"org.plantd.State","metric_name":"ops","value":-3,"tags":{"host":"a"}}',
    ),
    NOW,
  );
  assert.deepEqual(result, {
    ok: true,
    point: {
      time: Date.UTC(2024, 0, 1),
      device: "org.plantd.State",
      channel: "ops",
      value: -3,
      tags: '{"host":"a"}',
    },
  });
});

Deno.test("parsePoint() takes the reception time when the point has none", () => {
  const result = parsePoint('{"device":"d","channel":"c","value":0}', NOW);
  assert.ok(result.ok);
  assert.equal(result.point.time, NOW);
});

Deno.test("parsePoint() rejects malformed points with a reason", () => {
  const cases: Array<[string, string]> = [
    ["not json", "not_json"],
    ["[1,2]", "not_object"],
    ["42", "not_object"],
    ['{"channel":"c","value":1}', "device"],
    ['{"device":"","channel":"c","value":1}', "device"],
    ['{"device":"d\\u0000","channel":"c","value":1}', "device"],
    ['{"device":"d","value":1}', "channel"],
    ['{"service_name":"s","value":1}', "channel"],
    ['{"device":"d","channel":"c"}', "value"],
    ['{"device":"d","channel":"c","value":"1.5"}', "value"],
    ['{"device":"d","channel":"c","value":null}', "value"],
    ['{"device":"d","channel":"c","value":1,"time":"yesterday"}', "time"],
    ['{"device":"d","channel":"c","value":1,"time":1704067200}', "time"],
    ['{"device":"d","channel":"c","value":1,"time":"2024-02-30T00:00:00Z"}', "time"],
    ['{"device":"d","channel":"c","value":1,"tags":[1]}', "tags"],
    ['{"device":"d","channel":"c","value":1,"tags":"x"}', "tags"],
    ['{"device":"d","channel":"c","value":1,"tags":{"a":"\\u0000"}}', "tags"],
    [`{"device":"${"x".repeat(70_000)}","channel":"c","value":1}`, "too_large"],
  ];
  for (const [payload, reason] of cases) {
    const result = parsePoint(payload, NOW);
    assert.equal(result.ok, false, payload.slice(0, 80));
    if (!result.ok) assert.equal(result.reason, reason, payload.slice(0, 80));
  }
});

Deno.test("parseRfc3339() accepts RFC 3339 and nothing looser", () => {
  assert.equal(parseRfc3339("2024-01-01T00:00:00Z"), Date.UTC(2024, 0, 1));
  assert.equal(parseRfc3339("2024-01-01t00:00:00.5z"), Date.UTC(2024, 0, 1, 0, 0, 0, 500));
  assert.equal(parseRfc3339("2024-01-01 02:00:00+02:00"), Date.UTC(2024, 0, 1));
  assert.equal(parseRfc3339("2024-02-29T00:00:00Z"), Date.UTC(2024, 1, 29));
  // The same date and time with different endings (the parser remembers the last prefix).
  assert.equal(parseRfc3339("2024-02-29T00:00:00+01:30"), Date.UTC(2024, 1, 28, 22, 30));
  assert.equal(parseRfc3339("2024-02-29T00:00:00-00:30"), Date.UTC(2024, 1, 29, 0, 30));
  assert.equal(parseRfc3339("2024-02-29T00:00:00.123456789Z"), Date.UTC(2024, 1, 29, 0, 0, 0, 123));
  assert.equal(parseRfc3339("0099-12-31T23:59:59Z"), new Date("0099-12-31T23:59:59Z").getTime());
  for (
    const bad of [
      "2024-01-01",
      "2024-01-01T00:00Z",
      "2023-02-29T00:00:00Z",
      "2024-01-01T24:00:00Z",
      "now",
    ]
  ) {
    assert.ok(Number.isNaN(parseRfc3339(bad)), bad);
  }
});

Deno.test("parseDuration() reads integer durations with a unit", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("10s"), 10_000);
  assert.equal(parseDuration("1m"), 60_000);
  assert.equal(parseDuration("2h"), 7_200_000);
  assert.equal(parseDuration("1d"), 86_400_000);
  assert.equal(parseDuration("1w"), 604_800_000);
  for (const bad of ["", "0s", "10", "1.5s", "-1s", "1y", "1M", "s", "01s"]) {
    assert.equal(parseDuration(bad), undefined, bad);
  }
});

Deno.test("parsePoint() reads bytes (fast path) exactly as text (general path)", () => {
  const random = prng(6);
  // Mostly the first (usual) entries of a list, sometimes any.
  const pick = <T>(list: readonly T[]): T =>
    list[Math.floor(random() * (random() < 0.7 ? Math.min(3, list.length) : list.length))]!;
  const strings = [
    '"d"',
    '"press-1"',
    '"Ünïcødé ✓"',
    '""',
    '"a\\"b"',
    '"tab\\there"',
    '"x y"',
    '"\\u0064"',
    `"${"x".repeat(1025)}"`,
    "12",
    "null",
    "true",
    '["a"]',
    '{"a":1}',
  ];
  const numbers = [
    "1.5",
    "-1",
    "0",
    "-0",
    "1",
    "-0.125",
    "0.1",
    "123456789012345",
    "1234567890123456",
    "9007199254740993",
    "3.141592653589793",
    "1e3",
    "1E-2",
    "01",
    "1.",
    ".5",
    "-",
    "1.0",
    "0.30000000000000004",
    "99999.99999",
    '"7"',
    "null",
  ];
  const times = [
    '"2024-01-01T00:00:00Z"',
    '"2024-01-01T00:00:00.123456Z"',
    '"2024-06-30T23:59:59.9+02:00"',
    '"2024-06-30t23:59:59z"',
    '"2024-06-31T00:00:00Z"',
    '"2024-01-01T00:00:00"',
    '"2024-01-01 00:00:00-05:30"',
    "1704067200",
    "null",
    '"soon"',
  ];
  const tags = [
    '{"host":"a"}',
    "{}",
    '{"n":1.50,"deep":{"x":[1,2]}}',
    '{"s":"a\\"}"}',
    "[1]",
    "null",
    '"t"',
  ];
  const space = () => pick(["", "", "", " ", "\n", "\t ", "\r\n"]);
  let fast = 0;
  let valid = 0;
  for (let n = 0; n < 20_000; n++) {
    const fields: string[] = [];
    const goForm = random() < 0.6;
    const add = (key: string, value: string) => {
      if (random() < 0.93) fields.push(`${space()}"${key}"${space()}:${space()}${value}${space()}`);
    };
    if (random() < 0.8) add(random() < 0.7 ? "time" : "timestamp", pick(times));
    if (goForm) {
      add("device", pick(strings));
      add("channel", pick(strings));
    } else {
      add("service_name", pick(strings));
      add("metric_name", pick(strings));
    }
    add("value", pick(numbers));
    if (random() < 0.3) add("tags", pick(tags));
    if (random() < 0.1) add("extra", pick([...strings, ...numbers]));
    if (random() < 0.05) add("value", pick(numbers));
    for (let k = fields.length - 1; k > 0 && random() < 0.3; k--) {
      const j = Math.floor(random() * (k + 1));
      [fields[k], fields[j]] = [fields[j]!, fields[k]!];
    }
    let text = `${space()}{${fields.join(",")}}${space()}`;
    const damage = random();
    if (damage < 0.02) text = text.slice(0, -2);
    else if (damage < 0.04) text += "}";
    else if (damage < 0.06) text = text.replace(",", ",,");
    else if (damage < 0.08) text = text.replace("{", "{,");
    const bytes = new TextEncoder().encode(text);
    const fromBytes = parsePoint(bytes, NOW);
    const fromText = parsePoint(text, NOW);
    assert.deepEqual(fromBytes, fromText, text);
    if (fastPoint(bytes, NOW, parseRfc3339Bytes)) fast++;
    if (fromText.ok) valid++;
  }
  // Not vacuous: most valid payloads took the fast path.
  assert.ok(valid > 4000 && fast > valid * 0.6, `${fast} fast of ${valid} valid`);
});
