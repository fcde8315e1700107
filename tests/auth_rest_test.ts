// deno-lint-ignore-file no-explicit-any -- the tests read JSON bodies of many shapes
/**
 * Authentication and authorization over REST with the whole system running:
 * every route allowed with its permission and refused without it, scoped
 * grants, bad tokens, API keys, logins with refresh and logout, cookies and
 * CSRF, the state worker's own token check, and the audit log.
 */
import assert from "node:assert/strict";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { bearer, tokenWith, withSecuredSystem } from "./_auth.ts";

interface Case {
  method: string;
  path: string;
  body?: string;
  /** Permissions that allow it; the first is the one a denial names. */
  allowedBy: string[];
}

/** Every REST route, with what allows it. */
const CASES: Case[] = [
  { method: "GET", path: "/api/state", allowedBy: ["state:scope:list"] },
  {
    method: "PUT",
    path: "/api/state/p1",
    allowedBy: ["state:scope:create", "state:scope:p1:admin"],
  },
  {
    method: "PUT",
    path: "/api/state/p1/k",
    body: '{"value":"1"}',
    allowedBy: ["state:data:write", "state:scope:p1:write"],
  },
  {
    method: "POST",
    path: "/api/state/p1",
    body: '{"entries":{"a":"1"}}',
    allowedBy: ["state:data:write", "state:scope:p1:write"],
  },
  { method: "GET", path: "/api/state/p1", allowedBy: ["state:data:read", "state:scope:p1:read"] },
  { method: "GET", path: "/api/state/p1/k", allowedBy: ["state:data:read", "state:scope:p1:read"] },
  {
    method: "DELETE",
    path: "/api/state/p1/a",
    allowedBy: ["state:data:delete", "state:scope:p1:delete"],
  },
  {
    method: "DELETE",
    path: "/api/state/p1",
    allowedBy: ["state:scope:delete", "state:scope:p1:admin"],
  },
  { method: "GET", path: "/api/services", allowedBy: ["service:list"] },
  {
    method: "POST",
    path: "/api/services/org.plantd.module.Echo/echo",
    body: '"hi"',
    allowedBy: ["service:call:org.plantd.module.Echo", "service:call:*"],
  },
  {
    method: "GET",
    path: "/api/metrics?device=d&channel=c",
    allowedBy: ["metrics:read"],
  },
  { method: "GET", path: "/metrics", allowedBy: ["telemetry:read"] },
  { method: "GET", path: "/api/auth/users", allowedBy: ["auth:admin"] },
  { method: "GET", path: "/api/auth/api-keys", allowedBy: ["auth:admin"] },
  { method: "GET", path: "/api/auth/roles", allowedBy: ["auth:admin"] },
  { method: "GET", path: "/api/audit", allowedBy: ["audit:read"] },
];

async function call(
  base: string,
  c: Pick<Case, "method" | "path" | "body">,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const response = await fetch(base + c.path, {
    method: c.method,
    headers: { ...(c.body ? { "content-type": "application/json" } : {}), ...headers },
    body: c.body,
  });
  const raw = await response.text();
  let body: any = raw;
  try {
    body = JSON.parse(raw);
  } catch {
    // /metrics is text
  }
  return { status: response.status, body, headers: response.headers };
}

Deno.test("every route: 401 without a token, 403 without its permission, served with it", async () => {
  await withSecuredSystem(async ({ url }) => {
    // Setup for the routes that need existing data.
    const admin = bearer(await tokenWith(["*"]));
    assert.equal((await call(url, { method: "PUT", path: "/api/state/p1" }, admin)).status, 201);
    const unrelated = bearer(await tokenWith(["state:scope:other:admin", "service:call:x"]));
    for (const c of CASES) {
      const anonymous = await call(url, c);
      assert.equal(anonymous.status, 401, `${c.method} ${c.path} without a token`);
      assert.equal(anonymous.body.error?.code ?? "UNAUTHENTICATED", "UNAUTHENTICATED");
      assert.match(anonymous.headers.get("www-authenticate") ?? "", /^Bearer/);

      const denied = await call(url, c, unrelated);
      assert.equal(denied.status, 403, `${c.method} ${c.path} without its permission`);
      assert.equal(denied.body.error.code, "FORBIDDEN");

      for (const permission of c.allowedBy) {
        // Setup again what a previous allowed call may have deleted.
        await call(url, { method: "PUT", path: "/api/state/p1/k", body: '{"value":"1"}' }, admin);
        await call(url, { method: "PUT", path: "/api/state/p1/a", body: '{"value":"1"}' }, admin);
        const allowed = await call(url, c, bearer(await tokenWith([permission])));
        assert.ok(
          allowed.status !== 401 && allowed.status !== 403,
          `${c.method} ${c.path} with ${permission}: ${allowed.status} ${
            JSON.stringify(allowed.body)
          }`,
        );
        if (c.path === "/api/state/p1") {
          await call(url, { method: "PUT", path: "/api/state/p1" }, admin);
        }
      }
    }
    // Open to everyone: health, the OpenAPI document, the dashboard, login.
    for (const path of ["/healthz", "/api/openapi.json", "/"]) {
      assert.equal((await call(url, { method: "GET", path })).status, 200, path);
    }
  });
});

Deno.test("scoped grants reach their scope only; the generic bridge is no way around them", async () => {
  await withSecuredSystem(async ({ url }) => {
    const admin = bearer(await tokenWith(["*"]));
    await call(url, { method: "PUT", path: "/api/state/mine/k", body: '{"value":"m"}' }, admin);
    await call(url, { method: "PUT", path: "/api/state/theirs/k", body: '{"value":"t"}' }, admin);
    const reader = bearer(
      await tokenWith(["state:scope:mine:read", "service:call:org.plantd.State"]),
    );
    assert.equal(
      (await call(url, { method: "GET", path: "/api/state/mine/k" }, reader)).status,
      200,
    );
    assert.equal(
      (await call(url, { method: "GET", path: "/api/state/theirs/k" }, reader)).status,
      403,
    );
    assert.equal(
      (await call(url, { method: "PUT", path: "/api/state/mine/k", body: '{"value":"x"}' }, reader))
        .status,
      403,
    );
    // Through /api/services the same rules apply to org.plantd.State.
    const bridge = (op: string, request: object) =>
      call(url, {
        method: "POST",
        path: `/api/services/${STATE_SERVICE}/${op}`,
        body: JSON.stringify(request),
      }, reader);
    const read = await bridge("state-get", { service: "mine", key: "k" });
    assert.equal(read.status, 200);
    assert.equal(read.body.frames[0].json.data.value, "m");
    assert.equal((await bridge("state-get", { service: "theirs", key: "k" })).status, 403);
    assert.equal(
      (await bridge("state-set", { service: "mine", key: "k", value: "x" })).status,
      403,
    );
    // Nothing changed.
    const after = await call(url, { method: "GET", path: "/api/state/mine/k" }, admin);
    assert.equal(after.body.value, "m");
    // Each denial is in the audit log, with who, what and from where.
    const denied = await call(
      url,
      { method: "GET", path: "/api/audit?action=access.denied" },
      admin,
    );
    assert.equal(denied.body.events.length, 4, JSON.stringify(denied.body));
    for (const event of denied.body.events) {
      assert.match(event.actor, /^user:t-/);
      assert.equal(event.outcome, "denied");
      assert.equal(event.ip, "127.0.0.1");
      assert.ok(event.details.needs);
    }
  });
});

Deno.test("expired, tampered, foreign and malformed credentials get 401 and are audited", async () => {
  await withSecuredSystem(async ({ url }) => {
    const good = await tokenWith(["*"]);
    const [h, p, s] = good.split(".");
    // Past the verifier's clock skew (jwt_clock_skew_s, 60 s).
    const expired = await tokenWith(["*"], { ttlSeconds: -120 });
    const cases: Record<string, Record<string, string>> = {
      expired: bearer(expired),
      tampered: bearer(`${h}.${p}x.${s}`),
      "bad signature": bearer(`${h}.${p}.${s!.slice(0, -2)}AA`),
      garbage: bearer("garbage"),
      "not bearer": { authorization: "Basic YTpi" },
      "unknown API key": {
        "x-api-key": "pk_AAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
      },
    };
    for (const [name, headers] of Object.entries(cases)) {
      const reply = await call(url, { method: "GET", path: "/api/state" }, headers);
      assert.equal(reply.status, 401, name);
      assert.equal(reply.body.error.code, "UNAUTHENTICATED", name);
    }
    const audit = await call(
      url,
      { method: "GET", path: "/api/audit?action=auth.failure&limit=100" },
      bearer(good),
    );
    assert.equal(audit.status, 200);
    assert.ok(audit.body.events.length >= Object.keys(cases).length, JSON.stringify(audit.body));
    assert.ok(audit.body.events.every((e: any) => e.outcome === "failure" && e.ip !== ""));
  });
});

Deno.test("users log in, refresh (rotating the refresh token) and log out; cookies work with CSRF checks", async () => {
  await withSecuredSystem(async ({ url }) => {
    const admin = bearer(await tokenWith(["*"], { sub: "user:root" }));
    const created = await call(url, {
      method: "POST",
      path: "/api/auth/users",
      body: JSON.stringify({ username: "ada", password: "correct horse", roles: ["viewer"] }),
    }, admin);
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.password_hash, undefined);

    const wrong = await call(url, {
      method: "POST",
      path: "/api/auth/login",
      body: JSON.stringify({ username: "ada", password: "wrong password" }),
    });
    assert.equal(wrong.status, 401);

    const login = await fetch(`${url}/api/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "ada", password: "correct horse" }),
    });
    assert.equal(login.status, 200);
    const tokens = await login.json();
    const cookies = login.headers.getSetCookie();
    assert.ok(cookies.some((c) => /^plantd_access=.*HttpOnly.*SameSite=Strict/i.test(c)));
    assert.ok(cookies.some((c) => /^plantd_refresh=.*Path=\/api\/auth/i.test(c)));

    const me = await call(
      url,
      { method: "GET", path: "/api/auth/me" },
      bearer(tokens.access_token),
    );
    assert.equal(me.body.name, "ada");
    assert.ok(me.body.permissions.includes("state:data:read"));
    // A viewer reads but does not write.
    await call(url, { method: "PUT", path: "/api/state/s/k", body: '{"value":"1"}' }, admin);
    assert.equal(
      (await call(url, { method: "GET", path: "/api/state/s/k" }, bearer(tokens.access_token)))
        .status,
      200,
    );
    assert.equal(
      (await call(
        url,
        { method: "PUT", path: "/api/state/s/k", body: '{"value":"2"}' },
        bearer(tokens.access_token),
      )).status,
      403,
    );

    // The cookie authenticates; a write with it needs the gateway's own origin.
    const cookie = cookies.map((c) => c.split(";")[0]).join("; ");
    assert.equal(
      (await call(url, { method: "GET", path: "/api/state/s/k" }, { cookie })).status,
      200,
    );
    const origin = new URL(url).origin;
    const crossSite = await call(
      url,
      { method: "PUT", path: "/api/state/s/k", body: '{"value":"3"}' },
      { cookie, origin: "https://evil.example" },
    );
    assert.equal(crossSite.status, 403);
    assert.match(crossSite.body.error.message, /Cross-site/);
    const noOrigin = await call(url, { method: "PUT", path: "/api/state/s" }, { cookie });
    assert.equal(noOrigin.status, 403);
    // Same origin: refused only for want of the permission (viewer), not as CSRF.
    const sameSite = await call(
      url,
      { method: "PUT", path: "/api/state/s/k", body: '{"value":"3"}' },
      { cookie, origin },
    );
    assert.equal(sameSite.status, 403);
    assert.doesNotMatch(sameSite.body.error.message, /Cross-site/);

    // Refresh rotates: the new token works, the old one does not any more (grace off here).
    const refresh = (token: string) =>
      call(url, {
        method: "POST",
        path: "/api/auth/refresh",
        body: JSON.stringify({ refresh_token: token }),
      });
    const refreshed = await refresh(tokens.refresh_token);
    assert.equal(refreshed.status, 200);
    assert.notEqual(refreshed.body.refresh_token, tokens.refresh_token);
    assert.equal((await refresh(tokens.refresh_token)).status, 401);
    // Logout ends the session.
    await call(url, {
      method: "POST",
      path: "/api/auth/logout",
      body: JSON.stringify({ refresh_token: refreshed.body.refresh_token }),
    });
    assert.equal((await refresh(refreshed.body.refresh_token)).status, 401);

    // A disabled user cannot log in.
    await call(url, {
      method: "PATCH",
      path: "/api/auth/users/ada",
      body: JSON.stringify({ disabled: true }),
    }, admin);
    const disabled = await call(url, {
      method: "POST",
      path: "/api/auth/login",
      body: JSON.stringify({ username: "ada", password: "correct horse" }),
    });
    assert.equal(disabled.status, 401);

    const events = await call(url, { method: "GET", path: "/api/audit?limit=1000" }, admin);
    const actions = events.body.events.map((e: any) => e.action);
    for (const action of ["admin.user.create", "auth.login", "auth.failure", "admin.user.update"]) {
      assert.ok(actions.includes(action), `${action} in ${actions}`);
    }
    assert.ok(
      events.body.events.some((e: any) => e.action === "state.set" && e.actor === "user:root"),
    );
  }, { gateway: { refresh_reuse_grace_s: 0 } }); // the old token at once is reuse, no grace
});

Deno.test("API keys act with their roles until revoked; custom roles grant what they list", async () => {
  await withSecuredSystem(async ({ url }) => {
    const admin = bearer(await tokenWith(["*"]));
    const role = await call(url, {
      method: "PUT",
      path: "/api/auth/roles/line1",
      body: JSON.stringify({ permissions: ["state:scope:line1:write", "state:scope:line1:read"] }),
    }, admin);
    assert.equal(role.status, 200);
    const made = await call(url, {
      method: "POST",
      path: "/api/auth/api-keys",
      body: JSON.stringify({ name: "plc-7", roles: ["line1"] }),
    }, admin);
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const key = { "x-api-key": made.body.key };
    assert.equal(
      (await call(
        url,
        { method: "PUT", path: "/api/state/line1/speed", body: '{"value":"9"}' },
        key,
      ))
        .status,
      200,
    );
    assert.equal(
      (await call(url, { method: "GET", path: "/api/state/line1/speed" }, bearer(made.body.key)))
        .body.value,
      "9",
    );
    assert.equal(
      (await call(
        url,
        { method: "PUT", path: "/api/state/line2/speed", body: '{"value":"9"}' },
        key,
      ))
        .status,
      403,
    );
    const listed = await call(url, { method: "GET", path: "/api/auth/api-keys" }, admin);
    assert.ok(!JSON.stringify(listed.body).includes(made.body.key.split(".")[1]), "no secrets");
    const revoked = await call(
      url,
      { method: "DELETE", path: `/api/auth/api-keys/${made.body.api_key.id}` },
      admin,
    );
    assert.equal(revoked.status, 200);
    assert.equal(
      (await call(url, { method: "GET", path: "/api/state/line1/speed" }, key)).status,
      401,
    );
  });
});

Deno.test("the state worker checks the token field itself (Go plantd clients)", async () => {
  await withSecuredSystem(async ({ brokerEndpoint }) => {
    const client = new MdpClient(brokerEndpoint, { timeoutMs: 5000 });
    try {
      const ask = async (op: string, request: object) =>
        JSON.parse(text((await client.request(STATE_SERVICE, [op, JSON.stringify(request)]))[0]!));
      assert.deepEqual(await ask("state-set", { service: "s", key: "k", value: "v" }), {
        error: "AUTHENTICATION_REQUIRED",
        message: "Authentication token required",
      });
      assert.deepEqual(await ask("state-set", { service: "s", key: "k", value: "v", token: "x" }), {
        error: "AUTHENTICATION_FAILED",
        message: "Invalid or expired token",
      });
      const reader = await tokenWith(["state:data:read"]);
      assert.deepEqual(
        await ask("state-set", { service: "s", key: "k", value: "v", token: reader }),
        { error: "PERMISSION_DENIED", message: "Insufficient permissions" },
      );
      // Go plantd's defect: get/set needed admin. Here data:write is enough.
      const writer = await tokenWith(["state:data:write"]);
      const set = await ask("state-set", { service: "s", key: "k", value: "v", token: writer });
      assert.equal(set.success, true);
      const got = await ask("state-get", { service: "s", key: "k", token: reader });
      assert.equal(got.data.value, "v");
      // Health needs no token.
      assert.equal((await ask("health", {})).success, true);
    } finally {
      await client.close();
    }
  });
});

Deno.test("rate limits: 429 with Retry-After past the limit, served again in the next window", async () => {
  await withSecuredSystem(async ({ url }) => {
    const token = bearer(await tokenWith(["*"]));
    let limited: { status: number; headers: Headers; body: any } | undefined;
    for (let i = 0; i < 20 && !limited; i++) {
      const reply = await call(url, { method: "GET", path: "/api/state" }, token);
      if (reply.status === 429) limited = reply;
      else assert.equal(reply.status, 200);
    }
    assert.ok(limited, "the limit was reached");
    assert.equal(limited.body.error.code, "RATE_LIMITED");
    assert.ok(Number(limited.headers.get("retry-after")) >= 1);
    // The window ends: requests are served again.
    for (;;) {
      const reply = await call(url, { method: "GET", path: "/api/state" }, token);
      if (reply.status === 200) break;
      assert.equal(reply.status, 429);
      await new Promise((r) => setTimeout(r, Number(reply.headers.get("retry-after")) * 250));
    }
    const metrics = await call(url, { method: "GET", path: "/metrics" }, token);
    assert.match(metrics.body, /gateway_rate_limited_total\{kind="(ip|token)"\} [1-9]/);
  }, { gateway: { rate_limit_per_token: 5, rate_limit_per_ip: 0, rate_limit_window_ms: 1000 } });
});

Deno.test("per-address limit applies before authentication: a flood of bad tokens is limited too", async () => {
  await withSecuredSystem(async ({ url }) => {
    const statuses = new Set<number>();
    for (let i = 0; i < 8; i++) {
      statuses.add((await call(url, { method: "GET", path: "/api/state" }, bearer("bad"))).status);
    }
    assert.deepEqual([...statuses].sort(), [401, 429]);
  }, { gateway: { rate_limit_per_ip: 4, rate_limit_window_ms: 60_000 } });
});

Deno.test("a stale session cookie does not stand in the way of logging in again", async () => {
  await withSecuredSystem(async ({ url }) => {
    const admin = bearer(await tokenWith(["*"]));
    await call(url, {
      method: "POST",
      path: "/api/auth/users",
      body: JSON.stringify({ username: "bo", password: "long password", roles: ["viewer"] }),
    }, admin);
    const stale = { cookie: `plantd_access=${await tokenWith(["*"], { ttlSeconds: -120 })}` };
    // Protected routes: 401 as for anyone without a credential.
    assert.equal((await call(url, { method: "GET", path: "/api/state" }, stale)).status, 401);
    // Login still works with the stale cookie in the jar.
    const login = await call(url, {
      method: "POST",
      path: "/api/auth/login",
      body: JSON.stringify({ username: "bo", password: "long password" }),
    }, { ...stale, origin: new URL(url).origin });
    assert.equal(login.status, 200, JSON.stringify(login.body));
  });
});
