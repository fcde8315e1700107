/**
 * No cross-site writes (issue 16 items 4 and 7), through the whole app
 * (`createApp().request()`) with an in-process state service behind it: a
 * page on another origin cannot write, with authentication on or off, and
 * tokens that never expire or come from the future are refused by the
 * gateway and by the state worker's verifier.
 */
import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { Registry } from "prom-client";
import { AuthStore } from "../auth/store.ts";
import { TokenIssuer, type TokenSettings } from "../auth/tokens.ts";
import { serviceTokenCheck } from "../auth/call_credentials.ts";
import { gatewayConfig } from "../config/components.ts";
import { ConfigError, loadConfig } from "../config/load.ts";
import type { MdpClient } from "../mdp/client.ts";
import { frame } from "../mdp/protocol.ts";
import { startGateway } from "../roles/gateway.ts";
import { openStateDatabase } from "../state/db.ts";
import { STATE_SERVICE, StateOperations } from "../state/operations.ts";
import { StateStore } from "../state/store.ts";
import { gatewayMetrics } from "./gateway_metrics.ts";
import { createApp } from "./app.ts";
import { Guard } from "./auth/guard.ts";
import { BusHub } from "./bus_hub.ts";
import { BusOutlet } from "./bus_outlet.ts";
import { ServiceDirectory } from "../mdp/directory.ts";
import { memoryCounters } from "./shared/counters.ts";
import { memorySessions } from "./shared/sessions.ts";
import { waitFor } from "../tests/_helpers.ts";

const SECRET = "secret-for-tests-only-32-bytes-long!";
const SETTINGS: TokenSettings = { secret: SECRET, issuer: "plantd", audience: "plantd" };
const HOST = "gateway.test:8080";
const URL_BASE = `http://${HOST}`;
const EVIL = "https://evil.example";

interface Gateway {
  request(method: string, path: string, init?: RequestInit): Promise<Response>;
  /** Requests that reached a Majordomo service: `[service, operation]`. */
  calls: string[][];
  registry: Registry;
  store: AuthStore;
  /** The state worker's operations (with the verifier of `roles/state.ts` when auth is on). */
  ops: StateOperations;
}

/** The app with a state service in process; `auth`: the gateway and the state worker check tokens. */
async function withGateway(
  body: (gateway: Gateway) => Promise<void>,
  options: { auth?: boolean; allowedOrigins?: string[] } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const open = await openStateDatabase({ location: ":memory:" });
  const state = await StateStore.load(open);
  const settings = options.auth ? SETTINGS : undefined;
  // As roles/state.ts checks them: the gateway's call credentials and Go clients' own tokens.
  const verify = settings ? serviceTokenCheck(settings, STATE_SERVICE) : undefined;
  const ops = new StateOperations(state, verify ? { verify } : {});
  const calls: string[][] = [];
  const client = {
    request: async (service: string, frames: string[]) => {
      calls.push([service, frames[0]!]);
      if (service === STATE_SERVICE) return [frame(await ops.handle(frames.map(frame)))];
      return frames.slice(1).map(frame); // an echo
    },
  } as unknown as MdpClient;
  const call = (service: string, frames: string[]) => client.request(service, frames);
  const registry = new Registry();
  const metrics = gatewayMetrics(registry);
  const store = await AuthStore.open(`file:${dir}/auth.db`);
  const app = createApp({
    client,
    // Never started: it finds no broker, so it lets every call through.
    directory: new ServiceDirectory(call),
    hub: new BusHub({}),
    registry,
    metrics,
    checks: () => [],
    guard: new Guard(store, settings, metrics),
    counters: memoryCounters(),
    sessions: memorySessions(),
    outlet: new BusOutlet({}),
    options: {
      requestTimeoutMs: 1000,
      maxBodyBytes: 1024 * 1024,
      allowedOrigins: options.allowedOrigins ?? [],
      ws: {
        maxBufferedBytes: 1 << 20,
        maxMessageBytes: 1 << 16,
        maxSubscriptions: 16,
        maxMessagesPerSecond: 100,
        maxPendingRequests: 16,
      },
      security: {
        accessTtlS: 900,
        refreshTtlS: 3600,
        tls: false,
        trustedProxies: [],
        rateLimitWindowMs: 60_000,
        rateLimitPerIp: 0,
        rateLimitPerToken: 0,
        wsMaxConnections: 10,
        wsMaxPerUser: 10,
        publicMetrics: true,
      },
    },
  });
  try {
    await body({
      request: (method, path, init = {}) => {
        const headers = new Headers(init.headers);
        if (!headers.has("host")) headers.set("host", HOST);
        return Promise.resolve(app.request(`${URL_BASE}${path}`, { ...init, method, headers }));
      },
      calls,
      registry,
      store,
      ops,
    });
  } finally {
    await store.close();
    await state.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The JSON error of a response, with its status. */
async function errorOf(
  response: Response,
): Promise<{ status: number; code: string; message: string }> {
  const body = await response.json();
  return { status: response.status, code: body.error?.code, message: body.error?.message };
}

/** Whether the in-process store holds `plant/csrf`, read through the gateway. */
async function written(gateway: Gateway, headers: HeadersInit = {}): Promise<boolean> {
  const response = await gateway.request("GET", "/api/state/plant/csrf", { headers });
  await response.body?.cancel();
  return response.status === 200;
}

const SET_CSRF = JSON.stringify({ service: "plant", key: "csrf", value: "pwned" });
const BRIDGE = `/api/services/${STATE_SERVICE}/state-set`;

Deno.test("auth off: a text/plain or form POST to the services bridge gets 403 from a page of another site, 415 by its type, and writes nothing", async () => {
  await withGateway(async (gateway) => {
    // What a page on another origin can send without a preflight.
    for (
      const [type, body] of [
        ["text/plain;charset=UTF-8", SET_CSRF],
        ["application/x-www-form-urlencoded", `${SET_CSRF}=`],
        ["multipart/form-data; boundary=x", `--x\r\n\r\n${SET_CSRF}\r\n--x--`],
      ]
    ) {
      const response = await gateway.request("POST", BRIDGE, {
        headers: { "content-type": type!, "sec-fetch-site": "cross-site" },
        body,
      });
      const error = await errorOf(response);
      // Refused as cross-site before its body type is looked at.
      assert.equal(error.status, 403, `${type}: ${error.message}`);
      // And without the browser's headers (an old browser), refused for its type.
      const bare = await gateway.request("POST", BRIDGE, {
        headers: { "content-type": type! },
        body,
      });
      const refused = await errorOf(bare);
      assert.equal(refused.status, 415, `${type}: ${refused.message}`);
      assert.equal(refused.code, "UNSUPPORTED_MEDIA_TYPE");
      assert.match(refused.message, /application\/json/);
      assert.equal(bare.headers.get("accept-post"), "application/json");
    }
    assert.deepEqual(gateway.calls, [], "no request reached a service");
    assert.equal(await written(gateway), false);
    // The same write as JSON from a script (no Origin) goes through: the test can fail.
    const ok = await gateway.request("POST", BRIDGE, {
      headers: { "content-type": "application/json; charset=utf-8" },
      body: SET_CSRF,
    });
    assert.equal(ok.status, 200, await ok.text());
    assert.equal(await written(gateway), true);
  });
});

Deno.test("auth off: a JSON POST from another origin gets 403, counted and audited, and writes nothing", async () => {
  await withGateway(async (gateway) => {
    const refusals: [string, Record<string, string>][] = [
      ["Origin of another site", { origin: EVIL }],
      ["Origin null (sandboxed page)", { origin: "null" }],
      ["same site, other port", { origin: "http://gateway.test:9090" }],
      ["Sec-Fetch-Site cross-site", { "sec-fetch-site": "cross-site" }],
      ["Sec-Fetch-Site same-site", { "sec-fetch-site": "same-site" }],
    ];
    for (const [what, headers] of refusals) {
      const response = await gateway.request("POST", BRIDGE, {
        headers: { "content-type": "application/json", ...headers },
        body: SET_CSRF,
      });
      const error = await errorOf(response);
      assert.equal(error.status, 403, what);
      assert.equal(error.code, "FORBIDDEN", what);
      assert.match(error.message, /Cross-site request refused/, what);
    }
    // Every non-safe method, not only POST.
    for (const method of ["PUT", "DELETE", "PATCH"]) {
      const response = await gateway.request(method, "/api/state/plant/csrf", {
        headers: { origin: EVIL, "content-type": "application/json" },
        body: method === "DELETE" ? undefined : '{"value":"x"}',
      });
      assert.equal(response.status, 403, method);
      await response.body?.cancel();
    }
    assert.deepEqual(gateway.calls, []);
    assert.equal(await written(gateway), false);
    assert.match(await gateway.registry.metrics(), /gateway_access_denied_total 8/);
    await waitForAudit(gateway.store, 8);

    // The gateway's own pages, listed origins, and clients that are no browser pass.
    for (
      const headers of <Record<string, string>[]> [
        { origin: URL_BASE },
        { "sec-fetch-site": "same-origin" },
        { "sec-fetch-site": "none" },
        {},
      ]
    ) {
      const response = await gateway.request("POST", BRIDGE, {
        headers: { "content-type": "application/json", ...headers },
        body: SET_CSRF,
      });
      assert.equal(response.status, 200, JSON.stringify(headers));
      await response.body?.cancel();
    }
    assert.equal(await written(gateway), true);
  });
});

/** Waits until the audit log holds `count` cross-site refusals. */
async function waitForAudit(store: AuthStore, count: number): Promise<void> {
  let events: Awaited<ReturnType<AuthStore["queryAudit"]>> = [];
  await waitFor(async () => {
    events = await store.queryAudit({ action: "access.cross_site", limit: 100 });
    return events.length === count;
  }, { what: () => `${count} audited refusals (have ${events.length})` });
  for (const event of events) assert.equal(event.outcome, "denied");
}

Deno.test("allowed_origins admit a listed origin's writes; '*' never does", async () => {
  await withGateway(async (gateway) => {
    const post = (origin: string) =>
      gateway.request("POST", BRIDGE, {
        headers: { "content-type": "application/json", origin },
        body: SET_CSRF,
      });
    const listed = await post("https://ops.example");
    assert.equal(listed.status, 200);
    await listed.body?.cancel();
    const other = await post(EVIL);
    assert.equal(other.status, 403);
    await other.body?.cancel();
  }, { allowedOrigins: ["https://ops.example", "*"] });
});

Deno.test("a PUT without a content type gets 415 naming the accepted types; text/plain and JSON pass", async () => {
  await withGateway(async (gateway) => {
    // A Uint8Array body: the Request constructor adds no content type.
    const bare = await gateway.request("PUT", "/api/state/plant/k", {
      body: new TextEncoder().encode("42"),
    });
    const error = await errorOf(bare);
    assert.equal(error.status, 415, error.message);
    assert.equal(error.code, "UNSUPPORTED_MEDIA_TYPE");
    assert.match(error.message, /application\/json, text\/plain/);
    const form = await gateway.request("PUT", "/api/state/plant/k", {
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "42",
    });
    assert.equal(form.status, 415);
    await form.body?.cancel();
    assert.deepEqual(gateway.calls, []);
    const text = await gateway.request("PUT", "/api/state/plant/k", {
      headers: { "content-type": "text/plain" },
      body: "42",
    });
    assert.equal(text.status, 200, await text.text());
    const json = await gateway.request("PUT", "/api/state/plant/k", {
      headers: { "content-type": "application/json" },
      body: '{"value":"43"}',
    });
    assert.equal((await json.json()).value, "43");
    // A body-less PUT (create a scope) and DELETE need no content type.
    const scope = await gateway.request("PUT", "/api/state/empty");
    assert.equal(scope.status, 201, await scope.text());
    const gone = await gateway.request("DELETE", "/api/state/empty");
    assert.equal(gone.status, 200, await gone.text());
  });
});

Deno.test("every POST route takes JSON only: login with a form body, bus publish and set-many as text get 415", async () => {
  await withGateway(async (gateway) => {
    for (
      const [path, body] of [
        ["/api/auth/login", "username=admin&password=x"],
        ["/api/auth/refresh", "refresh_token=x"],
        ["/api/auth/logout", "refresh_token=x"],
        ["/api/auth/users", "username=x&password=y&roles=admin"],
        ["/api/auth/api-keys", "name=x&roles=admin"],
        ["/api/buses/event/messages", "topic=x&payload=y"],
        ["/api/state/plant", "entries[csrf]=x"],
      ]
    ) {
      const response = await gateway.request("POST", path!, {
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body,
      });
      const error = await errorOf(response);
      assert.equal(error.status, 415, `${path}: ${error.message}`);
      assert.equal(response.headers.get("accept-post"), "application/json");
    }
    const patch = await gateway.request("PATCH", "/api/auth/users/ada", {
      headers: { "content-type": "text/plain" },
      body: '{"roles":["admin"]}',
    });
    assert.equal(patch.status, 415);
    assert.equal(patch.headers.get("accept-patch"), "application/json");
    await patch.body?.cancel();
    const role = await gateway.request("PUT", "/api/auth/roles/r", {
      headers: { "content-type": "text/plain" },
      body: '{"permissions":["*"]}',
    });
    assert.equal(role.status, 415, "text/plain is for state values only");
    await role.body?.cancel();
    // A body-less POST (logout) needs no content type.
    const logout = await gateway.request("POST", "/api/auth/logout");
    assert.equal(logout.status, 200, await logout.text());
    assert.deepEqual(gateway.calls, []);
  });
});

Deno.test("no permissive CORS: a preflight gets no Access-Control-Allow-* headers", async () => {
  await withGateway(async (gateway) => {
    const response = await gateway.request("OPTIONS", BRIDGE, {
      headers: {
        origin: EVIL,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
      },
    });
    await response.body?.cancel();
    for (const [name] of response.headers) assert.doesNotMatch(name, /^access-control-/);
  });
});

/** An HS256 token with exactly these time claims. */
function timed(times: { exp?: number; iat?: number }): Promise<string> {
  return new SignJWT({ perms: ["*"], ...times }).setProtectedHeader({ alg: "HS256" })
    .setIssuer("plantd").setAudience("plantd").setSubject("user:mallory")
    .sign(new TextEncoder().encode(SECRET));
}

Deno.test("auth on: a JWT without exp, or issued a year ahead, or living too long, is refused by the gateway and the state worker", async () => {
  await withGateway(async (gateway) => {
    const now = Math.floor(Date.now() / 1000);
    const bad = {
      "no exp": await timed({ iat: now }),
      "iat a year ahead": await timed({ iat: now + 365 * 86_400, exp: now + 365 * 86_400 + 60 }),
      "lives two days": await timed({ iat: now, exp: now + 2 * 86_400 }),
    };
    for (const [what, token] of Object.entries(bad)) {
      const response = await gateway.request("GET", "/api/state", {
        headers: { authorization: `Bearer ${token}` },
      });
      const error = await errorOf(response);
      assert.equal(error.status, 401, `${what}: ${error.message}`);
      assert.equal(error.code, "UNAUTHENTICATED");
      // The state worker, asked directly as a Go plantd client would.
      const reply = JSON.parse(
        await gateway.ops.handle(
          ["list-scopes", JSON.stringify({ token })].map(frame),
        ),
      );
      assert.equal(reply.error, "AUTHENTICATION_FAILED", what);
    }
    // A good token passes both: the refusals are about the claims.
    const good = (await new TokenIssuer(SETTINGS).issue(
      { sub: "user:ada", name: "ada", roles: [], perms: ["*"] },
      60,
    )).token;
    const ok = await gateway.request("GET", "/api/state", {
      headers: { authorization: `Bearer ${good}` },
    });
    assert.equal(ok.status, 200, await ok.text());
    const reply = JSON.parse(
      await gateway.ops.handle(["list-scopes", JSON.stringify({ token: good })].map(frame)),
    );
    assert.equal(reply.success, true);
  }, { auth: true });
});

Deno.test("auth on: header credentials are no excuse for a cross-site write", async () => {
  await withGateway(async (gateway) => {
    const token = (await new TokenIssuer(SETTINGS).issue(
      { sub: "user:ada", name: "ada", roles: [], perms: ["*"] },
      60,
    )).token;
    const response = await gateway.request("PUT", "/api/state/plant/csrf", {
      headers: { authorization: `Bearer ${token}`, origin: EVIL, "content-type": "text/plain" },
      body: "x",
    });
    assert.equal(response.status, 403);
    await response.body?.cancel();
    assert.deepEqual(gateway.calls, []);
  }, { auth: true });
});

Deno.test("a gateway whose access tokens would outlive jwt_max_lifetime_s refuses to start", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = {
      ...loadConfig(gatewayConfig, { args: [], env: {} }),
      port: 0,
      jwt_secret: SECRET,
      access_token_ttl_s: 7200,
      jwt_max_lifetime_s: 3600,
      auth_db: `${dir}/auth.db`,
      metrics_db: "",
    };
    const started = await startGateway(config).catch((error: Error) => error);
    if (!(started instanceof Error)) {
      await started.close();
      assert.fail("the gateway started");
    }
    assert.ok(started instanceof ConfigError);
    assert.match(
      started.message,
      /access_token_ttl_s \(7200\) is over jwt_max_lifetime_s \(3600\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
