/**
 * The alarms component against a state service that checks tokens: with the
 * gateway's signing key it signs call credentials of `service:alarms` for its
 * own scopes and works end to end; without one it is refused and says so
 * (log and health) instead of crashing; and its credentials write nothing
 * outside its own scopes.
 */
import assert from "node:assert/strict";
import { decodeJwt } from "jose";
import { Publisher } from "../bus/publisher.ts";
import { ALARMS_SCOPE, RULES_SCOPE } from "../alarms/rules.ts";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { startAlarms, stateRequests } from "../roles/alarms.ts";
import { StateClient } from "../state/client.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { logger } from "../telemetry/log.ts";
import { bearer, call, SECRET, tokenWith, withSecuredSystem } from "./_auth.ts";
import { alarmsSettings } from "./_alarms.ts";
import { freePort, waitFor } from "./_helpers.ts";
import type { System } from "./_system.ts";

/** A state client of the broker writing each request's JSON with `json`. */
function stateClientFor(system: System, json: ReturnType<typeof stateRequests>) {
  const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 10_000 });
  const state = new StateClient(
    (service, body, timeoutMs) => client.request(service, body, { timeoutMs: timeoutMs ?? 10_000 }),
    { require: () => Promise.resolve() },
    undefined,
    json,
  );
  return { state, client };
}

Deno.test("alarms with the gateway's secret: rules and alarms through a state service that checks tokens", async () => {
  await withSecuredSystem(async (system) => {
    const alarms = startAlarms(alarmsSettings(system, { jwt_secret: SECRET }));
    const metrics = new Publisher(system.frontends.metric!, { sendHighWaterMark: 0 });
    try {
      await waitFor(() => alarms.service.ready, { timeoutMs: 20_000, what: "rules loaded" });
      const writer = bearer(await tokenWith(["alarms:read", "alarms:write"]));
      const put = await call(system.url, "PUT", "/api/alarms/rules/boiler-hot", {
        device: "boiler",
        channel: "temp",
        kind: "above",
        threshold: 80,
        severity: "critical",
      }, writer);
      assert.equal(put.status, 200, JSON.stringify(put.body));
      await waitFor(() => {
        metrics.publish(
          "org.plantd.Metric",
          JSON.stringify({
            time: new Date().toISOString(),
            device: "boiler",
            channel: "temp",
            value: 90,
          }),
        );
        return alarms.service.engine.counts().active === 1;
      }, { timeoutMs: 20_000, intervalMs: 100, what: "the raised alarm" });
      // Persisted in the state service, under the alarms' own credentials.
      const reader = bearer(await tokenWith([`state:scope:${ALARMS_SCOPE}:read`]));
      await waitFor(async () => {
        const keys = await call(
          system.url,
          "GET",
          `/api/state/${encodeURIComponent(ALARMS_SCOPE)}`,
          undefined,
          reader,
        );
        return keys.status === 200 && JSON.stringify(keys.body).includes("boiler-hot");
      }, { timeoutMs: 20_000, what: "the alarm stored in the state service" });
      assert.equal(alarms.service.stateError, undefined);
    } finally {
      await metrics.close();
      await alarms.close();
    }
  });
});

Deno.test("alarms without a signing key: refused by the state service, reported in the log and on /health, still running", async () => {
  await withSecuredSystem(async (system) => {
    const port = freePort();
    const alarms = startAlarms(alarmsSettings(system, { health_port: port }));
    try {
      await waitFor(() => alarms.service.stateError !== undefined, {
        timeoutMs: 20_000,
        what: "the refusal",
      });
      assert.match(alarms.service.stateError!, /refused.*PLANTD_ALARMS_JWT_SECRET/);
      assert.equal(alarms.service.ready, false);
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      const body = await health.text();
      assert.equal(health.status, 503, body);
      assert.match(body, /state service refused the request/);
      // Not a crash: still registered and answering its own service.
      await waitFor(() => alarms.worker.connected, { what: "the alarms worker" });
    } finally {
      await alarms.close();
    }
  });
});

Deno.test("the alarms' credentials name only its own scopes: another scope and deleting its own are refused", async () => {
  await withSecuredSystem(async (system) => {
    const admin = await tokenWith(["state:admin:full"]);
    const asAdmin = stateClientFor(
      system,
      (_operation, request) => JSON.stringify({ ...request, token: admin }),
    );
    const config = alarmsSettings(system, { jwt_secret: SECRET });
    const json = stateRequests(config, logger("alarms"))!;
    const own = stateClientFor(system, json);
    try {
      await asAdmin.state.createScope("plant");
      await asAdmin.state.createScope(RULES_SCOPE);
      // Its own scope: written, by service:alarms with only that scope's grant.
      await own.state.set(RULES_SCOPE, "r", "{}");
      const signed = JSON.parse(json("state-set", { service: RULES_SCOPE, key: "r", value: "{}" }));
      const claims = decodeJwt(signed.token);
      assert.equal(claims.sub, "service:alarms");
      assert.deepEqual(claims.perms, [`state:scope:${RULES_SCOPE}:write`]);

      // Another scope: the state service refuses.
      await assert.rejects(
        own.state.set("plant", "k", "v"),
        (error: Error & { code?: string }) =>
          ["UNAUTHENTICATED", "FORBIDDEN"].includes(error.code ?? "") || assert.fail(error),
      );
      // Its own credential moved to another scope's request: refused as well.
      const moved = JSON.stringify({ ...signed, service: "plant" });
      const reply = JSON.parse(
        text((await own.client.request(STATE_SERVICE, ["state-set", moved]))[0]!),
      );
      assert.ok(
        ["PERMISSION_DENIED", "AUTHENTICATION_FAILED"].includes(reply.error),
        JSON.stringify(reply),
      );
      // Nor may it delete its own scope.
      await assert.rejects(
        own.state.deleteScope(RULES_SCOPE),
        (error: Error & { code?: string }) =>
          ["UNAUTHENTICATED", "FORBIDDEN"].includes(error.code ?? "") || assert.fail(error),
      );
      assert.deepEqual(await asAdmin.state.listKeys("plant"), []);
      assert.deepEqual(await asAdmin.state.listScopes().then((l) => l.includes(RULES_SCOPE)), true);
    } finally {
      await own.client.close();
      await asAdmin.client.close();
    }
  });
});
