// deno-lint-ignore-file no-explicit-any -- the tests read JSON bodies of many shapes
/**
 * Issue 16, item 2: a fake `org.plantd.State` worker harvests what the
 * gateway sends it. With call credentials it finds no admin token and no API
 * key, only credentials that the gateway refuses as bearers and that a real
 * state worker takes once, for the request they were made for, for seconds.
 */
import assert from "node:assert/strict";
import { decodeJwt, decodeProtectedHeader, exportPKCS8, exportSPKI, generateKeyPair } from "jose";
import { CALL_TYP, serviceTokenCheck } from "../auth/call_credentials.ts";
import { TokenIssuer } from "../auth/tokens.ts";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { openStateDatabase } from "../state/db.ts";
import { STATE_SERVICE, StateOperations } from "../state/operations.ts";
import { StateStore } from "../state/store.ts";
import type { Frames } from "../transport/frames.ts";
import { bearer, SECRET, tokenWith, withSecuredSystem } from "./_auth.ts";
import { waitFor } from "./_helpers.ts";
import type { System } from "./_system.ts";
import { openWs } from "./_ws.ts";

/** A request the fake worker received: its operation, its JSON, and all of its text. */
interface Harvested {
  operation: string;
  request: Record<string, any>;
  raw: string;
  frames: string[];
}

/** Answers the way the real service would, enough for the gateway to be satisfied. */
function fakeReply(operation: string, request: Record<string, any>): string {
  const data: Record<string, unknown> = operation === "state-set-many"
    ? {
      revisions: Object.fromEntries(Object.keys(request.entries ?? {}).map((k) => [k, 1])),
      scope: request.service,
      status: "set",
    }
    : operation === "state-get-many"
    ? { entries: Object.fromEntries((request.keys ?? []).map((k: string) => [k, null])) }
    : operation === "list-scopes"
    ? { count: 0, scopes: [] }
    : { key: request.key, scope: request.service, value: "" };
  return JSON.stringify({ success: true, data });
}

/** Replaces the real state worker with a fake one that keeps what it receives. */
async function harvest(system: System): Promise<{ got: Harvested[]; close(): Promise<void> }> {
  await system.stopState();
  const got: Harvested[] = [];
  const worker = new MdpWorker(system.brokerEndpoint, STATE_SERVICE, (body: Frames) => {
    const frames = body.map((f) => text(f));
    const request = JSON.parse(frames[1] ?? "{}");
    got.push({ operation: frames[0]!, request, raw: frames[1] ?? "", frames });
    return [fakeReply(frames[0]!, request)];
  }, { heartbeatIntervalMs: 200, heartbeatLiveness: 10 });
  await waitFor(() => worker.connected, { what: "the fake state worker" });
  return { got, close: () => worker.close() };
}

async function call(
  url: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: any }> {
  const response = await fetch(url + path, {
    method,
    headers: { ...(body ? { "content-type": "application/json" } : {}), ...headers },
    body,
  });
  const raw = await response.text();
  try {
    return { status: response.status, body: JSON.parse(raw) };
  } catch {
    return { status: response.status, body: raw };
  }
}

/** Asks the state service directly (as a replaying attacker would). */
async function ask(client: MdpClient, operation: string, json: string): Promise<any> {
  return JSON.parse(text((await client.request(STATE_SERVICE, [operation, json]))[0]!));
}

/** Brings the real state worker back and waits until it answers. */
async function realStateBack(system: System, client: MdpClient): Promise<void> {
  await system.startState();
  await waitFor(async () => (await ask(client, "health", "{}")).success === true, {
    what: "the real state worker",
  });
}

Deno.test("a fake State worker receives no admin token or API key, only call credentials the gateway refuses as bearers", async () => {
  await withSecuredSystem(async (system) => {
    const { url } = system;
    const adminToken = await tokenWith(["*"], { sub: "user:admin" });
    const admin = bearer(adminToken);
    const made = await call(
      url,
      "POST",
      "/api/auth/api-keys",
      admin,
      JSON.stringify({ name: "plc", roles: ["admin"] }),
    );
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const apiKey: string = made.body.key;

    const fake = await harvest(system);
    try {
      // Every way a state request leaves the gateway: REST with a token, REST
      // with an API key, a read that misses the cache, the generic bridge (with
      // the caller's own token in the body), a WebSocket request.
      const writes = [
        await call(url, "POST", "/api/state/plant", admin, '{"entries":{"setpoint":"9999"}}'),
        await call(url, "PUT", "/api/state/plant/valve", { "x-api-key": apiKey }, '{"value":"1"}'),
        await call(url, "GET", "/api/state/plant/missing", admin),
        await call(
          url,
          "POST",
          `/api/services/${STATE_SERVICE}/state-set-many`,
          admin,
          JSON.stringify({ service: "plant", entries: { a: "1" }, token: adminToken }),
        ),
      ];
      assert.deepEqual(writes.map((w) => w.status), [200, 200, 404, 200]);
      const ws = await openWs(url, admin);
      ws.send({
        type: "request",
        id: "r1",
        service: STATE_SERVICE,
        body: ["state-get", JSON.stringify({ service: "plant", key: "k" })],
      });
      await ws.nextOf("final", "r1");
      await ws.close();
      assert.equal(fake.got.length, 5, JSON.stringify(fake.got.map((g) => g.operation)));

      const expected: Record<string, string> = {
        "state-set-many": "state:scope:plant:write",
        "state-cas": "state:scope:plant:write",
        "state-get-many": "state:scope:plant:read",
        "state-get": "state:scope:plant:read",
      };
      for (const { operation, request, frames } of fake.got) {
        const all = frames.join("\n");
        assert.ok(!all.includes(adminToken), `${operation} carried the admin's token`);
        assert.ok(!all.includes(apiKey.split(".")[1]!), `${operation} carried the API key`);
        const credential: string = request.token;
        assert.equal(decodeProtectedHeader(credential).typ, CALL_TYP, operation);
        const claims = decodeJwt(credential);
        assert.equal(claims.aud, STATE_SERVICE);
        // Only the permission this call needs, not the caller's "*".
        assert.deepEqual(claims.perms, [expected[operation]], operation);
        assert.equal(claims.exp! - claims.iat!, 10, "call_token_ttl_s default");
        assert.equal(typeof claims.jti, "string");
        assert.match(String(claims.sub), /^(user:admin|apikey:)/);
      }

      // What the fake worker holds is no key to the gateway: header, cookie, WebSocket.
      for (const { request } of fake.got) {
        const header = await call(url, "GET", "/api/state", bearer(request.token));
        assert.equal(header.status, 401);
        assert.match(header.body.error.message, /call credential/);
        const cookie = await call(url, "GET", "/api/state", {
          cookie: `plantd_access=${request.token}`,
        });
        assert.equal(cookie.status, 401);
        // Refused, not taken for a stale cookie (which would leave the caller anonymous).
        assert.match(cookie.body.error.message, /call credential/);
        const minted = await call(
          url,
          "POST",
          "/api/auth/api-keys",
          bearer(request.token),
          JSON.stringify({ name: "stolen", roles: ["admin"] }),
        );
        assert.equal(minted.status, 401);
      }
      const socket = await openWs(url);
      socket.send({ type: "auth", id: "a1", token: fake.got[0]!.request.token });
      const refused = await socket.nextOf("error", "a1");
      assert.equal(refused.code, "UNAUTHENTICATED");
      await socket.close();
      // Each refusal is audited (header, cookie, the key minting attempt, the WebSocket auth).
      let reasons: string[] = [];
      await waitFor(async () => {
        const audit = await call(url, "GET", "/api/audit?action=auth.failure&limit=100", admin);
        reasons = audit.body.events.map((e: any) => String(e.details?.reason))
          .filter((r: string) => /call credential/.test(r));
        return reasons.length >= fake.got.length * 3 + 1;
      }, { what: () => `audited refusals, have ${JSON.stringify(reasons)}` });
    } finally {
      await fake.close();
    }
  });
});

Deno.test("a real state worker takes a captured call credential once, for its own request only", async () => {
  await withSecuredSystem(async (system) => {
    const admin = bearer(await tokenWith(["*"], { sub: "user:admin" }));
    const fake = await harvest(system);
    try {
      await call(system.url, "POST", "/api/state/plant", admin, '{"entries":{"k":"v1"}}');
      // Another key: the write put "k" in the gateway's cache.
      await call(system.url, "GET", "/api/state/plant/other", admin);
    } finally {
      await fake.close();
    }
    const [write, read] = fake.got;
    assert.equal(write?.operation, "state-set-many");
    assert.equal(read?.operation, "state-get-many");

    const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 5000 });
    try {
      await realStateBack(system, client);
      // Replayed as it was captured: once (the request it was made for, which never got there)...
      assert.equal((await ask(client, write.operation, write.raw)).success, true);
      // ...and never again.
      assert.deepEqual(await ask(client, write.operation, write.raw), {
        error: "AUTHENTICATION_FAILED",
        message: "Invalid or expired token",
      });
      // A read's credential is no write, whatever the request says.
      const forged = JSON.stringify({
        service: "plant",
        entries: { k: "evil" },
        token: read.request.token,
      });
      assert.equal((await ask(client, "state-set-many", forged)).error, "PERMISSION_DENIED");
      // Nor a write of other values with the write's (used) credential, nor a read of it elsewhere.
      const other = JSON.stringify({ ...write.request, entries: { k: "evil" } });
      assert.notEqual((await ask(client, "state-set-many", other)).success, true);
      const got = await call(system.url, "GET", "/api/state/plant/k", admin);
      assert.equal(got.body.value, "v1");
    } finally {
      await client.close();
    }
  }, { gateway: { call_token_ttl_s: 30 } });
});

Deno.test("a real state worker refuses a captured call credential once it has expired", async () => {
  await withSecuredSystem(async (system) => {
    const admin = bearer(await tokenWith(["*"], { sub: "user:admin" }));
    const fake = await harvest(system);
    try {
      await call(system.url, "POST", "/api/state/plant", admin, '{"entries":{"k":"v1"}}');
    } finally {
      await fake.close();
    }
    const [write] = fake.got;
    const exp = decodeJwt(write!.request.token).exp!;
    const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 5000 });
    try {
      await realStateBack(system, client);
      await waitFor(() => Date.now() / 1000 > exp + 0.1, { what: "the credential to expire" });
      assert.deepEqual(await ask(client, write!.operation, write!.raw), {
        error: "AUTHENTICATION_FAILED",
        message: "Invalid or expired token",
      });
    } finally {
      await client.close();
    }
  }, { gateway: { call_token_ttl_s: 1 } });
});

Deno.test("signed with jwt_private_key, call credentials verify at a state worker holding only the public key", async () => {
  const pair = await generateKeyPair("EdDSA", { extractable: true });
  const privateKey = await exportPKCS8(pair.privateKey);
  const publicKey = await exportSPKI(pair.publicKey);
  const keys = { jwt_secret: undefined, jwt_algorithm: "EdDSA" as const };
  // An access token of the gateway's own (as a login would answer).
  const { token } = await new TokenIssuer({
    privateKey,
    algorithm: "EdDSA",
    issuer: "plantd",
    audience: "plantd",
  }).issue({ sub: "user:ops", name: "ops", roles: [], perms: ["state:*"] }, 60);
  await withSecuredSystem(async (system) => {
    const put = await call(
      system.url,
      "PUT",
      "/api/state/line/speed",
      bearer(token),
      '{"value":"7"}',
    );
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const got = await call(system.url, "GET", "/api/state/line?keys=speed", bearer(token));
    assert.equal(got.body.entries.speed.value, "7");
    // A Go client sending the same access token itself still works.
    const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 5000 });
    try {
      const reply = await ask(
        client,
        "state-get",
        JSON.stringify({ service: "line", key: "speed", token }),
      );
      assert.equal(reply.data.value, "7");
    } finally {
      await client.close();
    }
  }, {
    gateway: { ...keys, jwt_private_key: privateKey },
    state: { ...keys, jwt_public_key: publicKey },
  });
});

Deno.test("a gateway with no signing key (outside issuer only) sends state requests without any credential", async () => {
  const pair = await generateKeyPair("ES256", { extractable: true });
  const publicKey = await exportSPKI(pair.publicKey);
  const { token } = await new TokenIssuer({
    privateKey: await exportPKCS8(pair.privateKey),
    algorithm: "ES256",
    issuer: "plantd",
    audience: "plantd",
  }).issue({ sub: "user:idp", name: "idp", roles: [], perms: ["*"] }, 60);
  await withSecuredSystem(async (system) => {
    const fake = await harvest(system);
    try {
      const bridged = await call(
        system.url,
        "POST",
        `/api/services/${STATE_SERVICE}/state-set-many`,
        bearer(token),
        JSON.stringify({ service: "plant", entries: { a: "1" }, token }),
      );
      assert.equal(bridged.status, 200, JSON.stringify(bridged.body));
      assert.equal(
        (await call(system.url, "PUT", "/api/state/plant/b", bearer(token), '{"value":"2"}'))
          .status,
        200,
      );
      assert.equal(fake.got.length, 2);
      for (const { request, frames } of fake.got) {
        assert.equal(request.token, undefined, "no credential, and not the caller's own");
        assert.ok(!frames.join("\n").includes(token));
      }
    } finally {
      await fake.close();
    }
  }, {
    gateway: { jwt_secret: undefined, jwt_public_key: publicKey },
    state: { jwt_secret: undefined },
  });
});

for (
  const [how, broker] of [
    ["a durable request", (dir: string) => ({
      durable_services: [STATE_SERVICE],
      journal: `${dir}/journal.db`,
    })],
    ["requeue_lost", () => ({ requeue_lost_services: [STATE_SERVICE] })],
  ] as const
) {
  Deno.test(`${how}: routed again after its worker was lost with the write committed, it gets the first reply, applied once; its credential from another client is refused and counted`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      await withSecuredSystem(async (system) => {
        const admin = bearer(await tokenWith(["*"], { sub: "user:admin" }));
        await system.stopState();
        // Two state workers over one store, as two processes over one PostgreSQL database.
        const store = await StateStore.load(await openStateDatabase({ location: ":memory:" }), {});
        const reused: string[] = [];
        const ops = new StateOperations(store, {
          verify: serviceTokenCheck(
            { secret: SECRET, issuer: "plantd", audience: "plantd" },
            STATE_SERVICE,
          ),
        }, { callReused: (use) => reused.push(use) });
        const fast = { heartbeatIntervalMs: 200, heartbeatLiveness: 10 };
        let captured: string[] = [];
        let committed!: () => void;
        const done = new Promise<void>((resolve) => committed = resolve);
        // Applies the write, then is lost before its reply leaves.
        const dying = new MdpWorker(system.brokerEndpoint, STATE_SERVICE, async (body, context) => {
          captured = body.map((f) => text(f));
          await ops.handle(body, context.client);
          committed();
          return await new Promise<never>(() => {});
        }, fast);
        let steady: MdpWorker | undefined;
        try {
          await waitFor(() => dying.connected, { what: "the dying worker" });
          const put = call(system.url, "POST", "/api/state/plant", admin, '{"entries":{"k":"v1"}}');
          await done;
          steady = new MdpWorker(
            system.brokerEndpoint,
            STATE_SERVICE,
            async (body, context) => [await ops.handle(body, context.client)],
            fast,
          );
          await waitFor(() => steady!.connected, { what: "the steady worker" });
          await dying.close();
          const answered = await put;
          assert.equal(answered.status, 200, JSON.stringify(answered.body));
          assert.deepEqual(reused, ["redelivery"]);
          assert.equal(store.get("plant", "k")?.revision, 1);
          // The captured request, sent by another client: refused, counted.
          const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 5000 });
          try {
            assert.deepEqual(await ask(client, captured[0]!, captured[1]!), {
              error: "AUTHENTICATION_FAILED",
              message: "Invalid or expired token",
            });
          } finally {
            await client.close();
          }
          assert.deepEqual(reused, ["redelivery", "replay"]);
          assert.equal(store.get("plant", "k")?.revision, 1);
        } finally {
          await dying.close();
          await steady?.close();
          await store.close();
        }
      }, { broker: broker(dir), gateway: { call_token_ttl_s: 30 } });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
