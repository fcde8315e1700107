// deno-lint-ignore-file no-explicit-any -- the tests read JSON bodies of many shapes
/**
 * The auth database on PostgreSQL, shared by two gateway processes with one
 * Redis (issue 18's deployments): the first admin made by `user-add` against
 * the database, users, logins, API keys and revocations made through one
 * gateway honoured at once by the other (tokens and open WebSockets), and a
 * refresh token reused across the two ending its family. Then PostgreSQL
 * going away under a gateway (a TCP proxy in front of the real server):
 * logins and API-key checks answer 503 AUTH_STORE_UNAVAILABLE, /healthz
 * says so, and all works again when it returns. Real PostgreSQL and Redis,
 * a fresh database per test.
 */
import assert from "node:assert/strict";
import { CLOSE } from "../gateway/ws.ts";
import { bearer, call, SECRET, tokenWith } from "./_auth.ts";
import { spawnGateway } from "./_gateway_process.ts";
import { spawnWatched, waitFor } from "./_helpers.ts";
import { freshDatabase } from "./_postgres.ts";
import { deleteKeys, randomPrefix, TEST_REDIS_URL } from "./_redis.ts";
import { startSystem, type System } from "./_system.ts";
import { TcpProxy } from "./_tcp_proxy.ts";
import { openWs } from "./_ws.ts";

const PASSWORD = "correct horse battery";

const login = (url: string, username: string, password = PASSWORD) =>
  call(url, "POST", "/api/auth/login", { username, password });

async function loggedIn(url: string, username: string) {
  const reply = await login(url, username);
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  return { access: reply.body.access_token as string, refresh: reply.body.refresh_token as string };
}

const me = (url: string, headers: Record<string, string>) =>
  call(url, "GET", "/api/auth/me", undefined, headers);

const refresh = (url: string, token: string) =>
  call(url, "POST", "/api/auth/refresh", { refresh_token: token });

async function health(url: string): Promise<{ status: number; body: any }> {
  const response = await fetch(`${url}/healthz`);
  return { status: response.status, body: await response.json() };
}

const authCheck = (body: any) => body.checks.find((c: { name: string }) => c.name === "auth_db");

/** `main.ts user-add` in a process of its own, as an operator runs it. */
async function userAdd(authDb: string, username: string, roles: string): Promise<string> {
  const root = new URL("..", import.meta.url).pathname;
  const child = spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--config",
        `${root}deno.json`,
        `${root}main.ts`,
        "user-add",
        "--username",
        username,
        "--roles",
        roles,
        "--auth-db",
        authDb,
      ],
      env: { PLANTD_USER_PASSWORD: PASSWORD },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }),
  );
  const [status, out] = await Promise.all([
    child.status,
    new Response(child.process.stdout).text(),
  ]);
  assert.equal(status.code, 0, child.stderr());
  return out;
}

Deno.test("two gateway processes on one PostgreSQL auth database and one Redis agree on users, keys, revocations and refresh tokens", async () => {
  const db = await freshDatabase();
  const prefix = randomPrefix();
  // A password in the URL (trust auth ignores it): never shown by user-add or the gateways.
  const url = new URL(db.url);
  url.password = "s3cret-pass";
  const authDb = url.toString();
  // Polling slowed right down: only the database and Redis can make B learn in time.
  const shared = {
    auth_db: authDb,
    redis_url: TEST_REDIS_URL,
    redis_key_prefix: prefix,
    revocation_poll_ms: 600_000,
    // Any reuse ends the family here; the grace for two tabs is tested in sessions_test.ts.
    refresh_reuse_grace_s: 0,
  };
  let system: System | undefined;
  let b: Awaited<ReturnType<typeof spawnGateway>> | undefined;
  try {
    // The first admin, made before any gateway ran: user-add migrates the database itself.
    const added = await userAdd(authDb, "root", "admin");
    assert.match(added, /user root created in postgres:\/\/postgres:\*\*\*@/);
    assert.ok(!added.includes("s3cret-pass"));
    system = await startSystem({
      gateway: { jwt_secret: SECRET, ...shared },
      state: { jwt_secret: SECRET },
    });
    b = await spawnGateway(system, {
      PLANTD_GATEWAY_JWT_SECRET: SECRET,
      PLANTD_GATEWAY_AUTH_DB: authDb,
      PLANTD_REDIS_URL: TEST_REDIS_URL,
      PLANTD_GATEWAY_REDIS_KEY_PREFIX: prefix,
      PLANTD_GATEWAY_REVOCATION_POLL_MS: "600000",
      PLANTD_GATEWAY_REFRESH_REUSE_GRACE_S: "0",
      PLANTD_GATEWAY_LOG_LEVEL: "info",
    });
    const [A, B] = [system.url, b.url];
    for (const gateway of [A, B]) {
      assert.equal(authCheck((await health(gateway)).body)?.status, "UP");
    }
    // B says where its auth database is, the password hidden.
    assert.match(b.stderr(), /postgres postgres:\/\/postgres:\*\*\*@/);
    assert.ok(!b.stderr().includes("s3cret-pass"));

    const root = bearer((await loggedIn(A, "root")).access);
    // A user created through A logs in through B; its tokens work on both.
    for (const name of ["ada", "bob", "cy"]) {
      const created = await call(A, "POST", "/api/auth/users", {
        username: name,
        password: PASSWORD,
        roles: ["viewer"],
      }, root);
      assert.equal(created.status, 201, JSON.stringify(created.body));
    }
    const taken = await call(B, "POST", "/api/auth/users", {
      username: "ada",
      password: PASSWORD,
      roles: ["viewer"],
    }, root);
    assert.equal(taken.status, 409, "a name taken through A is taken through B");
    const adaOnB = await loggedIn(B, "ada");
    const adaOnA = await loggedIn(A, "ada");
    for (const gateway of [A, B]) {
      for (const token of [adaOnA.access, adaOnB.access]) {
        assert.equal((await me(gateway, bearer(token))).status, 200);
      }
    }
    // An API key made through A works through B.
    const made = await call(
      A,
      "POST",
      "/api/auth/api-keys",
      { name: "plc", roles: ["viewer"] },
      root,
    );
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const key = { "x-api-key": made.body.key };
    const keyOnB = await me(B, key);
    assert.equal(keyOnB.status, 200);
    assert.equal(keyOnB.body.kind, "apikey");

    // Disabled through A: refused through B at once, its WebSocket there closed.
    await call(A, "PUT", "/api/state/plant", undefined, root);
    const ws = await openWs(B, bearer(adaOnB.access));
    try {
      ws.send({ type: "watch", id: "w", scope: "plant" });
      await ws.nextOf("subscribed", "w");
      const disabled = await call(A, "PATCH", "/api/auth/users/ada", { disabled: true }, root);
      assert.equal(disabled.status, 200);
      await waitFor(async () => (await me(B, bearer(adaOnB.access))).status === 401, {
        what: "ada's token refused by B",
        timeoutMs: 2000,
      });
      await waitFor(() => ws.closed !== undefined, { what: "ada's socket on B closed" });
      assert.equal(ws.closed!.code, CLOSE.REVOKED);
      assert.equal((await me(B, bearer(adaOnA.access))).status, 401);
      assert.equal((await login(B, "ada")).status, 401, "a disabled user cannot log in on B");
    } finally {
      await ws.close();
    }
    // Role change and deletion through A: refused through B.
    const bob = await loggedIn(B, "bob");
    const cy = await loggedIn(B, "cy");
    await call(A, "PATCH", "/api/auth/users/bob", { roles: ["operator"] }, root);
    await call(A, "DELETE", "/api/auth/users/cy", undefined, root);
    await waitFor(async () => (await me(B, bearer(bob.access))).status === 401, {
      what: "bob's old token refused by B after his role changed",
      timeoutMs: 2000,
    });
    await waitFor(async () => (await me(B, bearer(cy.access))).status === 401, {
      what: "deleted cy refused by B",
      timeoutMs: 2000,
    });
    assert.equal((await refresh(B, bob.refresh)).status, 401, "bob's sessions ended");
    assert.equal((await me(B, key)).status, 200, "root's key is not touched");

    // A refresh token rotated through B and presented again through A ends its family.
    const eve = await call(A, "POST", "/api/auth/users", {
      username: "eve",
      password: PASSWORD,
      roles: ["viewer"],
    }, root);
    assert.equal(eve.status, 201);
    const first = await loggedIn(A, "eve");
    const other = await loggedIn(A, "eve"); // another login, not of the family
    const second = await refresh(B, first.refresh);
    assert.equal(second.status, 200);
    assert.equal((await refresh(A, first.refresh)).status, 401, "reuse through A");
    assert.equal((await refresh(B, second.body.refresh_token)).status, 401, "the newest too");
    for (const gateway of [A, B]) {
      await waitFor(
        async () => (await me(gateway, bearer(second.body.access_token))).status === 401,
        { what: `the family's access token refused by ${gateway}`, timeoutMs: 2000 },
      );
    }
    assert.equal((await me(B, bearer(other.access))).status, 200);
    const audit = await call(B, "GET", "/api/audit?action=auth.refresh.reuse", undefined, root);
    assert.equal(audit.body.events.length, 1);
    assert.equal(audit.body.events[0].actor, "user:eve");

    // One refresh token presented at both gateways at once: one rotation, the other is reuse.
    for (let round = 0; round < 5; round++) {
      const login = await loggedIn(A, "eve");
      const replies = await Promise.all([refresh(A, login.refresh), refresh(B, login.refresh)]);
      const statuses = replies.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, 401], `round ${round}: ${statuses}`);
    }
    assert.ok(!b.stderr().includes("s3cret-pass"));
  } finally {
    await b?.stop();
    await system?.stop();
    await deleteKeys(TEST_REDIS_URL, prefix);
    await db.drop();
  }
});

Deno.test("PostgreSQL away: logins and API-key checks get 503 AUTH_STORE_UNAVAILABLE, /healthz says so, all works when it returns", async () => {
  const db = await freshDatabase();
  const server = new URL(db.url);
  const proxy = new TcpProxy(
    { hostname: server.hostname, port: Number(server.port || 5432) },
    undefined,
    false,
  );
  const viaProxy = new URL(db.url);
  viaProxy.port = String(proxy.port);
  let system: System | undefined;
  try {
    // The gateway starts while the database is away: it waits for it rather than exiting.
    system = await startSystem({
      gateway: { jwt_secret: SECRET, auth_db: viaProxy.toString() },
      state: { jwt_secret: SECRET },
    });
    const url = system.url;
    const expectAway = async () => {
      const refused = await login(url, "ada");
      assert.equal(refused.status, 503, JSON.stringify(refused.body));
      assert.equal(refused.body.error.code, "AUTH_STORE_UNAVAILABLE");
      assert.match(refused.body.error.message, /^auth database unavailable: \S/);
      assert.equal(refused.headers.get("retry-after"), "1");
      const key = await me(url, { "x-api-key": `pk_${"a".repeat(12)}.${"b".repeat(43)}` });
      assert.equal(key.status, 503);
      assert.equal(key.body.error.code, "AUTH_STORE_UNAVAILABLE");
      await waitFor(async () => authCheck((await health(url)).body)?.status === "DOWN", {
        what: "auth_db DOWN on /healthz",
      });
      const check = authCheck((await health(url)).body);
      assert.match(check.output, /auth database unavailable/);
      assert.equal(check.required, false);
    };
    await expectAway();

    proxy.resume();
    const admin = bearer(await tokenWith(["*"], { sub: "user:root" }));
    const created = await call(url, "POST", "/api/auth/users", {
      username: "ada",
      password: PASSWORD,
      roles: ["viewer"],
    }, admin);
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const ada = await loggedIn(url, "ada");
    assert.equal((await me(url, bearer(ada.access))).status, 200);
    // A user whose token this gateway has not checked yet.
    const bob = await call(url, "POST", "/api/auth/users", {
      username: "bob",
      password: PASSWORD,
      roles: ["viewer"],
    }, admin);
    assert.equal(bob.status, 201);
    const unseen = await loggedIn(url, "bob");
    await waitFor(async () => authCheck((await health(url)).body)?.status === "UP", {
      what: "auth_db UP",
    });

    // Away with connections open: 503 again; a token this gateway checked before goes on.
    await proxy.pause();
    await expectAway();
    assert.equal((await me(url, bearer(ada.access))).status, 200);
    // A WebSocket authenticating meanwhile is told why, and not closed as if it had guessed.
    const ws = await openWs(url);
    try {
      for (let i = 0; i < 6; i++) {
        ws.send({ type: "auth", id: `a${i}`, token: unseen.access });
        const error = await ws.nextOf("error", `a${i}`);
        assert.equal(error.code, "AUTH_STORE_UNAVAILABLE");
      }
      assert.equal(ws.closed, undefined);

      // Back: logins work again, the socket authenticates, health is UP.
      proxy.resume();
      ws.send({ type: "auth", id: "again", token: unseen.access });
      await ws.nextOf("authenticated", "again");
    } finally {
      await ws.close();
    }
    await waitFor(async () => (await login(url, "ada")).status === 200, {
      what: "a login once the database is back",
    });
    await waitFor(async () => authCheck((await health(url)).body)?.status === "UP", {
      what: "auth_db UP again",
    });
  } finally {
    await system?.stop();
    await proxy.pause();
    await db.drop();
  }
});
