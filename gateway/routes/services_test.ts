/**
 * `/api/services` through `app.request()` with a fake broker client
 * (tests/_app.ts): the generic bridge's request frames and body checks, the
 * directory's fast refusals, how Majordomo failures become statuses, and
 * the service list.
 */
import assert from "node:assert/strict";
import { MdpBrokerError, MdpTimeoutError } from "../../mdp/errors.ts";
import { STATE_SERVICE } from "../../state/operations.ts";
import { errorOf, json, service, withApp } from "../../tests/_app.ts";

const ECHO = "org.plantd.module.Echo";
const LISTED = [service(STATE_SERVICE), service(ECHO, 2)];

Deno.test("POST /api/services/{service}/{operation}: the JSON body is the frame after the operation, reply frames come back as JSON, text or base64", async () => {
  await withApp(async ({ request, calls }) => {
    const response = await request(
      "POST",
      `/api/services/${ECHO}/shout?timeout_ms=2500`,
      json({ n: 1 }),
    );
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), {
      service: ECHO,
      frames: [
        { text: '{"ok":true}', json: { ok: true } },
        { text: "plain" },
        { base64: "/wA=" },
      ],
    });
    assert.deepEqual(calls, [{ service: ECHO, body: ["shout", '{"n":1}'], timeoutMs: 2500 }]);

    const empty = await request("POST", `/api/services/${ECHO}/ping`);
    assert.equal(empty.status, 200);
    await empty.body?.cancel();
    assert.deepEqual(calls[1]!.body, ["ping", "{}"], "no body: {}");
    assert.equal(calls[1]!.timeoutMs, 1000, "the gateway's request timeout by default");
  }, {
    services: LISTED,
    answer: (call) =>
      call.service === ECHO ? ['{"ok":true}', "plain", new Uint8Array([0xff, 0])] : undefined,
  });
});

Deno.test("POST /api/services: a body that is not JSON is 400, another content type 415, a bad timeout_ms 400, all before any call", async () => {
  await withApp(async ({ request, calls }) => {
    const notJson = await request("POST", `/api/services/${ECHO}/op`, {
      body: "{not json",
      headers: { "content-type": "application/json" },
    });
    assert.deepEqual(await errorOf(notJson), {
      status: 400,
      code: "BAD_REQUEST",
      message: "Body is not valid JSON",
    });

    const text = await request("POST", `/api/services/${ECHO}/op`, {
      body: "{}",
      headers: { "content-type": "text/plain" },
    });
    const unsupported = await errorOf(text);
    assert.deepEqual([unsupported.status, unsupported.code], [415, "UNSUPPORTED_MEDIA_TYPE"]);

    for (const timeout of ["0", "300001", "soon"]) {
      const bad = await request("POST", `/api/services/${ECHO}/op?timeout_ms=${timeout}`);
      const error = await errorOf(bad);
      assert.deepEqual([error.status, error.code], [400, "BAD_REQUEST"], timeout);
      assert.match(error.message, /^timeout_ms: /);
    }

    const keyed = await request("POST", `/api/services/${ECHO}/op`, {
      headers: { "idempotency-key": "k1" },
    });
    const notState = await errorOf(keyed);
    assert.equal(notState.status, 400);
    assert.match(notState.message, /^An idempotency key applies to org\.plantd\.State write/);
    assert.deepEqual(calls, []);
  }, { services: LISTED });
});

Deno.test("POST /api/services: 503 at once for a service the broker lists no worker for; the broker's own services are always sent", async () => {
  await withApp(async ({ request, calls }) => {
    const refused = await request("POST", "/api/services/org.plantd.Nobody/op", json({}));
    assert.deepEqual(await errorOf(refused), {
      status: 503,
      code: "SERVICE_UNAVAILABLE",
      message: "No worker serves 'org.plantd.Nobody'",
      service: "org.plantd.Nobody",
    });
    assert.equal(calls.length, 0, "refused without a call");

    for (const own of ["mmi.service", "org.plantd.Broker"]) {
      const sent = await request("POST", `/api/services/${own}/services`, json({}));
      assert.equal(sent.status, 200, own);
      await sent.body?.cancel();
    }
    assert.deepEqual(calls.map((c) => c.service), ["mmi.service"]);
  }, { services: LISTED });
});

Deno.test("POST /api/services: a timeout is 504, a lost worker 502 WORKER_LOST, a full queue 503", async () => {
  const failures: Record<string, Error> = {
    slow: new MdpTimeoutError(ECHO, 1000, 1),
    lost: new MdpBrokerError(ECHO, "WORKER_LOST", "The worker went away"),
    full: new MdpBrokerError(ECHO, "QUEUE_FULL", "Too many requests queued"),
  };
  await withApp(async ({ request }) => {
    const slow = await errorOf(await request("POST", `/api/services/${ECHO}/slow`));
    assert.deepEqual([slow.status, slow.code, slow.service], [504, "TIMEOUT", ECHO]);
    const lost = await errorOf(await request("POST", `/api/services/${ECHO}/lost`));
    assert.deepEqual(
      [lost.status, lost.code, lost.upstream_code],
      [502, "WORKER_LOST", "WORKER_LOST"],
    );
    const full = await errorOf(await request("POST", `/api/services/${ECHO}/full`));
    assert.deepEqual([full.status, full.code], [503, "SERVICE_UNAVAILABLE"]);
  }, {
    services: LISTED,
    answer: (call) => {
      const failure = failures[call.body[0]!];
      return failure ? Promise.reject(failure) : undefined;
    },
  });
});

Deno.test("GET /api/services lists the broker's services by name; with the connection down it is 503", async () => {
  let up = true;
  await withApp(async ({ request }) => {
    const listed = await request("GET", "/api/services");
    assert.equal(listed.status, 200);
    assert.deepEqual(await listed.json(), {
      count: 2,
      services: [service(ECHO, 2), service(STATE_SERVICE)],
    });
    up = false;
    const down = await errorOf(await request("GET", "/api/services"));
    assert.deepEqual([down.status, down.code], [503, "SERVICE_UNAVAILABLE"]);
    assert.match(down.message, /^Broker not reachable: the connection to the broker is down/);
  }, { services: [service(STATE_SERVICE), service(ECHO, 2)], connected: () => up });
});
