// deno-lint-ignore-file no-explicit-any -- the tests read JSON messages of many shapes
/**
 * Authentication and authorization on the WebSocket, TLS, and the rule that
 * a gateway on a non-loopback address does not start without a key.
 */
import assert from "node:assert/strict";
import { Publisher } from "../bus/publisher.ts";
import { gatewayConfig } from "../config/components.ts";
import { ConfigError, loadConfig } from "../config/load.ts";
import { startGateway } from "../roles/gateway.ts";
import { waitFor } from "./_helpers.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { bearer, SECRET, tokenWith, withSecuredSystem } from "./_auth.ts";
import { openWs } from "./_ws.ts";

Deno.test("WebSocket: the first message authenticates; nothing is served before it", async () => {
  await withSecuredSystem(async ({ url }) => {
    const ws = await openWs(url);
    try {
      const welcome = ws.welcome!;
      assert.equal(welcome.auth_required, true);
      ws.socket.send(JSON.stringify({ type: "subscribe", id: "s", bus: "event", prefix: "" }));
      assert.equal((await ws.nextOf("error", "s")).code, "UNAUTHENTICATED");
      ws.socket.send(JSON.stringify({ type: "auth", id: "a0", token: "garbage" }));
      assert.equal((await ws.nextOf("error", "a0")).code, "UNAUTHENTICATED");
      const token = await tokenWith(["bus:subscribe:event:"]);
      ws.socket.send(JSON.stringify({ type: "auth", id: "a", token }));
      const authenticated = await ws.nextOf("authenticated", "a");
      assert.deepEqual(authenticated.permissions, ["bus:subscribe:event:"]);
      ws.socket.send(JSON.stringify({ type: "subscribe", id: "s2", bus: "event", prefix: "" }));
      await ws.nextOf("subscribed", "s2");
    } finally {
      await ws.close();
    }
  });
});

Deno.test("WebSocket: each message needs its permission, and a bus grant never leaks other topics", async () => {
  await withSecuredSystem(async ({ url, frontends, brokerEndpoint: _ }) => {
    const token = await tokenWith([
      "bus:subscribe:event:plant1.",
      "state:scope:mine:read",
      "service:call:org.plantd.module.Echo",
    ]);
    const ws = await openWs(url, bearer(token));
    const publisher = new Publisher(frontends.event!, { form: "frames" });
    try {
      const welcome = ws.welcome!;
      assert.equal(welcome.authenticated, true);
      const send = (m: object) => ws.socket.send(JSON.stringify(m));
      // Denied: a wider prefix, another bus, another scope, another service.
      for (
        const [id, m] of [
          ["wide", { type: "subscribe", bus: "event", prefix: "plant" }],
          ["all", { type: "subscribe", bus: "event", prefix: "" }],
          ["bus", { type: "subscribe", bus: "metric", prefix: "plant1." }],
          ["scope", { type: "watch", scope: "theirs" }],
          ["svc", { type: "request", service: "org.plantd.State", body: ["list-scopes", "{}"] }],
        ] as const
      ) {
        send({ ...m, id });
        const error = await ws.nextOf("error", id);
        assert.equal(error.code, "FORBIDDEN", `${id}: ${JSON.stringify(error)}`);
      }
      const audit = await (await fetch(`${url}/api/audit?action=access.denied`, {
        headers: bearer(await tokenWith(["audit:read"])),
      })).json();
      assert.deepEqual(
        audit.events.map((e: any) => e.target).sort(),
        [
          "bus:subscribe:event:",
          "bus:subscribe:event:plant",
          "bus:subscribe:metric:plant1.",
          "org.plantd.State list-scopes",
          "watch theirs",
        ],
      );
      // Allowed ones.
      send({ type: "subscribe", id: "ok", bus: "event", prefix: "plant1." });
      await ws.nextOf("subscribed", "ok");
      send({ type: "watch", id: "w", scope: "mine" });
      await ws.nextOf("subscribed", "w");
      send({ type: "request", id: "r", service: "org.plantd.module.Echo", body: ["echo", "hi"] });
      assert.equal(((await ws.nextOf("final", "r")).frames as any[])[0].text, "hi");
      // Only granted topics arrive: publish outside then inside the grant.
      await waitFor(async () => {
        publisher.publish("plant2.temp", "secret");
        publisher.publish("plant1.temp", "visible");
        await new Promise((r) => setTimeout(r, 20));
        return ws.all.some((m) => m.type === "message");
      });
      const topics = ws.all.filter((m) => m.type === "message").map((m) => m.topic);
      assert.ok(topics.length > 0 && topics.every((t) => t === "plant1.temp"), String(topics));
    } finally {
      await publisher.close();
      await ws.close();
    }
  });
});

Deno.test("WebSocket: the connection closes with 4001 when its token expires", async () => {
  await withSecuredSystem(async ({ url }) => {
    const token = await tokenWith(["bus:subscribe:*"], { ttlSeconds: 2 });
    const ws = await openWs(url, bearer(token));
    const closed = await ws.whenClosed;
    assert.equal(closed.code, 4001);
    assert.equal(closed.reason, "token expired");
  });
});

Deno.test("WebSocket: connection limits per user and per node", async () => {
  await withSecuredSystem(async ({ url }) => {
    const token = await tokenWith(["bus:subscribe:*"], { sub: "user:busy" });
    const first = await openWs(url, bearer(token));
    const second = await openWs(url, bearer(token));
    try {
      await assert.rejects(openWs(url, bearer(token)), /WebSocket failed/);
      // Another user still gets in (node limit 3).
      const other = await openWs(url, bearer(await tokenWith(["bus:subscribe:*"])));
      await assert.rejects(openWs(url, bearer(await tokenWith([]))), /WebSocket failed/);
      await other.close();
      const metrics = await (await fetch(`${url}/metrics`, {
        headers: bearer(await tokenWith(["telemetry:read"])),
      })).text();
      assert.match(metrics, /ws_connections_refused_total\{reason="user"\} 1/);
      assert.match(metrics, /ws_connections_refused_total\{reason="node"\} 1/);
    } finally {
      for (const ws of [first, second]) {
        await ws.close();
      }
    }
  }, { gateway: { ws_max_per_user: 2, ws_max_connections: 3 } });
});

Deno.test("a gateway on a non-loopback address refuses to start without a key", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = {
      ...loadConfig(gatewayConfig, { args: [], env: {} }),
      host: "0.0.0.0",
      port: 0,
      auth_db: `${dir}/auth.db`,
      metrics_db: "",
    };
    await assert.rejects(startGateway(config), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /not loopback.*authentication is required.*jwt_secret/s);
      return true;
    });
    const secured = await startGateway({ ...config, jwt_secret: SECRET });
    await secured.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TLS: HTTPS with HSTS and Secure cookies", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const made = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../main.ts", import.meta.url).pathname,
        "dev-cert",
        "--out",
        dir,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(made.code, 0, new TextDecoder().decode(made.stderr));
    const cert = await Deno.readTextFile(`${dir}/dev-cert.pem`);
    await withSecuredSystem(async ({ url }) => {
      assert.match(url, /^https:/);
      const client = Deno.createHttpClient({ caCerts: [cert] });
      try {
        const health = await fetch(`${url.replace("127.0.0.1", "localhost")}/healthz`, { client });
        await health.body?.cancel();
        assert.equal(health.status, 200);
        assert.match(health.headers.get("strict-transport-security") ?? "", /max-age=\d+/);
        const base = url.replace("127.0.0.1", "localhost");
        const created = await fetch(`${base}/api/auth/users`, {
          client,
          method: "POST",
          headers: { ...bearer(await tokenWith(["*"])), "content-type": "application/json" },
          body: JSON.stringify({ username: "tls", password: "long enough", roles: ["viewer"] }),
        });
        await created.body?.cancel();
        assert.equal(created.status, 201);
        const login = await fetch(`${base}/api/auth/login`, {
          client,
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ username: "tls", password: "long enough" }),
        });
        await login.body?.cancel();
        const cookies = login.headers.getSetCookie();
        assert.equal(cookies.length, 2);
        assert.ok(cookies.every((c) => /;\s*Secure/i.test(c)), String(cookies));
        // Plain HTTP to a TLS port gets no answer a client could use.
        await assert.rejects(fetch(url.replace("https:", "http:") + "/healthz"));
      } finally {
        client.close();
      }
    }, {
      gateway: { tls_cert: `${dir}/dev-cert.pem`, tls_key: `${dir}/dev-key.pem` },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("WebSocket: a client flooding messages gets RATE_LIMITED, then is served again", async () => {
  await withSecuredSystem(async ({ url }) => {
    const ws = await openWs(url, bearer(await tokenWith(["bus:subscribe:*"])));
    try {
      for (let i = 0; i < 1000; i++) ws.socket.send(JSON.stringify({ type: "ping", id: `p${i}` }));
      const limited = await ws.nextOf("error");
      assert.equal(limited.code, "RATE_LIMITED");
      // The bucket refills: a later ping is answered.
      await waitFor(async () => {
        ws.socket.send(JSON.stringify({ type: "ping", id: "later" }));
        await new Promise((r) => setTimeout(r, 100));
        return ws.all.some((m) => m.type === "pong" && m.id === "later");
      });
      const pongs = ws.all.filter((m) => m.type === "pong" && m.id !== "later").length;
      assert.ok(pongs >= 20 && pongs < 1000, `${pongs} of 1000 flood pings answered`);
    } finally {
      await ws.close();
    }
  }, { gateway: { ws_max_messages_per_s: 20 } });
});

Deno.test("WebSocket: pending requests per connection are capped", async () => {
  await withSecuredSystem(async ({ url, brokerEndpoint }) => {
    // A worker that holds every request (a service without workers is refused at once).
    const held: Array<() => void> = [];
    const worker = new MdpWorker(
      brokerEndpoint,
      "slow",
      () => new Promise<string[]>((resolve) => held.push(() => resolve(["done"]))),
      { capacity: 8 },
    );
    const ws = await openWs(url, bearer(await tokenWith(["service:call:*", "service:list"])));
    try {
      await waitFor(async () => {
        const response = await fetch(`${url}/api/services`, {
          headers: bearer(await tokenWith(["service:list"])),
        });
        const body = await response.json();
        return body.services?.some((s: { name: string }) => s.name === "slow");
      }, { what: "the slow worker" });
      for (let i = 0; i < 5; i++) {
        ws.send({ type: "request", id: `r${i}`, service: "slow", body: ["x"], timeout_ms: 60_000 });
      }
      const refused = await ws.nextOf("error", "r3");
      assert.equal(refused.code, "TOO_MANY_REQUESTS");
      assert.equal((await ws.nextOf("error", "r4")).code, "TOO_MANY_REQUESTS");
      assert.ok(!ws.all.some((m) => m.type === "error" && ["r0", "r1", "r2"].includes(m.id)));
    } finally {
      for (const release of held) release();
      await ws.close();
      await worker.close();
    }
  }, { gateway: { ws_max_pending_requests: 3 } });
});
