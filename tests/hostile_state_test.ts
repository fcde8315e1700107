// deno-lint-ignore-file no-explicit-any -- the tests read JSON replies of many shapes
/**
 * Hostile scope and key names, over REST and straight to the state worker over
 * Majordomo: path traversal, SQL and shell injection, NUL and control
 * characters, lone surrogates, unicode look-alikes, oversized names. Each one
 * is either refused with a clear error or stored and read back byte for byte,
 * also after the state worker restarts and reloads from its database, and the
 * keys written before (the sentinel) are still there. Also: acknowledged
 * writes survive hostile traffic interleaved with them, and the state
 * sources build no SQL from strings.
 */
import assert from "node:assert/strict";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { prng, waitFor } from "./_helpers.ts";
import { head, rawRequest, RawResponse } from "./_hostile.ts";
import { startSystem, type System } from "./_system.ts";

const encoder = new TextEncoder();

/** Names an attacker tries; every one of them must be stored and read back exactly. */
const STORABLE = [
  "../",
  "../../etc/passwd",
  "..\\..\\windows\\system32",
  "%2e%2e%2f",
  "..%2f..%2f",
  "%252e%252e%252f",
  ".",
  "..",
  "a/b",
  "/",
  "'; DROP TABLE entries;--",
  "'; DROP TABLE scopes;--",
  '" OR 1=1 --',
  "' OR '1'='1",
  "1); DELETE FROM entries; --",
  "%",
  "_",
  "*",
  "?x=1",
  "#frag",
  "a&b=c",
  "a+b",
  " ",
  "trailing ",
  "`id`",
  "$(id)",
  "${jndi:ldap://x/a}",
  "<script>alert(1)</script>",
  "\\",
  "温度",
  "🌡️",
  "\u00e9", // é composed ...
  "e\u0301", // ... and decomposed: two different keys
  "Plant",
  "plant", // case matters
  "\u202eevil", // right-to-left override
  "zero\u200bwidth",
  "\ufffd",
  "__proto__",
  "constructor",
  "toString",
  "x".repeat(1024), // the longest name
];

/** Names REST refuses with 400 (control characters, over 1024 characters). */
const REFUSED_BY_REST = ["a\u0000b", "\u0000", "tab\there", "new\nline", "x".repeat(10 * 1024)];

/** Names the state worker refuses over MDP (it allows control characters, as Go plantd). */
const REFUSED_BY_WORKER = ["x".repeat(10 * 1024), "\ud800", "a\udc00b", "é".repeat(513)];

/** Values an attacker tries: stored and read back exactly. */
const VALUES = [
  "",
  "'; DROP TABLE entries;--",
  "\u0000",
  "nul\u0000inside",
  "\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
  '{"success":true}',
  "温度🌡️",
  "\ufeffbom",
  "v".repeat(64 * 1024),
];

/** A path segment that survives every client and router exactly ("." and ".." too). */
function segment(name: string): string {
  return encodeURIComponent(name).replaceAll(".", "%2E");
}

async function withSystem(body: (system: System) => Promise<void>): Promise<void> {
  // A loaded machine (tests run in parallel) must not turn answers into 504s.
  const system = await startSystem({ gateway: { request_timeout_ms: 30_000 } });
  try {
    await body(system);
  } finally {
    await system.stop();
  }
}

/** A request over a raw connection, so no client rewrites the path; JSON reply parsed. */
async function rest(
  system: System,
  method: string,
  path: string,
  body?: string,
  type = "text/plain; charset=utf-8",
): Promise<{ status: number; json: any; raw: RawResponse }> {
  const bytes = body === undefined ? undefined : encoder.encode(body);
  const headers: Record<string, string> = bytes
    ? { "content-type": type, "content-length": String(bytes.length) }
    : {};
  const raw = await rawRequest(system.url, [
    head(method, path, system.url, headers),
    ...(bytes ? [bytes] : []),
  ]);
  return { status: raw.status, json: raw.body ? JSON.parse(raw.body) : {}, raw };
}

/** One state operation straight to the worker, in Go plantd's JSON. */
async function mdp(client: MdpClient, operation: string, request: unknown): Promise<any> {
  const [frame] = await client.request(STATE_SERVICE, [operation, JSON.stringify(request)]);
  return JSON.parse(text(frame!));
}

async function restartState(system: System, client: MdpClient): Promise<void> {
  await system.stopState();
  await system.startState();
  await waitFor(async () => {
    try {
      return (await mdp(client, "health", {})).success === true;
    } catch {
      return false;
    }
  }, { timeoutMs: 20_000, what: "the state worker back" });
}

function assertErrorShape(response: { status: number; json: any }, what: string): void {
  assert.equal(typeof response.json?.error?.code, "string", `${what}: error.code`);
  assert.equal(typeof response.json?.error?.message, "string", `${what}: error.message`);
}

Deno.test("hostile scope and key names over REST: stored and read back exactly, or 400", async () => {
  await withSystem(async (system) => {
    const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 5000 });
    try {
      // The sentinel: written first, must be intact at the end.
      let r = await rest(
        system,
        "POST",
        "/api/state/sentinel",
        '{"entries":{"k1":"1","k2":"2"}}',
        "application/json",
      );
      assert.equal(r.status, 200, r.raw.body);

      for (const [i, name] of STORABLE.entries()) {
        const value = `value of ${i}`;
        // The name as a key, in a fixed scope, and as a scope.
        r = await rest(system, "PUT", `/api/state/names/${segment(name)}`, value);
        assert.equal(r.status, 200, `PUT key ${JSON.stringify(name)}: ${r.raw.body}`);
        assert.equal(r.json.key, name, "the reply names the key exactly");
        r = await rest(system, "PUT", `/api/state/${segment(name)}/k`, value);
        assert.equal(r.status, 200, `PUT scope ${JSON.stringify(name)}: ${r.raw.body}`);
        assert.equal(r.json.scope, name);
        r = await rest(system, "GET", `/api/state/${segment(name)}/k`);
        assert.equal(r.status, 200, `GET scope ${JSON.stringify(name)}: ${r.raw.body}`);
        assert.deepEqual([r.json.scope, r.json.key, r.json.value], [name, "k", value]);
      }
      for (const name of REFUSED_BY_REST) {
        for (const path of [`/api/state/names/${segment(name)}`, `/api/state/${segment(name)}/k`]) {
          r = await rest(system, "PUT", path, "v");
          assert.equal(r.status, 400, `PUT ${JSON.stringify(name).slice(0, 40)}: ${r.raw.body}`);
          assertErrorShape(r, name);
          assert.equal(r.json.error.code, "BAD_REQUEST");
        }
      }
      // Hostile values under an ordinary key, JSON and text bodies.
      for (const [i, value] of VALUES.entries()) {
        r = await rest(system, "PUT", `/api/state/values/t${i}`, value);
        assert.equal(r.status, 200, `text value ${i}: ${r.raw.body.slice(0, 200)}`);
        r = await rest(
          system,
          "PUT",
          `/api/state/values/j${i}`,
          JSON.stringify({ value }),
          "application/json",
        );
        assert.equal(r.status, 200, `JSON value ${i}: ${r.raw.body.slice(0, 200)}`);
      }
      // A lone surrogate can only travel as a JSON escape: refused, never stored as U+FFFD.
      r = await rest(
        system,
        "PUT",
        "/api/state/values/lone",
        '{"value":"\\ud800"}',
        "application/json",
      );
      assert.equal(r.status, 400, r.raw.body);
      assertErrorShape(r, "lone surrogate value");
      r = await rest(
        system,
        "POST",
        "/api/state/values",
        '{"entries":{"\\udc00":"v"}}',
        "application/json",
      );
      assert.equal(r.status, 400, r.raw.body);

      const check = async (when: string) => {
        const keys = (await mdp(client, "list-keys", { service: "names" })).data.keys as string[];
        assert.deepEqual(new Set(keys), new Set(STORABLE), `${when}: keys of scope "names"`);
        const scopes = new Set((await mdp(client, "list-scopes", {})).data.scopes as string[]);
        for (const name of [...STORABLE, "sentinel", "names", "values"]) {
          assert.ok(scopes.has(name), `${when}: scope ${JSON.stringify(name)} listed`);
        }
        for (const name of REFUSED_BY_REST) assert.ok(!scopes.has(name));
        for (const [i, name] of STORABLE.entries()) {
          const got = await mdp(client, "state-get-many", { service: "names", keys: [name] });
          assert.equal(got.data.entries[name]?.value, `value of ${i}`, `${when}: ${name}`);
          const inScope = await mdp(client, "state-get", { service: name, key: "k" });
          assert.equal(inScope.data.value, `value of ${i}`, `${when}: scope ${name}`);
        }
        for (const [i, value] of VALUES.entries()) {
          const got = await mdp(client, "state-get-many", {
            service: "values",
            keys: [`t${i}`, `j${i}`],
          });
          assert.equal(got.data.entries[`t${i}`]?.value, value, `${when}: text value ${i}`);
          assert.equal(got.data.entries[`j${i}`]?.value, value, `${when}: JSON value ${i}`);
        }
        const lone = await mdp(client, "state-get-many", { service: "values", keys: ["lone"] });
        assert.equal(lone.data.entries.lone, null, `${when}: the refused value is not there`);
        const sentinel = await mdp(client, "state-get-many", {
          service: "sentinel",
          keys: ["k1", "k2"],
        });
        assert.deepEqual(
          [sentinel.data.entries.k1?.value, sentinel.data.entries.k2?.value],
          ["1", "2"],
          `${when}: the sentinel is intact`,
        );
      };
      await check("live");
      // Reloaded from the database: the tables exist and hold every name exactly.
      await restartState(system, client);
      await check("after a restart");
      r = await rest(system, "GET", "/api/state");
      assert.equal(r.status, 200);
    } finally {
      await client.close();
    }
  });
});

Deno.test("hostile names straight to the state worker over MDP: stored exactly or a Go-style error", async () => {
  await withSystem(async (system) => {
    const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 5000 });
    try {
      assert.equal(
        (await mdp(client, "state-set", { service: "sentinel", key: "k", value: "v" }))
          .success,
        true,
      );
      // The worker follows Go plantd: control characters are allowed in names.
      const storable = [...STORABLE, "a\u0000b", "\u0000", "tab\there", "new\nline"];
      for (const [i, name] of storable.entries()) {
        const value = `${VALUES[i % VALUES.length]}#${i}`;
        let reply = await mdp(client, "state-set", { service: "mdp", key: name, value });
        assert.equal(
          reply.success,
          true,
          `state-set ${JSON.stringify(name)}: ${JSON.stringify(reply)}`,
        );
        reply = await mdp(client, "state-set-many", { service: name, entries: { [name]: value } });
        assert.equal(reply.success, true, `state-set-many ${JSON.stringify(name)}`);
        reply = await mdp(client, "state-cas", { service: name, key: "cas", value, revision: 0 });
        assert.equal(reply.success, true, `state-cas ${JSON.stringify(name)}`);
      }
      for (const name of REFUSED_BY_WORKER) {
        for (
          const [operation, request] of [
            ["state-set", { service: "mdp", key: name, value: "v" }],
            ["state-set", { service: name, key: "k", value: "v" }],
            ["state-set-many", { service: "mdp", entries: { [name]: "v" } }],
            ["create-scope", { service: name }],
          ] as const
        ) {
          const reply = await mdp(client, operation, request);
          assert.equal(
            reply.success,
            undefined,
            `${operation} ${JSON.stringify(name).slice(0, 30)}`,
          );
          assert.match(reply.error, /^Operation failed: (key|service) is (longer|not valid)/);
        }
      }
      for (const value of ["\ud800", "x\udfff"]) {
        const reply = await mdp(client, "state-set", { service: "mdp", key: "lone", value });
        assert.equal(reply.error, "Operation failed: value is not valid Unicode (lone surrogate)");
      }
      // Malformed requests of every kind get Go's wrapper errors; the worker keeps serving.
      const malformed: Array<[string, string]> = [
        ["state-set", "not json"],
        ["state-set", "[]"],
        ["state-set", "null"],
        ["state-set", '"str"'],
        ["state-set", '{"service":1,"key":"k","value":"v"}'],
        ["state-set", '{"service":"s","key":{},"value":"v"}'],
        ["state-set", '{"service":"s","key":"k","value":["v"]}'],
        ["state-set-many", '{"service":"s","entries":[]}'],
        ["state-set-many", '{"service":"s","entries":{"k":1}}'],
        ["state-cas", '{"service":"s","key":"k","value":"v","revision":-1}'],
        ["state-cas", '{"service":"s","key":"k","value":"v","revision":1.5}'],
        ["state-get-many", '{"service":"s","keys":"k"}'],
        ["state-get-many", '{"service":"s","keys":[1]}'],
        ["state-get", "[".repeat(100_000)],
        ["state-get", "[".repeat(50_000) + "]".repeat(50_000)],
        ["toString", "{}"],
        ["constructor", "{}"],
        ["__proto__", "{}"],
        ["hasOwnProperty", "{}"],
      ];
      for (const [operation, body] of malformed) {
        const [frame] = await client.request(STATE_SERVICE, [operation, body]);
        const reply = JSON.parse(text(frame!));
        assert.equal(typeof reply.error, "string", `${operation} ${body.slice(0, 30)}`);
        assert.equal(reply.success, undefined, `${operation} ${body.slice(0, 30)}: wrapper error`);
      }
      const check = async (when: string) => {
        const keys = (await mdp(client, "list-keys", { service: "mdp" })).data.keys as string[];
        assert.deepEqual(new Set(keys), new Set(storable), `${when}: keys`);
        for (const [i, name] of storable.entries()) {
          const value = `${VALUES[i % VALUES.length]}#${i}`;
          const got = await mdp(client, "state-get-many", { service: name, keys: [name, "cas"] });
          assert.equal(got.data.scope, name, when);
          assert.equal(got.data.entries[name]?.value, value, `${when}: ${JSON.stringify(name)}`);
          assert.equal(
            got.data.entries.cas?.value,
            value,
            `${when}: cas in ${JSON.stringify(name)}`,
          );
        }
        const scopes = new Set((await mdp(client, "list-scopes", {})).data.scopes as string[]);
        for (const name of REFUSED_BY_WORKER) assert.ok(!scopes.has(name));
        assert.equal(
          (await mdp(client, "state-get", { service: "sentinel", key: "k" })).data.value,
          "v",
        );
      };
      await check("live");
      await restartState(system, client);
      await check("after a restart");
    } finally {
      await client.close();
    }
  });
});

/** Hostile requests the interleaving test throws between real writes. */
function hostileRequest(random: () => number, url: string): Array<string | Uint8Array> {
  const pick = Math.floor(random() * 10);
  const json = { "content-type": "application/json" };
  switch (pick) {
    case 0:
      return [head("POST", "/api/state/ledger", url, json), '{"entries":'];
    case 1:
      return [
        head("PUT", "/api/state/ledger/k0", url, { ...json, "content-length": "12" }),
        '{"value":1}x',
      ];
    case 2:
      return [head("GET", `/api/state/ledger/${segment("'; DROP TABLE entries;--")}`, url)];
    case 3:
      return [head("GET", "/api/state/" + "a".repeat(20_000), url)];
    case 4:
      return [
        head("PUT", "/api/state/ledger/k1", url, {
          "content-type": "text/plain",
          "content-length": "3",
        }),
        Uint8Array.of(0xff, 0xfe, 0x00),
      ];
    case 5:
      // A CAS with a wrong revision must change nothing.
      return [
        head("PUT", "/api/state/ledger/k2", url, {
          "content-type": "text/plain",
          "if-match": '"999999"',
          "content-length": "4",
        }),
        "evil",
      ];
    case 6:
      return [
        head("PUT", "/api/state/ledger/k3", url, {
          "content-type": "text/plain",
          "transfer-encoding": "chunked",
        }),
        "zz\r\nevil\r\n0\r\n\r\n",
      ];
    case 7:
      return [head("POST", "/api/state/ledger", url, json), '{"entries":{"k4":"evil","":"x"}}'];
    case 8:
      return [head("DELETE", `/api/state/${segment("ledger\u0000")}`, url)];
    default:
      return ["\x00\x01\x02 GARBAGE\r\n\r\n"];
  }
}

Deno.test("every acknowledged write reads back after hostile traffic interleaved with it", async () => {
  await withSystem(async (system) => {
    const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 5000 });
    const random = prng(7_0707);
    // Last acknowledged value per key; keys are owned by one writer each, so order is clear.
    const acknowledged = new Map<string, { value: string; revision: number }>();
    try {
      const writer = async (id: number) => {
        for (let i = 0; i < 40; i++) {
          const key = `w${id}-k${i % 7}`;
          const value = `${id}/${i}/${"'\";-- \u0000é".slice(0, 1 + (i % 8))}`;
          let r;
          if (i % 3 === 0) {
            r = await rest(
              system,
              "POST",
              "/api/state/ledger",
              JSON.stringify({ entries: { [key]: value } }),
              "application/json",
            );
            if (r.status === 200) acknowledged.set(key, { value, revision: r.json.revisions[key] });
          } else {
            r = await rest(system, "PUT", `/api/state/ledger/${segment(key)}`, value);
            if (r.status === 200) acknowledged.set(key, { value, revision: r.json.revision });
          }
          assert.equal(r.status, 200, `writer ${id}: ${r.raw.body}`);
        }
      };
      const attacker = async () => {
        for (let i = 0; i < 60; i++) {
          const response = await rawRequest(system.url, hostileRequest(random, system.url));
          assert.notEqual(response.status, 500, response.body);
          assert.ok(
            response.status === 0 || response.status >= 400,
            `hostile got ${response.status}`,
          );
        }
      };
      await Promise.all([writer(1), writer(2), writer(3), writer(4), attacker(), attacker()]);
      assert.ok(acknowledged.size > 0);
      const verify = async (when: string) => {
        for (const [key, { value, revision }] of acknowledged) {
          const r = await rest(system, "GET", `/api/state/ledger/${segment(key)}`);
          assert.equal(r.status, 200, `${when}: ${key}`);
          assert.deepEqual([r.json.value, r.json.revision], [value, revision], `${when}: ${key}`);
          const got = await mdp(client, "state-get", { service: "ledger", key });
          assert.equal(got.data.value, value, `${when}: ${key} at the worker`);
        }
        // The hostile writes wrote nothing.
        const keys = (await mdp(client, "list-keys", { service: "ledger" })).data.keys as string[];
        assert.deepEqual(new Set(keys), new Set(acknowledged.keys()), `${when}: no other keys`);
      };
      await verify("live");
      await restartState(system, client);
      await verify("after a restart");
    } finally {
      await client.close();
    }
  });
});

Deno.test("the state sources build no SQL from strings: Drizzle and bound arguments only", async () => {
  const offenders: string[] = [];
  for (const dir of ["state", "storage"]) {
    for await (const entry of Deno.readDir(new URL(`../${dir}/`, import.meta.url))) {
      if (!entry.name.endsWith(".ts") || entry.name.endsWith("_test.ts")) continue;
      const file = `${dir}/${entry.name}`;
      const source = await Deno.readTextFile(new URL(`../${file}`, import.meta.url));
      const patterns = [
        // Drizzle's and postgres.js's escapes into raw SQL.
        /sql\.raw\(|\.unsafe\(/g,
        // A statement handed to libSQL as a template with interpolations.
        /\.execute\(\s*`[^`]*\$\{[^`]*`/g,
        // A statement glued together with +.
        /\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|VACUUM)\b[^`"'\n]*["'`]\s*\+/g,
      ];
      for (const pattern of patterns) {
        for (const match of source.matchAll(pattern)) {
          // Allowed: a PRAGMA whose interpolation chooses between two constants, and the
          // page limit, an integer computed in state/db.ts (PRAGMAs take no bound arguments).
          if (match[0].includes('options.synchronous === "normal" ? "NORMAL" : "FULL"')) continue;
          if (match[0] === ".execute(`PRAGMA max_page_count = ${pages}`") continue;
          offenders.push(`${file}: ${match[0]}`);
        }
      }
    }
  }
  assert.deepEqual(offenders, [], "SQL built from strings");
});
