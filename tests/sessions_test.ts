/**
 * Logins that cannot stall the gateway, and revocation that takes effect:
 * login limits per address and per username, the hash pool's cap, access
 * tokens and API keys void at once when their user is disabled or deleted
 * (on this gateway and on a second one sharing Redis and the auth database),
 * a disabled user's WebSocket closed with 4003, logout ending the access
 * token, and a reused refresh token revoking its whole family.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { type GatewayConfig, gatewayConfig } from "../config/components.ts";
import { ConfigError, loadConfig } from "../config/load.ts";
import { randomPrefix, TEST_REDIS_URL } from "./_redis.ts";
import { CLOSE } from "../gateway/ws.ts";
import { startGateway } from "../roles/gateway.ts";
import { bearer, call, SECRET, tokenWith, withSecuredSystem } from "./_auth.ts";
import { waitFor } from "./_helpers.ts";
import { freshDatabase } from "./_postgres.ts";
import type { System } from "./_system.ts";
import { openWs } from "./_ws.ts";

const login = (url: string, username: string, password: string, from?: string) =>
  call(
    url,
    "POST",
    "/api/auth/login",
    { username, password },
    from ? { "x-forwarded-for": from } : {},
  );

const PASSWORD = "correct horse battery";

async function createUser(
  url: string,
  admin: Record<string, string>,
  username: string,
  roles: string[],
) {
  const created = await call(url, "POST", "/api/auth/users", {
    username,
    password: PASSWORD,
    roles,
  }, admin);
  assert.equal(created.status, 201, JSON.stringify(created.body));
}

/** A token of a logged-in user, and its refresh token. */
async function loggedIn(
  url: string,
  username: string,
): Promise<{ access: string; refresh: string }> {
  const reply = await login(url, username, PASSWORD);
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  return { access: reply.body.access_token, refresh: reply.body.refresh_token };
}

const me = (url: string, token: string) =>
  call(url, "GET", "/api/auth/me", undefined, bearer(token));

Deno.test("login limits: a rotating-username flood is stopped per address, one username per username whatever the address", async () => {
  await withSecuredSystem(async ({ url }) => {
    const admin = bearer(await tokenWith(["*"], { sub: "user:root" }));
    // The limits count in fixed windows of a minute aligned on the clock: a
    // run that straddles a minute's end sees its counts restart (on a loaded
    // machine the hashes take seconds). Such a run is done again, with new
    // addresses and a new user; one minute later it cannot straddle again.
    for (let run = 0;; run++) {
      const minute = Math.floor(Date.now() / 60_000);
      try {
        await loginLimits(url, admin, run);
        return;
      } catch (error) {
        if (run > 0 || Math.floor(Date.now() / 60_000) === minute) throw error;
      }
    }
  }, {
    gateway: { trusted_proxies: ["127.0.0.1"], login_per_ip: 4, login_per_user: 3 },
  });
});

/** The login limits' checks, with addresses and a user of run `run`. */
async function loginLimits(url: string, admin: Record<string, string>, run: number) {
  const user = `ada${run}`;
  const from = (n: number) => `10.${run}.0.${n}`;
  await createUser(url, admin, user, ["viewer"]);
  // Rotating usernames from one address: the address's limit stops them.
  for (let i = 0; i < 4; i++) {
    assert.equal((await login(url, `nobody-${i}`, "guess", from(1))).status, 401);
  }
  const stopped = await login(url, "nobody-4", "guess", from(1));
  assert.equal(stopped.status, 429);
  assert.match(stopped.body.error.message, /from this address/);
  assert.ok(Number(stopped.headers.get("retry-after")) >= 1);
  // Another address is not affected.
  assert.equal((await login(url, user, PASSWORD, from(2))).status, 200);
  // One username from many addresses: its own limit (3) stops it.
  assert.equal((await login(url, user, "guess", from(3))).status, 401);
  assert.equal((await login(url, user, "guess", from(4))).status, 401);
  const locked = await login(url, user, PASSWORD, from(5));
  assert.equal(locked.status, 429);
  assert.match(locked.body.error.message, /for this user/);
}

Deno.test("logins hash in the pool: past hash_max_pending a login gets 503 with Retry-After at once", async () => {
  await withSecuredSystem(async ({ url }) => {
    const replies = await Promise.all(
      Array.from({ length: 6 }, (_, i) => login(url, `ghost-${i}`, "guess", `10.1.0.${i}`)),
    );
    const statuses = replies.map((r) => r.status);
    assert.ok(statuses.includes(503), `a login refused while the pool is full: ${statuses}`);
    assert.ok(statuses.includes(401), `the others checked: ${statuses}`);
    const busy = replies.find((r) => r.status === 503)!;
    assert.equal(busy.headers.get("retry-after"), "1");
    assert.match(busy.body.error.message, /Too many logins waiting/);
  }, { gateway: { trusted_proxies: ["127.0.0.1"], hash_max_pending: 1 } });
});

Deno.test("disabling, deleting or re-roling a user voids its access tokens at once; logout voids the session's", async () => {
  await withSecuredSystem(async ({ url }) => {
    const admin = bearer(await tokenWith(["*"], { sub: "user:root" }));
    await createUser(url, admin, "ada", ["viewer"]);
    await createUser(url, admin, "bob", ["viewer"]);
    await createUser(url, admin, "cy", ["viewer"]);

    const ada = await loggedIn(url, "ada");
    assert.equal((await me(url, ada.access)).status, 200);
    assert.equal(
      (await call(url, "PATCH", "/api/auth/users/ada", { disabled: true }, admin)).status,
      200,
    );
    const refused = await me(url, ada.access);
    assert.equal(refused.status, 401);
    assert.match(refused.body.error.message, /revoked/);
    // Enabled again, the old token stays void (the epoch moved); a new login works.
    await call(url, "PATCH", "/api/auth/users/ada", { disabled: false }, admin);
    assert.equal((await me(url, ada.access)).status, 401);
    assert.equal((await me(url, (await loggedIn(url, "ada")).access)).status, 200);

    // A role change ends the user's sessions too.
    const bob = await loggedIn(url, "bob");
    assert.equal((await me(url, bob.access)).status, 200);
    await call(url, "PATCH", "/api/auth/users/bob", { roles: ["operator"] }, admin);
    assert.equal((await me(url, bob.access)).status, 401);

    // Logout ends that session's access token, and only that session's.
    const cy1 = await loggedIn(url, "cy");
    const cy2 = await loggedIn(url, "cy");
    await call(url, "POST", "/api/auth/logout", { refresh_token: cy1.refresh });
    assert.equal((await me(url, cy1.access)).status, 401);
    assert.equal((await me(url, cy2.access)).status, 200);

    // Deleted: void, and it cannot come back by being created again.
    await call(url, "DELETE", "/api/auth/users/cy", undefined, admin);
    assert.equal((await me(url, cy2.access)).status, 401);
    await createUser(url, admin, "cy", ["viewer"]);
    assert.equal((await me(url, cy2.access)).status, 401);
    // The new cy is not taken for the deleted one.
    assert.equal((await me(url, (await loggedIn(url, "cy")).access)).status, 200);
  });
});

Deno.test("API keys of a disabled or deleted user stop working at once", async () => {
  await withSecuredSystem(async ({ url }) => {
    const root = bearer(await tokenWith(["*"], { sub: "user:root" }));
    await createUser(url, root, "boss", ["admin"]);
    const boss = bearer((await loggedIn(url, "boss")).access);
    const made = await call(
      url,
      "POST",
      "/api/auth/api-keys",
      { name: "robot", roles: ["viewer"] },
      boss,
    );
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const key = { "x-api-key": made.body.key };
    assert.equal((await call(url, "GET", "/api/auth/me", undefined, key)).status, 200);
    await call(url, "PATCH", "/api/auth/users/boss", { disabled: true }, root);
    assert.equal((await call(url, "GET", "/api/auth/me", undefined, key)).status, 401);
    await call(url, "PATCH", "/api/auth/users/boss", { disabled: false }, root);
    assert.equal((await call(url, "GET", "/api/auth/me", undefined, key)).status, 200);
    await call(url, "DELETE", "/api/auth/users/boss", undefined, root);
    assert.equal((await call(url, "GET", "/api/auth/me", undefined, key)).status, 401);
  });
});

Deno.test("a disabled user's open WebSocket is closed with 4003 and gets no further change", async () => {
  await withSecuredSystem(async ({ url }) => {
    const admin = bearer(await tokenWith(["*"], { sub: "user:root" }));
    await createUser(url, admin, "ada", ["viewer"]);
    await call(url, "PUT", "/api/state/plant", undefined, admin);
    const ada = await loggedIn(url, "ada");
    const ws = await openWs(url, bearer(ada.access));
    // A second connection authenticated by its first message.
    const ws2 = await openWs(url);
    try {
      ws2.send({ type: "auth", token: ada.access });
      await ws2.nextOf("authenticated");
      for (const c of [ws, ws2]) {
        c.send({ type: "watch", id: "w", scope: "plant" });
        await c.nextOf("subscribed", "w");
      }
      await call(url, "PUT", "/api/state/plant/valve", { value: "OPEN" }, admin);
      for (const c of [ws, ws2]) await c.nextOf("change", "w");

      await call(url, "PATCH", "/api/auth/users/ada", { disabled: true }, admin);
      for (const c of [ws, ws2]) {
        await waitFor(() => c.closed !== undefined, { what: "the socket closed", timeoutMs: 2000 });
        assert.equal(c.closed!.code, CLOSE.REVOKED);
        assert.equal(c.closed!.reason, "access revoked");
      }
      await call(url, "PUT", "/api/state/plant/valve", { value: "SHUT" }, admin);
      assert.equal(ws.all.filter((m) => m.type === "change").length, 1);
      // The revoked token cannot open a new one.
      const again = await openWs(url, bearer(ada.access)).catch((e) => e);
      assert.ok(again instanceof Error || again.welcome?.authenticated === false);
      if (!(again instanceof Error)) await again.close();
    } finally {
      await ws.close();
      await ws2.close();
    }
  });
});

for (const store of ["memory", "redis", "auth_db"] as const) {
  Deno.test(`a rotated refresh token presented again revokes its whole family (${store} sessions)`, async () => {
    await withSecuredSystem(
      async ({ url }) => {
        const admin = bearer(await tokenWith(["*"], { sub: "user:root" }));
        await createUser(url, admin, "ada", ["viewer"]);
        const first = await loggedIn(url, "ada");
        const other = await loggedIn(url, "ada"); // another login: not of the family
        const refresh = (token: string) =>
          call(url, "POST", "/api/auth/refresh", { refresh_token: token });
        const second = await refresh(first.refresh);
        assert.equal(second.status, 200);
        const third = await refresh(second.body.refresh_token);
        assert.equal(third.status, 200);
        assert.equal((await me(url, third.body.access_token)).status, 200);

        // The thief (or the victim) presents the rotated token: the family ends.
        assert.equal((await refresh(first.refresh)).status, 401);
        assert.equal((await refresh(third.body.refresh_token)).status, 401, "the newest token too");
        assert.equal((await me(url, third.body.access_token)).status, 401, "and its access token");
        assert.equal((await me(url, first.access)).status, 401);
        // Another login of the same user goes on.
        assert.equal((await me(url, other.access)).status, 200);
        assert.equal((await refresh(other.refresh)).status, 200);

        const audit = await call(
          url,
          "GET",
          "/api/audit?action=auth.refresh.reuse",
          undefined,
          admin,
        );
        assert.equal(audit.body.events.length, 1);
        assert.equal(audit.body.events[0].actor, "user:ada");
      },
      // No grace: any reuse is theft here (the grace has a test of its own, below).
      store === "redis"
        ? {
          gateway: {
            redis_url: TEST_REDIS_URL,
            redis_key_prefix: randomPrefix(),
            refresh_reuse_grace_s: 0,
          },
        }
        // Rows of the libSQL auth database (the default on PostgreSQL).
        : store === "auth_db"
        ? { gateway: { session_store: "auth_db", refresh_reuse_grace_s: 0 } }
        : { gateway: { refresh_reuse_grace_s: 0 } },
    );
  });
}

for (const store of ["memory", "redis", "auth_db", "auth_db_pg"] as const) {
  Deno.test(`two tabs refreshing with one refresh token at once both stay logged in; reuse after the grace still ends the login (${store} sessions)`, async () => {
    const db = store === "auth_db_pg" ? await freshDatabase() : undefined;
    const grace = 3;
    try {
      await withSecuredSystem(
        async ({ url }) => {
          const admin = bearer(await tokenWith(["*"], { sub: "user:root" }));
          await createUser(url, admin, "ada", ["viewer"]);
          const first = await loggedIn(url, "ada");
          const refresh = (token: string) =>
            call(url, "POST", "/api/auth/refresh", { refresh_token: token });
          // Two tabs, one cookie, the same moment: both get tokens of the login.
          const tabs = await Promise.all([refresh(first.refresh), refresh(first.refresh)]);
          const rotated = Date.now();
          assert.deepEqual(tabs.map((t) => t.status), [200, 200], JSON.stringify(tabs));
          for (const tab of tabs) assert.equal((await me(url, tab.body.access_token)).status, 200);
          assert.notEqual(tabs[0]!.body.refresh_token, tabs[1]!.body.refresh_token);
          assert.equal((await me(url, first.access)).status, 200, "the login goes on");
          const graced = await call(
            url,
            "GET",
            "/api/audit?action=auth.refresh.grace",
            undefined,
            admin,
          );
          assert.equal(graced.body.events.length, 1);
          // Each tab's new token rotates on.
          const next = await refresh(tabs[0]!.body.refresh_token);
          assert.equal(next.status, 200);

          // The old token once the grace has passed: theft, the whole login ends.
          await waitFor(() => Date.now() > rotated + grace * 1000 + 50, {
            what: "the grace to pass",
          });
          assert.equal((await refresh(first.refresh)).status, 401);
          for (const token of [next.body.access_token, tabs[1]!.body.access_token]) {
            assert.equal((await me(url, token)).status, 401);
          }
          assert.equal((await refresh(tabs[1]!.body.refresh_token)).status, 401);
          const reuse = await call(
            url,
            "GET",
            "/api/audit?action=auth.refresh.reuse",
            undefined,
            admin,
          );
          assert.equal(reuse.body.events.length, 1);
        },
        {
          gateway: {
            refresh_reuse_grace_s: grace,
            ...(store === "redis"
              ? { redis_url: TEST_REDIS_URL, redis_key_prefix: randomPrefix() }
              : store === "auth_db"
              ? { session_store: "auth_db" as const }
              : store === "auth_db_pg"
              ? { auth_db: db!.url }
              : {}),
          },
        },
      );
    } finally {
      await db?.drop();
    }
  });
}

/** A second gateway on the system's broker and buses, sharing `shared` (auth database, Redis). */
async function secondGateway(system: System, shared: Partial<GatewayConfig>) {
  return await startGateway(
    {
      ...loadConfig(gatewayConfig, { args: [], env: {} }),
      port: 0,
      broker_endpoint: system.brokerEndpoint,
      buses: system.backends,
      publish_buses: {},
      metrics_db: "",
      jwt_secret: SECRET,
      ...shared,
    },
    () => [],
    new Registry(),
  );
}

for (const redis of [true, false]) {
  Deno.test(`a token used after its user is disabled gets 401 on a second gateway (${redis ? "Redis: at once" : "no Redis: within the poll"})`, async () => {
    const dir = await Deno.makeTempDir();
    const shared: Partial<GatewayConfig> = {
      auth_db: `${dir}/auth.db`,
      ...(redis
        // Polling slowed right down: only the Redis announcement can be in time.
        ? {
          redis_url: TEST_REDIS_URL,
          redis_key_prefix: randomPrefix(),
          revocation_poll_ms: 600_000,
        }
        : { revocation_poll_ms: 200 }),
    };
    try {
      await withSecuredSystem(async (system) => {
        const b = await secondGateway(system, shared);
        try {
          const admin = bearer(await tokenWith(["*"], { sub: "user:root" }));
          await createUser(system.url, admin, "ada", ["viewer"]);
          const ada = await loggedIn(system.url, "ada");
          assert.equal((await me(b.url, ada.access)).status, 200);
          const ws = await openWs(b.url, bearer(ada.access));
          await call(system.url, "PATCH", "/api/auth/users/ada", { disabled: true }, admin);
          await waitFor(async () => (await me(b.url, ada.access)).status === 401, {
            what: "401 on the second gateway",
            timeoutMs: redis ? 1000 : 2000,
          });
          await waitFor(() => ws.closed !== undefined, {
            what: "the socket closed",
            timeoutMs: 2000,
          });
          assert.equal(ws.closed!.code, CLOSE.REVOKED);
        } finally {
          await b.close();
        }
      }, { gateway: shared });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("session_store redis without redis_url refuses to start, naming the key to set", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const started = await startGateway(
      {
        ...loadConfig(gatewayConfig, { args: [], env: {} }),
        port: 0,
        auth_db: `${dir}/auth.db`,
        metrics_db: "",
        session_store: "redis",
      },
      () => [],
      new Registry(),
    ).catch((error) => error);
    if (!(started instanceof Error)) await started.close();
    assert.ok(started instanceof ConfigError, String(started));
    assert.match(started.message, /session_store is redis: set redis_url/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
