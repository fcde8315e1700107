// deno-lint-ignore-file no-explicit-any -- the OpenAPI document and replies are read loosely
/**
 * Every REST route of the OpenAPI document (so new routes are covered without
 * touching this file) gets garbage: malformed and wrongly typed JSON, 100,000
 * levels of nesting, bodies over the limit, invalid UTF-8, NUL bytes, huge
 * headers, very long path segments, unknown query parameters. Each answer is
 * a 4xx with the JSON error shape (or, for what the HTTP layer refuses before
 * the app sees it, a bare 4xx), never a 500, and the gateway keeps serving.
 * Then protocol-level abuse (lying lengths, request smuggling shapes, broken
 * chunking) and slowloris: slow headers and slow bodies while normal clients
 * are served, and every connection is released when the attackers leave.
 */
import assert from "node:assert/strict";
import { waitFor } from "./_helpers.ts";
import {
  head,
  hostPort,
  metricValue,
  rawRequest,
  type RawResponse,
  serverSocketsFor,
} from "./_hostile.ts";
import { startSystem, type System } from "./_system.ts";
import { bearer, tokenWith, withSecuredSystem } from "./_auth.ts";

const MAX_BODY = 256 * 1024;
/** A loaded machine (tests run in parallel) must not turn answers into 504s. */
const LOADED = 30_000;
const encoder = new TextEncoder();

async function withSystem(body: (system: System) => Promise<void>): Promise<void> {
  const system = await startSystem({
    gateway: { max_body_bytes: MAX_BODY, request_timeout_ms: LOADED },
  });
  try {
    await body(system);
  } finally {
    await system.stop();
  }
}

interface Route {
  method: string;
  template: string;
  /** Statuses the document declares. */
  declared: Set<number>;
  /** The route reads a request body. */
  takesBody: boolean;
  /** Its JSON body has required fields, so valid JSON of another shape is refused. */
  requiredFields: boolean;
  params: string[];
}

/** A schema with its `$ref` followed. */
function resolve(doc: any, schema: any): any {
  const ref: string | undefined = schema?.$ref;
  if (!ref) return schema;
  return ref.split("/").slice(1).reduce((node: any, part: string) => node?.[part], doc);
}

/** Every operation of the gateway's OpenAPI document. */
async function routes(url: string): Promise<Route[]> {
  const doc = await (await fetch(url + "/api/openapi.json")).json();
  const out: Route[] = [];
  for (const [template, operations] of Object.entries<any>(doc.paths)) {
    for (const [method, operation] of Object.entries<any>(operations)) {
      out.push({
        method: method.toUpperCase(),
        template,
        declared: new Set(Object.keys(operation.responses).map(Number)),
        takesBody: operation.requestBody !== undefined,
        requiredFields: (resolve(doc, operation.requestBody?.content?.["application/json"]?.schema)
          ?.required?.length ?? 0) > 0,
        params: [...template.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!),
      });
    }
  }
  return out;
}

/** Ordinary values for path parameters; anything unknown gets "x". */
const FILL: Record<string, string> = {
  scope: "hostile-routes",
  key: "k",
  service: "org.plantd.module.Echo",
  operation: "echo",
};

function path(route: Route, override?: (name: string) => string | undefined): string {
  return route.template.replace(
    /\{(\w+)\}/g,
    (_, name: string) => override?.(name) ?? FILL[name] ?? "x",
  );
}

/** What an attack may get. */
type Expect =
  /** A 4xx from the app, with the JSON error shape. */
  | "4xx"
  /** Anything but a server error; errors with the JSON shape. */
  | "no-5xx"
  /** A 4xx from the HTTP layer (Deno's hyper), which answers with no body. */
  | "layer-4xx";

interface Attack {
  name: string;
  request(route: Route, url: string): Array<string | Uint8Array>;
  expect(route: Route): Expect;
}

const bodyAttack = (
  name: string,
  body: string | Uint8Array,
  type = "application/json",
  /** Valid JSON of the wrong shape: refused only where the body has required fields. */
  wellFormed = false,
): Attack => ({
  name,
  request: (route, url) => {
    const bytes = typeof body === "string" ? encoder.encode(body) : body;
    return [
      head(route.method, path(route), url, {
        "content-type": type,
        "content-length": String(bytes.length),
      }),
      bytes,
    ];
  },
  // A route that reads a body must refuse it; others ignore bodies.
  expect: (route) => route.takesBody && (!wellFormed || route.requiredFields) ? "4xx" : "no-5xx",
});

const wrongShape = (name: string, body: string) => bodyAttack(name, body, "application/json", true);

const plain = (
  name: string,
  build: (route: Route, url: string) => string,
  expect: Expect = "no-5xx",
): Attack => ({
  name,
  request: (route, url) => [build(route, url)],
  expect: () => expect,
});

const ATTACKS: Attack[] = [
  bodyAttack("malformed JSON", '{"value": "x", '),
  bodyAttack("truncated JSON", '{"entries":{"a":"1"'),
  wrongShape("wrong type: number", '{"value":1,"entries":1,"username":1,"password":1,"name":1}'),
  wrongShape("wrong type: array", "[1,2,3]"),
  wrongShape("wrong type: null", "null"),
  wrongShape("wrong type: operator object", '{"value":{"$ne":null},"entries":{"$gt":{"$ne":""}}}'),
  wrongShape(
    "prototype pollution",
    '{"__proto__":{"admin":true},"constructor":{"prototype":{"x":1}}}',
  ),
  bodyAttack("100,000 levels of [", "[".repeat(100_000)),
  bodyAttack("100,000 levels of {", '{"a":'.repeat(40_000)),
  bodyAttack(
    "invalid UTF-8",
    Uint8Array.of(0x7b, 0x22, 0x76, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d),
  ),
  bodyAttack("raw NUL in JSON", '{"value":"a\u0000b"}'),
  bodyAttack("NUL bytes only", new Uint8Array(64)),
  bodyAttack("not JSON at all", "<xml>&entity;</xml>", "application/xml"),
  {
    name: "body over the limit (content-length)",
    request: (route, url) => [
      head(route.method, path(route), url, {
        "content-type": "application/json",
        "content-length": String(MAX_BODY + 1),
      }),
      '{"value":"' + "x".repeat(MAX_BODY - 12) + '"}',
    ],
    expect: (route) => route.method === "GET" ? "no-5xx" : "4xx",
  },
  {
    name: "body over the limit (chunked)",
    request: (route, url) => {
      const chunk = `4000\r\n${"x".repeat(0x4000)}\r\n`;
      return [
        head(route.method, path(route), url, {
          "content-type": "application/json",
          "transfer-encoding": "chunked",
        }),
        chunk.repeat(Math.ceil(MAX_BODY / 0x4000) + 1) + "0\r\n\r\n",
      ];
    },
    expect: (route) => route.method === "GET" ? "no-5xx" : "4xx",
  },
  plain("10 KB path segment", (route, url) => {
    const long = "a".repeat(10 * 1024);
    const target = route.params.length > 0 ? path(route, () => long) : `${path(route)}/${long}`;
    return head(route.method, target, url);
  }, "4xx"),
  plain(
    "100 KB path",
    (route, url) => head(route.method, `${path(route)}/${"a".repeat(100_000)}`, url),
    "layer-4xx",
  ),
  plain(
    "NUL and control characters in the path",
    (route, url) =>
      head(
        route.method,
        route.params.length > 0 ? path(route, () => "a%00b%0a%1b") : `${path(route)}%00`,
        url,
      ),
  ),
  plain(
    "invalid percent-encoding in the path",
    (route, url) =>
      head(
        route.method,
        route.params.length > 0 ? path(route, () => "%ff%fe%c3%28") : `${path(route)}%ff`,
        url,
      ),
  ),
  plain(
    "traversal in the path",
    (route, url) =>
      head(
        route.method,
        route.params.length > 0
          ? path(route, () => "..%2f..%2fetc%2fpasswd")
          : `${path(route)}/../../etc/passwd`,
        url,
      ),
  ),
  plain("unknown and hostile query parameters", (route, url) =>
    head(
      route.method,
      `${
        path(route)
      }?zzz=1&__proto__[admin]=1&constructor=x&keys=&keys=a&timeout_ms=-5&limit=1e999` +
        `&from=yesterday&to=%00&bucket=99999999999999999999w&device=&channel=%ff&before=-1`,
      url,
    )),
  plain(
    "10 KB query",
    (route, url) => head(route.method, `${path(route)}?q=${"a".repeat(10 * 1024)}`, url),
  ),
  plain(
    "8 KB header",
    (route, url) => head(route.method, path(route), url, { "x-big": "a".repeat(8 * 1024) }),
  ),
  plain("hostile ordinary headers", (route, url) =>
    head(route.method, path(route), url, {
      "if-match": '"99999999999999999999999999"',
      "content-type": "application/json; charset=utf-16",
      "authorization": "Bearer " + "A".repeat(4096),
      "cookie": "plantd_session=" + "%".repeat(2048),
      "x-forwarded-for": "1.2.3.4, " + "9".repeat(1000),
      "origin": "null",
      "accept": "*/*;q=" + "9".repeat(1000),
    })),
  plain(
    "100 KB header",
    (route, url) => head(route.method, path(route), url, { "x-big": "a".repeat(100_000) }),
    "layer-4xx",
  ),
  plain(
    "200 headers",
    (route, url) =>
      head(
        route.method,
        path(route),
        url,
        Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`x-h${i}`, "v"])),
      ),
    "layer-4xx",
  ),
  plain(
    "NUL in a header",
    (route, url) => head(route.method, path(route), url, { "x-nul": "a\u0000b" }),
    "layer-4xx",
  ),
];

function checkResponse(response: RawResponse, expect: Expect, route: Route, what: string): void {
  const where = `${what} (${response.status}: ${response.body.slice(0, 200)})`;
  assert.notEqual(response.status, 500, where);
  assert.notEqual(response.status, 0, `${where}: the connection was dropped without an answer`);
  if (expect === "layer-4xx") {
    assert.ok(response.status >= 400 && response.status < 500, where);
    return;
  }
  // 503: the route's service or feature is not there (no worker, authentication
  // off, no metrics store), said before the body is read.
  const unavailable = response.status === 503 && route.declared.has(503);
  if (expect === "4xx" && !unavailable) {
    assert.ok(response.status >= 400 && response.status < 500, where);
  }
  if (response.status >= 500) {
    // Only what the document declares, and only "no worker/store here" kinds.
    assert.ok(route.declared.has(response.status), `${where}: undeclared ${response.status}`);
    assert.ok([502, 503].includes(response.status), where);
  }
  if (response.status >= 400) {
    const json = JSON.parse(response.body);
    assert.equal(typeof json.error?.code, "string", `${where}: error.code`);
    assert.equal(typeof json.error?.message, "string", `${where}: error.message`);
    assert.notEqual(json.error.code, "INTERNAL", where);
  }
}

async function assertServes(system: System, after: string, token?: string): Promise<void> {
  const response = await fetch(system.url + "/api/state", { headers: token ? bearer(token) : {} });
  assert.equal(response.status, 200, `the gateway serves after ${after}`);
  await response.body?.cancel();
}

/** Responses with status 500 the gateway counted (including answers no client saw). */
async function serverErrors(url: string, token?: string): Promise<string[]> {
  const text = await (await fetch(url + "/metrics", { headers: token ? bearer(token) : {} }))
    .text();
  return text.split("\n").filter((line) =>
    line.startsWith("http_requests_total{") && line.includes('status="500"')
  );
}

/** Adds an Authorization header to a request built by an attack. */
function authorized(parts: Array<string | Uint8Array>, token?: string): Array<string | Uint8Array> {
  if (!token || typeof parts[0] !== "string") return parts;
  const [first, ...rest] = parts;
  return [first.replace("\r\n", `\r\nAuthorization: Bearer ${token}\r\n`), ...rest];
}

async function attackEveryRoute(
  system: System,
  token?: string,
  anonymous = false,
): Promise<void> {
  const all = await routes(system.url);
  assert.ok(all.length >= 11, `the document lists the routes (${all.length})`);
  assert.ok(all.some((r) => r.takesBody), "some routes take bodies");
  let count = 0;
  for (const route of all) {
    for (const attack of ATTACKS) {
      const response = await rawRequest(
        system.url,
        authorized(attack.request(route, system.url), token),
      );
      checkResponse(
        response,
        attack.expect(route),
        route,
        `${route.method} ${route.template}: ${attack.name}`,
      );
      count++;
    }
    if (!anonymous) await assertServes(system, `${route.method} ${route.template}`, token);
  }
  assert.equal(count, all.length * ATTACKS.length);
  if (!anonymous) {
    assert.deepEqual(await serverErrors(system.url, token), [], "no 500 counted by the gateway");
  }
}

Deno.test("every REST route in the OpenAPI document answers garbage with a 4xx, never a 500", async () => {
  await withSystem((system) => attackEveryRoute(system));
});

Deno.test("with authentication on: garbage without a token, and with an admin token, gets a 4xx", async () => {
  await withSecuredSystem(async (system) => {
    await attackEveryRoute(system, undefined, true);
    await attackEveryRoute(system, await tokenWith(["*"], { roles: ["admin"] }));
  }, { gateway: { max_body_bytes: MAX_BODY, request_timeout_ms: LOADED } });
});

/** Requests that abuse HTTP/1.1 itself, with what each must get. */
const PROTOCOL: Array<
  {
    name: string;
    request: (url: string) => Array<string | Uint8Array>;
    expect: (r: RawResponse) => boolean;
    timeoutMs?: number;
  }
> = [
  {
    name: "TLS client hello on the plain port",
    request:
      () => [Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03)],
    expect: (r) => r.status === 400 || r.status === 0,
  },
  {
    // Deno speaks cleartext HTTP/2 to a client that starts with the preface: it
    // answers in HTTP/2 (no HTTP/1 status), and the connection is dropped after a second.
    name: "HTTP/2 preface",
    request: () => ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"],
    timeoutMs: 1000,
    expect: (r) => r.status === 0 || (r.status >= 400 && r.status < 500),
  },
  {
    name: "HTTP/9.9",
    request: () => ["GET /api/state HTTP/9.9\r\nHost: x\r\n\r\n"],
    expect: (r) => r.status === 400 || r.status === 505,
  },
  {
    name: "bad method token",
    request: (url) => [head("G@T", "/api/state", url)],
    expect: (r) => r.status === 400,
  },
  {
    name: "10 KB method",
    request: (url) => [head("X".repeat(10_000), "/api/state", url)],
    expect: (r) => r.status >= 400 && r.status < 500 && r.status !== 0,
  },
  {
    name: "bytes over 0x7f in the request line",
    request: () => [
      encoder.encode("GET /api/state/"),
      Uint8Array.of(0xff, 0xfe),
      encoder.encode(" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ],
    expect: (r) => r.status === 400,
  },
  {
    name: "header injection through a CR",
    request: (url) => [head("GET", "/api/state", url, { "x-a": "1\rX-Injected: yes" })],
    expect: (r) => r.status === 400,
  },
  {
    name: "Content-Length and Transfer-Encoding both (smuggling shape)",
    request: (url) => [
      head("POST", "/api/state/smuggle", url, {
        "content-type": "application/json",
        "content-length": "4",
        "transfer-encoding": "chunked",
      }),
      "0\r\n\r\nPUT /api/state/smuggled/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
    ],
    expect: (r) => r.status === 400,
  },
  {
    name: "two different Content-Length headers",
    request: (url) => [
      head("PUT", "/api/state/smuggle/k", url, {
        "content-type": "text/plain",
        "content-length": "1",
      }).replace("\r\n\r\n", "\r\nContent-Length: 2\r\n\r\n"),
      "ab",
    ],
    expect: (r) => r.status === 400,
  },
  {
    name: "negative Content-Length",
    request: (
      url,
    ) => [
      head("PUT", "/api/state/smuggle/k", url, {
        "content-type": "text/plain",
        "content-length": "-1",
      }),
      "ab",
    ],
    expect: (r) => r.status === 400,
  },
  {
    name: "Content-Length of 20 digits",
    request: (
      url,
    ) => [
      head("PUT", "/api/state/smuggle/k", url, {
        "content-type": "text/plain",
        "content-length": "99999999999999999999",
      }),
      "ab",
    ],
    expect: (r) => r.status === 400,
  },
  {
    name: "chunk size that is not hex",
    request: (
      url,
    ) => [
      head("PUT", "/api/state/smuggle/k", url, {
        "content-type": "text/plain",
        "transfer-encoding": "chunked",
      }),
      "zz\r\nab\r\n0\r\n\r\n",
    ],
    expect: (r) => r.status === 0 || r.status === 400,
  },
  {
    name: "chunk size of 20 hex digits",
    request: (
      url,
    ) => [
      head("PUT", "/api/state/smuggle/k", url, {
        "content-type": "text/plain",
        "transfer-encoding": "chunked",
      }),
      "ffffffffffffffffffff\r\nab\r\n0\r\n\r\n",
    ],
    expect: (r) => r.status === 0 || r.status === 400,
  },
  {
    name: "a pipelined request hidden after the declared body",
    request: (url) => [
      head("PUT", "/api/state/smuggle/k", url, {
        "content-type": "text/plain",
        "content-length": "2",
      }),
      "abPUT /api/state/smuggled/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
    ],
    // The declared body is written; Connection: close ends the connection before the rest.
    expect: (r) => r.status === 200 && JSON.parse(r.body).value === "ab",
  },
];

Deno.test("HTTP/1.1 protocol abuse gets 4xx or a closed connection, and smuggles nothing", async () => {
  await withSystem(async (system) => {
    for (const attack of PROTOCOL) {
      const response = await rawRequest(system.url, attack.request(system.url), {
        timeoutMs: attack.timeoutMs,
      });
      assert.ok(
        attack.expect(response),
        `${attack.name}: got ${response.status} ${response.body.slice(0, 200)}`,
      );
      await assertServes(system, attack.name);
    }
    // Nothing reached the store through a smuggled request.
    const scopes = (await (await fetch(system.url + "/api/state")).json()).scopes as string[];
    assert.ok(!scopes.includes("smuggled"), `scopes: ${scopes.join(", ")}`);
    assert.deepEqual(await serverErrors(system.url), [], "no 500 counted by the gateway");
  });
});

const SLOW = 300;

Deno.test({
  name:
    "slowloris: slow headers and slow bodies hold connections, normal clients are still served, nothing leaks",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await withSystem(async (system) => {
      const target = hostPort(system.url);
      await assertServes(system, "warm-up");
      const slow: Deno.Conn[] = [];
      const ports = () => slow.map((conn) => (conn.localAddr as Deno.NetAddr).port);
      try {
        // Half of them dribble a request header and never finish it ...
        for (let i = 0; i < SLOW / 2; i++) {
          const conn = await Deno.connect(target);
          slow.push(conn);
          await conn.write(encoder.encode(`GET /api/state HTTP/1.1\r\nHost: x\r\nX-Slow-${i}: `));
        }
        // ... the other half send a complete header and a body that never completes.
        for (let i = 0; i < SLOW / 2; i++) {
          const conn = await Deno.connect(target);
          slow.push(conn);
          await conn.write(encoder.encode(
            `PUT /api/state/slow/k${i} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n` +
              `Content-Length: 100000\r\n\r\nfirst bytes`,
          ));
        }
        // One more byte each, as a slowloris client does to look alive.
        for (const conn of slow) await conn.write(encoder.encode("a"));
        await waitFor(() => serverSocketsFor(target.port, ports()) === SLOW, {
          what: "the gateway holding every slow connection",
        });
        // Meanwhile ordinary clients are served: reads and writes.
        for (let i = 0; i < 20; i++) {
          const put = await fetch(`${system.url}/api/state/normal/k${i}`, {
            method: "PUT",
            body: String(i),
            headers: { "content-type": "text/plain" },
          });
          assert.equal(put.status, 200);
          await put.body?.cancel();
          await assertServes(system, `slow connections (${i})`);
        }
        // Nothing a slow body sent was written.
        const slowScope = await fetch(`${system.url}/api/state/slow`);
        assert.equal(slowScope.status, 404);
        await slowScope.body?.cancel();
      } finally {
        for (const conn of slow) conn.close();
      }
      // The gateway lets go of every connection once its client is gone.
      await waitFor(() => serverSocketsFor(target.port, ports()) === 0, {
        timeoutMs: 20_000,
        intervalMs: 50,
        what: `the gateway closing the slow connections (${
          serverSocketsFor(target.port, ports())
        } open)`,
      });
      assert.deepEqual(await serverErrors(system.url), [], "no 500 counted by the gateway");
      assert.equal(
        await metricValue(
          system.url,
          'http_requests_total{method="PUT",route="/api/state/:scope/:key",status="500"}',
        ),
        0,
      );
    });
  },
});
