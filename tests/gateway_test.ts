// deno-lint-ignore-file no-explicit-any -- the tests read JSON bodies of many shapes
/**
 * The gateway with the whole system behind it: real HTTP requests and real
 * WebSocket clients on random ports.
 */
import assert from "node:assert/strict";
import { Publisher } from "../bus/publisher.ts";
import { MdpClient } from "../mdp/client.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { waitFor } from "./_helpers.ts";
import { startSystem, type System } from "./_system.ts";
import { WsClient } from "./_ws.ts";
import { frameAt } from "./_ws_frames.ts";

async function withSystem(
  body: (system: System) => Promise<void>,
  overrides?: Parameters<typeof startSystem>[0],
): Promise<void> {
  const system = await startSystem(overrides);
  try {
    await body(system);
  } finally {
    await system.stop();
  }
}

async function http(
  system: System,
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, any>; headers: Headers }> {
  const response = await fetch(system.url + path, { method, body, headers });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : {}, headers: response.headers };
}

const JSON_TYPE = { "content-type": "application/json" };

Deno.test("gateway serves every /api/state route with meaningful status codes", async () => {
  await withSystem(async (system) => {
    assert.deepEqual((await http(system, "GET", "/api/state")).json, { count: 0, scopes: [] });
    let r = await http(system, "PUT", "/api/state/plant");
    assert.equal(r.status, 201);
    r = await http(system, "PUT", "/api/state/plant");
    assert.equal(r.status, 409);
    assert.equal(r.json.error.code, "SCOPE_EXISTS");

    r = await http(system, "PUT", "/api/state/plant/setpoint", '{"value":"42"}', JSON_TYPE);
    assert.deepEqual(r.json, { scope: "plant", key: "setpoint", value: "42", revision: 1 });
    r = await http(system, "PUT", "/api/state/plant/mode", "auto", {
      "content-type": "text/plain",
    });
    assert.equal(r.json.value, "auto");
    r = await http(system, "GET", "/api/state/plant/setpoint");
    assert.equal(r.status, 200);
    assert.equal(r.json.value, "42");
    assert.equal(r.headers.get("etag"), '"1"');
    assert.deepEqual((await http(system, "GET", "/api/state/plant")).json, {
      scope: "plant",
      count: 2,
      keys: ["mode", "setpoint"],
    });
    r = await http(system, "GET", "/api/state/plant?keys=mode,nope");
    assert.equal(r.json.entries.mode.value, "auto");
    assert.equal(r.json.entries.nope, null);
    r = await http(system, "POST", "/api/state/plant", '{"entries":{"a":"1","b":"2"}}', JSON_TYPE);
    assert.deepEqual(r.json, { scope: "plant", revisions: { a: 1, b: 1 } });

    // Compare-and-set through If-Match.
    r = await http(system, "PUT", "/api/state/plant/setpoint", "43", {
      "content-type": "text/plain",
      "if-match": '"1"',
    });
    assert.equal(r.json.revision, 2);
    r = await http(system, "PUT", "/api/state/plant/setpoint", "44", {
      "content-type": "text/plain",
      "if-match": "1",
    });
    assert.equal(r.status, 409);
    assert.equal(r.json.error.code, "REVISION_CONFLICT");
    assert.equal(r.json.error.current_revision, 2);
    // The same fields in the same order, from the service or from the cache.
    for (let i = 0; i < 2; i++) {
      r = await http(system, "GET", "/api/state/plant/setpoint");
      assert.deepEqual(Object.keys(r.json), ["scope", "key", "value", "revision", "updated_at"]);
    }

    // 404s.
    r = await http(system, "GET", "/api/state/plant/nope");
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, "KEY_NOT_FOUND");
    r = await http(system, "GET", "/api/state/nowhere");
    assert.equal(r.json.error.code, "SCOPE_NOT_FOUND");
    assert.equal((await http(system, "DELETE", "/api/state/nowhere")).status, 404);
    assert.equal((await http(system, "GET", "/api/nothing-here")).status, 404);

    // 400s.
    r = await http(system, "PUT", "/api/state/plant/k", "{not json", JSON_TYPE);
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, "BAD_REQUEST");
    r = await http(system, "PUT", "/api/state/plant/k", '{"value":7}', JSON_TYPE);
    assert.equal(r.status, 400);
    r = await http(system, "PUT", "/api/state/plant/k", "x", {
      "content-type": "text/plain",
      "if-match": "abc",
    });
    assert.equal(r.status, 400);
    r = await http(system, "GET", "/api/state/bad%01scope");
    assert.equal(r.status, 400);
    r = await http(system, "POST", "/api/state/plant", '{"entries":{}}', JSON_TYPE);
    assert.equal(r.status, 400);

    // Deletes.
    assert.equal((await http(system, "DELETE", "/api/state/plant/mode")).status, 200);
    assert.equal((await http(system, "DELETE", "/api/state/plant/mode")).status, 404);
    assert.equal((await http(system, "DELETE", "/api/state/plant")).status, 200);
    assert.deepEqual((await http(system, "GET", "/api/state")).json, { count: 0, scopes: [] });
  });
});

Deno.test("gateway answers 413 for bodies and values over the limits", async () => {
  await withSystem(async (system) => {
    let r = await http(system, "PUT", "/api/state/plant/big", "x".repeat(5000), {
      "content-type": "text/plain",
    });
    assert.equal(r.status, 413);
    assert.equal(r.json.error.code, "PAYLOAD_TOO_LARGE");
    r = await http(system, "PUT", "/api/state/plant/big", "x".repeat(200_000), {
      "content-type": "text/plain",
    });
    assert.equal(r.status, 413);
  }, { state: { max_value_bytes: 4096 }, gateway: { max_body_bytes: 100_000 } });
});

Deno.test("gateway answers 503 without a worker and 504 when a worker does not answer", async () => {
  await withSystem(async (system) => {
    let r = await http(
      system,
      "POST",
      "/api/services/org.plantd.module.Echo/echo",
      '"hi"',
      JSON_TYPE,
    );
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.frames, [{ text: '"hi"', json: "hi" }]);
    r = await http(system, "POST", "/api/services/no.such.Service/op", "{}", JSON_TYPE);
    assert.equal(r.status, 503);
    assert.equal(r.json.error.code, "SERVICE_UNAVAILABLE");
    r = await http(system, "POST", "/api/services/org.plantd.module.Echo/echo", "{oops", JSON_TYPE);
    assert.equal(r.status, 400);

    const stuck = new MdpWorker(system.brokerEndpoint, "stuck", () => new Promise(() => {}), {
      heartbeatIntervalMs: 200,
    });
    try {
      await waitFor(async () =>
        (await http(system, "GET", "/api/services")).json.services
          .some((s: { name: string }) => s.name === "stuck"), { what: "stuck worker" });
      r = await http(system, "POST", "/api/services/stuck/op?timeout_ms=300", "{}", JSON_TYPE);
      assert.equal(r.status, 504);
      assert.equal(r.json.error.code, "TIMEOUT");
    } finally {
      await stuck.close();
    }

    await system.stopState();
    await waitFor(async () => (await http(system, "GET", "/api/state")).status === 503, {
      what: "503 once the state worker is gone",
    });
    r = await http(system, "GET", "/api/state");
    assert.equal(r.json.error.code, "SERVICE_UNAVAILABLE");
  });
});

Deno.test("gateway lists services and serves its OpenAPI document", async () => {
  await withSystem(async (system) => {
    const services = (await http(system, "GET", "/api/services")).json;
    const names = services.services.map((s: { name: string }) => s.name);
    assert.ok(names.includes("org.plantd.State") && names.includes("org.plantd.module.Echo"));
    const echo = services.services.find((s: { name: string }) =>
      s.name === "org.plantd.module.Echo"
    );
    assert.deepEqual(Object.keys(echo).sort(), ["busy", "idle", "name", "queued", "workers"]);
    const doc = (await http(system, "GET", "/api/openapi.json")).json;
    assert.equal(doc.openapi, "3.1.0");
    for (
      const path of [
        "/api/state",
        "/api/state/{scope}",
        "/api/state/{scope}/{key}",
        "/api/services",
      ]
    ) {
      assert.ok(doc.paths[path], `OpenAPI documents ${path}`);
    }
    assert.ok(doc.paths["/api/state/{scope}/{key}"].put.responses["409"]);
  });
});

Deno.test("healthz goes DOWN when the state worker stops and UP when it returns", async () => {
  await withSystem(async (system) => {
    const health = async () => {
      const response = await fetch(system.url + "/healthz");
      assert.equal(response.headers.get("content-type"), "application/health+json");
      return { status: response.status, body: await response.json() };
    };
    await waitFor(async () => (await health()).status === 200, { what: "UP" });
    const up = (await health()).body;
    assert.equal(up.status, "UP");
    const names = up.checks.map((c: { name: string }) => c.name);
    for (
      const name of ["broker_connection", "state_worker", "state_store", "bus_state", "bus_metric"]
    ) {
      assert.ok(names.includes(name), `check ${name}`);
    }
    assert.equal((await fetch(system.url + "/healthz", { method: "HEAD" })).status, 200);
    assert.equal((await fetch(system.url + "/livez")).status, 200);
    const ready = await fetch(system.url + "/readyz");
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: "UP" });

    await system.stopState();
    await waitFor(async () => (await health()).status === 503, { what: "DOWN", timeoutMs: 10_000 });
    const down = (await health()).body;
    assert.equal(down.status, "DOWN");
    assert.equal(
      down.checks.find((c: { name: string }) => c.name === "state_worker").status,
      "DOWN",
    );
    const notReady = await fetch(system.url + "/readyz");
    assert.equal(notReady.status, 503);
    assert.deepEqual(await notReady.json(), { status: "DOWN" });

    await system.startState();
    await waitFor(async () => (await health()).status === 200, {
      what: "UP again",
      timeoutMs: 10_000,
    });
  });
});

Deno.test("metrics expose HTTP, WebSocket, broker and bus series", async () => {
  await withSystem(async (system) => {
    await http(system, "GET", "/api/state");
    const text = await (await fetch(system.url + "/metrics")).text();
    for (
      const name of [
        "http_requests_total",
        "http_request_duration_seconds",
        "ws_connections",
        "mdp_requests_total",
        "mdp_request_duration_seconds",
        "mdp_workers",
        "process_cpu_user_seconds_total",
      ]
    ) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, "m"), name);
    }
    assert.match(text, /http_requests_total\{method="GET",route="\/api\/state",status="200"\} 1/);
    // The broker's KPIs carry values, not only declarations: the request just
    // made reached org.plantd.State through it and was answered.
    const value = (series: string) => {
      const line = text.split("\n").find((l) => l.startsWith(series + " "));
      assert.ok(line, `${series} in /metrics`);
      return Number(line.slice(series.length + 1));
    };
    const state = '{service="org.plantd.State"}';
    assert.ok(value(`mdp_workers${state}`) >= 1); // one per state worker connection
    assert.ok(value(`mdp_requests_total${state}`) >= 1);
    assert.ok(value(`mdp_replies_total${state}`) >= 1);
    assert.ok(value(`mdp_request_duration_seconds_count${state}`) >= 1);
    assert.equal(value(`mdp_queue_depth${state}`), 0);
  });
});

Deno.test("a WebSocket receives what a publisher sends on a bus, by prefix", async () => {
  await withSystem(async (system) => {
    const ws = await new WsClient(system.url).open();
    const publisher = new Publisher(system.frontends.metric!, { sendHighWaterMark: 0 });
    try {
      ws.send({ type: "subscribe", id: "m", bus: "metric", prefix: "org.plantd.Metric" });
      await ws.next((m) => m.type === "subscribed" && m.id === "m");
      const payload = '{"time":"2024-01-01T00:00:00Z","device":"d","channel":"c","value":1.5}';
      // Subscriptions reach the bus asynchronously: publish until one arrives.
      await waitFor(() => {
        publisher.publish("org.plantd.Metric", payload);
        publisher.publish("org.plantd.Other", "not for us");
        return ws.received.some((m) => m.type === "message");
      }, { what: "first bus message", intervalMs: 20 });
      const message = await ws.next((m) => m.type === "message");
      // Without Redis: this gateway's own history offsets (docs/websocket.md).
      assert.match(message.offset, /^[0-9a-f]+:\d+$/);
      assert.deepEqual(
        { ...message, payload: JSON.parse(message.payload) },
        {
          type: "message",
          id: "m",
          offset: message.offset,
          bus: "metric",
          topic: "org.plantd.Metric",
          form: "single",
          payload: JSON.parse(payload),
          encoding: "text",
        },
      );
      assert.ok(!ws.received.some((m) => m.type === "message" && m.topic !== "org.plantd.Metric"));
      ws.send({ type: "unsubscribe", id: "m" });
      await ws.next((m) => m.type === "unsubscribed");
      ws.send({ type: "subscribe", id: "x", bus: "nope", prefix: "" });
      assert.equal((await ws.next((m) => m.type === "error")).code, "NOT_FOUND");
      ws.send({ type: "bogus" });
      assert.equal((await ws.next((m) => m.type === "error")).code, "BAD_REQUEST");
      ws.socket.send("{not json");
      assert.equal((await ws.next((m) => m.type === "error")).code, "BAD_REQUEST");
      ws.send({ type: "ping", id: "p1" });
      await ws.next((m) => m.type === "pong" && m.id === "p1");
    } finally {
      await publisher.close();
      await ws.close();
    }
  });
});

Deno.test("a WebSocket watching a scope sees a PUT made over REST", async () => {
  await withSystem(async (system) => {
    const ws = await new WsClient(system.url).open();
    try {
      ws.send({ type: "watch", id: "w", scope: "plant" });
      await ws.next((m) => m.type === "subscribed");
      // The watch reaches the bus asynchronously: write until a change arrives.
      let n = 0;
      await waitFor(async () => {
        await http(system, "PUT", `/api/state/plant/k${n++}`, "v", {
          "content-type": "text/plain",
        });
        await http(system, "PUT", `/api/state/plant2/other`, "v", { "content-type": "text/plain" });
        return ws.received.some((m) => m.type === "change");
      }, { what: "first change", intervalMs: 20 });
      await http(system, "PUT", "/api/state/plant/setpoint", "42", {
        "content-type": "text/plain",
      });
      const change = await ws.next((m) => m.type === "change" && m.change.key === "setpoint");
      assert.equal(change.id, "w");
      assert.equal(change.change.op, "set");
      assert.equal(change.change.scope, "plant");
      assert.equal(change.change.value, "42");
      assert.equal(change.change.revision, 1);
      assert.ok(!ws.received.some((m) => m.type === "change" && m.change.scope !== "plant"));
    } finally {
      await ws.close();
    }
  });
});

Deno.test("a watch sees a change made right after it was acknowledged (no wait for the bus)", async () => {
  await withSystem(async (system) => {
    const ws = await new WsClient(system.url).open();
    try {
      // The gateway's state feed is live once any change comes through.
      ws.send({ type: "watch", id: "warm", scope: "warm" });
      await ws.next((m) => m.type === "subscribed");
      await waitFor(async () => {
        await http(system, "PUT", "/api/state/warm/k", "v", { "content-type": "text/plain" });
        return ws.received.some((m) => m.type === "change");
      }, { what: "the state feed", intervalMs: 20 });
      // A new watch, then one write at once: its change must arrive, with no
      // time for a new bus subscription to travel to the state service.
      for (const scope of ["plant-a", "plant-b", "plant-c"]) {
        ws.send({ type: "watch", id: scope, scope });
        await ws.next((m) => m.type === "subscribed" && m.id === scope);
        await http(system, "PUT", `/api/state/${scope}/setpoint`, "7", {
          "content-type": "text/plain",
        });
        const change = await ws.next((m) =>
          m.type === "change" && m.id === scope && m.change.op === "set"
        );
        assert.equal(change.change.value, "7");
      }
    } finally {
      await ws.close();
    }
  });
});

Deno.test("a WebSocket sends Majordomo requests and gets PARTIAL and FINAL replies", async () => {
  await withSystem(async (system) => {
    const counter = new MdpWorker(system.brokerEndpoint, "counter", async (body, ctx) => {
      const n = Number(new TextDecoder().decode(body[0]));
      for (let i = 1; i < n; i++) await ctx.partial([String(i)]);
      return [String(n)];
    }, { heartbeatIntervalMs: 200 });
    const ws = await new WsClient(system.url).open();
    try {
      ws.send({
        type: "request",
        id: "r1",
        service: "org.plantd.module.Echo",
        body: ["echo", "a", "b"],
      });
      const final = await ws.next((m) => m.id === "r1" && m.type === "final");
      assert.deepEqual(final.frames.map((f: { text: string }) => f.text), ["a", "b"]);
      await waitFor(async () =>
        (await http(system, "GET", "/api/services")).json.services
          .some((s: { name: string }) => s.name === "counter"), { what: "counter worker" });
      ws.send({ type: "request", id: "r2", service: "counter", body: ["3"] });
      await ws.next((m) => m.id === "r2" && m.type === "final");
      const partials = ws.received.filter((m) => m.id === "r2" && m.type === "partial");
      assert.deepEqual(partials.map((m) => m.frames[0].text), ["1", "2"]);
      // A service no worker serves: SERVICE_UNAVAILABLE at once, as over REST, not a TIMEOUT
      // after timeout_ms (a minute here, longer than ws.next waits).
      ws.send({
        type: "request",
        id: "r3",
        service: "nobody.home",
        body: ["x"],
        timeout_ms: 60_000,
      });
      assert.equal((await ws.next((m) => m.id === "r3")).code, "SERVICE_UNAVAILABLE");
    } finally {
      await ws.close();
      await counter.close();
    }
  });
});

Deno.test("a WebSocket that does not read is disconnected with 4008 and counted", async () => {
  await withSystem(async (system) => {
    // A raw TCP client that completes the WebSocket handshake and then never reads.
    const url = new URL(system.url);
    const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
    const publisher = new Publisher(system.frontends.event!, { sendHighWaterMark: 0 });
    const watcher = await new WsClient(system.url).open();
    try {
      const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
      await conn.write(new TextEncoder().encode(
        `GET /ws HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      ));
      await readUntil(conn, "101 Switching Protocols");
      const subscribe = { type: "subscribe", id: "s", bus: "event", prefix: "flood" };
      await conn.write(maskedFrame(JSON.stringify(subscribe)));
      await readUntil(conn, '"subscribed"');
      // From here on the raw client reads nothing.
      // A well-behaved client on another topic keeps receiving meanwhile.
      watcher.send({ type: "subscribe", id: "w", bus: "event", prefix: "small" });
      await watcher.next((m) => m.type === "subscribed");
      const big = "x".repeat(16 * 1024);
      await waitFor(async () => {
        for (let i = 0; i < 100; i++) publisher.publish("flood", big);
        publisher.publish("small", "tick");
        const metrics = await (await fetch(system.url + "/metrics")).text();
        return /^ws_slow_consumer_disconnects_total [1-9]/m.test(metrics);
      }, { timeoutMs: 30_000, intervalMs: 10, what: "slow consumer disconnect" });
      // The raw client finds a close frame with code 4008 behind what was buffered.
      assert.equal(await closeCode(conn), 4008);
      const before = watcher.received.filter((m) => m.type === "message").length;
      await waitFor(() => {
        publisher.publish("small", "tock");
        return watcher.received.filter((m) => m.type === "message").length > before;
      }, { what: "the other client still receiving", intervalMs: 20 });
      assert.equal(watcher.closed, undefined);
    } finally {
      conn.close();
      await watcher.close();
      await publisher.close();
    }
  }, { gateway: { ws_max_buffered_bytes: 1024 * 1024 } });
});

/** Reads server frames until a close frame, and returns its status code. */
async function closeCode(conn: Deno.Conn): Promise<number> {
  let data = new Uint8Array(0);
  const chunk = new Uint8Array(64 * 1024);
  let at = 0;
  while (true) {
    // Parse every complete frame in `data` from `at`.
    for (let frame = frameAt(data, at); frame; frame = frameAt(data, at)) {
      if (frame.opcode === 0x8) return (data[frame.start]! << 8) | data[frame.start + 1]!;
      at = frame.end;
    }
    const n = await conn.read(chunk);
    if (n === null) throw new Error("connection closed without a close frame");
    const grown = new Uint8Array(data.length - at + n);
    grown.set(data.subarray(at));
    grown.set(chunk.subarray(0, n), data.length - at);
    data = grown;
    at = 0;
  }
}

/** Reads from `conn` until the text seen so far contains `marker`. */
async function readUntil(conn: Deno.Conn, marker: string): Promise<void> {
  const buffer = new Uint8Array(4096);
  let seen = "";
  while (!seen.includes(marker)) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error(`connection closed before '${marker}'`);
    seen += new TextDecoder().decode(buffer.subarray(0, n));
  }
}

/** A client-to-server text frame (clients must mask). */
function maskedFrame(text: string): Uint8Array {
  const payload = new TextEncoder().encode(text);
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const header = payload.length < 126
    ? Uint8Array.of(0x81, 0x80 | payload.length)
    : Uint8Array.of(0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff);
  const frame = new Uint8Array(header.length + 4 + payload.length);
  frame.set(header);
  frame.set(mask, header.length);
  payload.forEach((b, i) => frame[header.length + 4 + i] = b ^ mask[i % 4]!);
  return frame;
}

Deno.test("the state read cache serves own writes at once and others' writes by their change events", async () => {
  await withSystem(async (system) => {
    const put = (value: string) =>
      http(system, "PUT", "/api/state/plant/k", value, { "content-type": "text/plain" });
    await put("one");
    assert.equal((await http(system, "GET", "/api/state/plant/k")).json.value, "one");
    // Served from the cache: repeated reads send no request to the state service.
    const stateRequests = async () => {
      const text = await (await fetch(system.url + "/metrics")).text();
      return Number(/^mdp_requests_total\{service="org.plantd.State"\} (\d+)/m.exec(text)?.[1]);
    };
    const before = await stateRequests();
    for (let i = 0; i < 5; i++) {
      assert.equal((await http(system, "GET", "/api/state/plant/k")).json.value, "one");
    }
    assert.equal(await stateRequests(), before);
    await put("two"); // through the gateway: the next read must not be the cached "one"
    assert.equal((await http(system, "GET", "/api/state/plant/k")).json.value, "two");
    // Another writer, straight through the broker: the change event refreshes the cache
    // long before the 60 s TTL this test sets.
    const client = new MdpClient(system.brokerEndpoint);
    try {
      await client.request("org.plantd.State", [
        "state-set",
        JSON.stringify({ service: "plant", key: "k", value: "three" }),
      ]);
      await waitFor(
        async () => (await http(system, "GET", "/api/state/plant/k")).json.value === "three",
        {
          what: "the other writer's value through the cache",
        },
      );
    } finally {
      await client.close();
    }
  }, { gateway: { state_cache_ttl_ms: 60_000 } });
});
