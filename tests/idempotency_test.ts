/**
 * Idempotency-Key on state writes (issue #18, no phantom effects): a retry of
 * a write after a 5xx or a timeout is applied at most once, over REST, the
 * generic service route and WebSocket, per user, across a SIGKILL of the
 * state worker, and until the key's window has passed.
 */
import assert from "node:assert/strict";
import { freePort, spawnWatched, waitFor, type WatchedChild } from "./_helpers.ts";
import { bearer, tokenWith, withSecuredSystem } from "./_auth.ts";
import { startSystem, type System } from "./_system.ts";
import { openWs } from "./_ws.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

interface Answer {
  status: number;
  body: string;
  replayed: string | null;
  etag: string | null;
}

async function http(
  system: System,
  method: string,
  path: string,
  options: { body?: string; key?: string; type?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.body !== undefined) headers["content-type"] = options.type ?? "text/plain";
  if (options.key !== undefined) headers["idempotency-key"] = options.key;
  const response = await fetch(system.url + path, { method, headers, body: options.body });
  return {
    status: response.status,
    body: await response.text(),
    replayed: response.headers.get("idempotent-replayed"),
    etag: response.headers.get("etag"),
  };
}

async function withSystem(
  body: (system: System) => Promise<void>,
  overrides: Parameters<typeof startSystem>[0] = {},
): Promise<void> {
  const system = await startSystem(overrides);
  try {
    await body(system);
  } finally {
    await system.stop();
  }
}

Deno.test("REST: a PUT retried with its Idempotency-Key is applied once and answered with the first reply; another body with the key is 422", async () => {
  // No change events: the gateway's cache changes only by its own requests,
  // so what a replay does to it shows.
  await withSystem(async (system) => {
    const first = await http(system, "PUT", "/api/state/ghost/k1", { body: "stale1", key: '"a1"' });
    assert.equal(first.status, 200, first.body);
    assert.deepEqual(JSON.parse(first.body), {
      scope: "ghost",
      key: "k1",
      value: "stale1",
      revision: 1,
    });
    assert.equal(first.replayed, null);
    // The retry a client makes after a 504: the same answer, not a second write.
    const retry = await http(system, "PUT", "/api/state/ghost/k1", { body: "stale1", key: '"a1"' });
    assert.equal(retry.status, 200);
    assert.equal(retry.body, first.body, "the first reply, byte for byte");
    assert.equal(retry.replayed, "true");
    assert.equal(retry.etag, '"1"');
    // A bare token is the same key as the quoted string.
    const bare = await http(system, "PUT", "/api/state/ghost/k1", { body: "stale1", key: "a1" });
    assert.equal(bare.replayed, "true");
    const read = await http(system, "GET", "/api/state/ghost/k1");
    assert.equal(JSON.parse(read.body).revision, 1, "applied exactly once");

    const reused = await http(system, "PUT", "/api/state/ghost/k1", { body: "other", key: "a1" });
    assert.equal(reused.status, 422, reused.body);
    assert.equal(JSON.parse(reused.body).error.code, "IDEMPOTENCY_KEY_REUSED");
    assert.match(JSON.parse(reused.body).error.message, /'a1' was used for a different request/);
    // If-Match makes it another operation (compare-and-set): another request too.
    const cas = await http(system, "PUT", "/api/state/ghost/k1", {
      body: "stale1",
      key: "a1",
      headers: { "if-match": '"1"' },
    });
    assert.equal(cas.status, 422);
    assert.equal(
      JSON.parse((await http(system, "GET", "/api/state/ghost/k1")).body).value,
      "stale1",
    );

    for (const bad of ['"unterminated', '"a", "b"', "two words", "x".repeat(256), '"tab\\x"']) {
      const answer = await http(system, "PUT", "/api/state/ghost/k1", { body: "v", key: bad });
      assert.equal(answer.status, 400, `${bad}: ${answer.body}`);
      assert.match(JSON.parse(answer.body).error.message, /Idempotency-Key/);
    }

    // The key is deleted since; a late retry must neither write it again nor
    // leave its old value in the cache.
    assert.equal((await http(system, "DELETE", "/api/state/ghost/k1")).status, 200);
    const late = await http(system, "PUT", "/api/state/ghost/k1", { body: "stale1", key: "a1" });
    assert.equal(late.replayed, "true");
    assert.equal(late.body, first.body);
    const gone = await http(system, "GET", "/api/state/ghost/k1");
    assert.equal(gone.status, 404, `the replay wrote or cached the old value: ${gone.body}`);
  }, { state: { bus_endpoint: "" }, gateway: { state_cache_ttl_ms: 60_000 } });
});

Deno.test("REST: every state write route and the service route replay with Idempotent-Replayed; errors replay with their status", async () => {
  await withSystem(async (system) => {
    const twice = async (method: string, path: string, options: Parameters<typeof http>[3]) => {
      const first = await http(system, method, path, options);
      const second = await http(system, method, path, options);
      assert.equal(first.replayed, null, `${method} ${path}`);
      assert.equal(second.replayed, "true", `${method} ${path}`);
      assert.equal(second.status, first.status, `${method} ${path}`);
      assert.equal(second.body, first.body, `${method} ${path}`);
      return first;
    };
    assert.equal((await twice("PUT", "/api/state/plant", { key: "c1" })).status, 201);
    // Without the key the second create would be 409: with it, the first answer.
    const set = await twice("POST", "/api/state/plant", {
      body: '{"entries":{"a":"1","b":"2"}}',
      type: "application/json",
      key: "m1",
    });
    assert.deepEqual(JSON.parse(set.body).revisions, { a: 1, b: 1 });
    // A delete replays its 200 though the key is gone (without a key: 404).
    assert.equal((await twice("DELETE", "/api/state/plant/a", { key: "d1" })).status, 200);
    // A delete of a missing key replays its 404, marked.
    assert.equal((await twice("DELETE", "/api/state/plant/zz", { key: "d2" })).status, 404);
    // A failure is a first reply too: a create of an existing scope replays its 409.
    assert.equal((await twice("PUT", "/api/state/plant", { key: "c2" })).status, 409);
    const viaService = await twice("POST", "/api/services/org.plantd.State/state-cas", {
      body: '{"service":"plant","key":"b","value":"3","revision":1}',
      type: "application/json",
      key: "s1",
    });
    assert.equal(viaService.status, 200);
    assert.equal(JSON.parse(viaService.body).frames[0].json.data.revision, 2);
    const reused = await http(system, "POST", "/api/services/org.plantd.State/state-cas", {
      body: '{"service":"plant","key":"b","value":"4","revision":2}',
      type: "application/json",
      key: "s1",
    });
    assert.equal(reused.status, 422);
    assert.equal((await twice("DELETE", "/api/state/plant", { key: "x1" })).status, 200);
    assert.equal((await http(system, "GET", "/api/state/plant")).status, 404);

    // A key on anything but a state write promises nothing: refused.
    for (
      const path of [
        "/api/services/org.plantd.module.Echo/echo",
        "/api/services/org.plantd.State/state-get",
      ]
    ) {
      const answer = await http(system, "POST", path, {
        body: '{"service":"plant","key":"b"}',
        type: "application/json",
        key: "e1",
      });
      assert.equal(answer.status, 400, answer.body);
    }
  });
});

Deno.test("WebSocket: a request with idempotency_key is applied once; the retry's final is the first reply with replayed: true", async () => {
  await withSystem(async (system) => {
    const ws = await openWs(system.url);
    try {
      const request = (id: string, body: string[], key?: string) =>
        ws.send({
          type: "request",
          id,
          service: "org.plantd.State",
          body,
          ...(key === undefined ? {} : { idempotency_key: key }),
        });
      const set = ["state-set-many", '{"service":"ws","entries":{"k":"v1"}}'];
      request("r1", set, "w1");
      const first = await ws.nextOf("final", "r1");
      assert.equal(first.replayed, undefined);
      assert.equal(first.frames[0].json.data.revisions.k, 1);
      request("r2", set, "w1");
      const retry = await ws.nextOf("final", "r2");
      assert.equal(retry.replayed, true);
      assert.deepEqual(retry.frames, first.frames, "the first reply's frames");
      request("r3", ["state-get-many", '{"service":"ws","keys":["k"]}']);
      assert.equal((await ws.nextOf("final", "r3")).frames[0].json.data.entries.k.revision, 1);

      request("r4", ["state-set-many", '{"service":"ws","entries":{"k":"v2"}}'], "w1");
      const reused = await ws.nextOf("error", "r4");
      assert.equal(reused.code, "IDEMPOTENCY_KEY_REUSED");
      // The key may come in the request's JSON instead: the same key.
      request("r5", [
        "state-set-many",
        '{"service":"ws","entries":{"k":"v1"},"idempotency_key":"w1"}',
      ]);
      assert.equal((await ws.nextOf("final", "r5")).replayed, true);

      for (
        const [id, service, body, key] of [
          ["b1", "org.plantd.State", set, ""],
          ["b2", "org.plantd.State", set, "é"],
          ["b3", "org.plantd.module.Echo", ["echo", "{}"], "w9"],
          ["b4", "org.plantd.State", ["state-get", '{"service":"ws","key":"k"}'], "w9"],
          ["b5", "org.plantd.State", [
            "state-set-many",
            '{"service":"ws","entries":{"k":"v1"},"idempotency_key":"w2"}',
          ], "w1"],
        ] as const
      ) {
        ws.send({ type: "request", id, service, body, idempotency_key: key });
        const error = await ws.nextOf("error", id);
        assert.equal(error.code, "BAD_REQUEST", `${id}: ${error.message}`);
      }
    } finally {
      await ws.close();
    }
  });
});

Deno.test("keys are per user: two users' equal keys do not collide, and each retry gets its own user's reply", async () => {
  await withSecuredSystem(async (system) => {
    const ada = bearer(
      await tokenWith(["state:data:write", "state:data:read"], { sub: "user:ada" }),
    );
    const bob = bearer(
      await tokenWith(["state:data:write", "state:data:read"], { sub: "user:bob" }),
    );
    const put = (headers: Record<string, string>, value: string) =>
      http(system, "PUT", "/api/state/shared/k", { body: value, key: "same", headers });
    const adaFirst = await put(ada, "from-ada");
    assert.equal(adaFirst.status, 200, adaFirst.body);
    const bobFirst = await put(bob, "from-bob");
    assert.equal(bobFirst.status, 200, "not a 422: bob's key is his own");
    assert.equal(bobFirst.replayed, null, "not ada's reply");
    assert.equal(JSON.parse(bobFirst.body).revision, 2);
    const adaRetry = await put(ada, "from-ada");
    assert.equal(adaRetry.replayed, "true");
    assert.equal(adaRetry.body, adaFirst.body);
    const bobRetry = await put(bob, "from-bob");
    assert.equal(bobRetry.body, bobFirst.body);
    const read = await http(system, "GET", "/api/state/shared/k", { headers: ada });
    assert.equal(JSON.parse(read.body).revision, 2);
  });
});

function spawnState(db: string, endpoint: string): WatchedChild {
  return spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "state",
        "--db",
        db,
        "--broker-endpoint",
        endpoint,
        "--health-port",
        String(freePort()),
        "--log-level",
        "error",
        "--bus-endpoint",
        "",
        "--heartbeat-interval-ms",
        "200",
        "--heartbeat-liveness",
        "10",
      ],
      stdout: "null",
      stderr: "piped",
    }),
  );
}

Deno.test("a key survives a SIGKILL of the state worker: the retry after the restart is not applied again", async () => {
  const dir = await Deno.makeTempDir();
  const db = `${dir}/state.db`;
  const children: WatchedChild[] = [];
  try {
    await withSystem(async (system) => {
      // The worker as a process of its own, on a file: SIGKILL is then real.
      await system.stopState();
      children.push(spawnState(db, system.brokerEndpoint));
      const put = () => http(system, "PUT", "/api/state/ghost/k1", { body: "stale1", key: "r1" });
      let first: Answer | undefined;
      await waitFor(async () => (first = await put()).status === 200, {
        timeoutMs: 30_000,
        what: () => `the state worker process to serve (${first?.status} ${first?.body})`,
      });
      assert.equal(JSON.parse(first!.body).revision, 1);

      await children[0]!.stop("SIGKILL");
      children.push(spawnState(db, system.brokerEndpoint));
      let retry: Answer | undefined;
      // Until the broker drops the killed worker a request may go to it and fail.
      await waitFor(async () => (retry = await put()).status === 200, {
        timeoutMs: 30_000,
        what: () => `the restarted worker to serve (${retry?.status} ${retry?.body})`,
      });
      assert.equal(retry!.replayed, "true", "answered from the stored key");
      assert.equal(retry!.body, first!.body);
      const read = await http(system, "GET", "/api/state/ghost/k1");
      assert.equal(JSON.parse(read.body).revision, 1, "applied once across the restart");
    }, { state: { db } });
  } finally {
    for (const child of children) await child.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an expired key is purged, and a retry after the window applies again", async () => {
  await withSystem(async (system) => {
    const put = () => http(system, "PUT", "/api/state/window/k", { body: "v", key: "t1" });
    assert.equal(JSON.parse((await put()).body).revision, 1);
    assert.equal((await put()).replayed, "true", "within the window");
    const purged = async () => {
      const metric = await system.registry.getSingleMetric("state_idempotency_keys_purged_total")
        ?.get();
      return metric?.values[0]?.value ?? 0;
    };
    await waitFor(async () => await purged() >= 1, {
      timeoutMs: 15_000,
      what: "the expired key's purge",
    });
    const again = await put();
    assert.equal(again.replayed, null, "a new request once the key is gone");
    assert.equal(JSON.parse(again.body).revision, 2);
  }, { state: { idempotency_window_s: 1 } });
});
