/** The state bus key of state service and gateway (config/state_bus.ts). */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { gatewayConfig, stateConfig } from "./components.ts";
import { ConfigError, loadConfig } from "./load.ts";
import { stateBusKey } from "./state_bus.ts";

const SECRET = "a state bus secret of 32+ characters";
const JWT = "a jwt secret of at least 32 characters";
const encoder = new TextEncoder();
const files = (map: Record<string, string>) => (path: string) => {
  if (!(path in map)) throw new Deno.errors.NotFound(`No such file: ${path}`);
  return map[path]!;
};

Deno.test("the key: state_bus_secret, else its file, else derived from jwt_secret, else none", () => {
  assert.deepEqual(stateBusKey("state", { state_bus_secret: SECRET, jwt_secret: JWT }), {
    key: encoder.encode(SECRET),
    source: "state_bus_secret",
  });
  const read = files({ "bus.key": `\n${SECRET}\n` });
  assert.deepEqual(stateBusKey("state", { state_bus_secret_file: "bus.key" }, read), {
    key: encoder.encode(SECRET),
    source: "state_bus_secret_file",
  });
  const derived = stateBusKey("gateway", { jwt_secret: JWT });
  assert.equal(derived?.source, "jwt_secret");
  assert.deepEqual(
    derived?.key,
    new Uint8Array(createHmac("sha256", JWT).update("plantd state bus v1").digest()),
  );
  // Not the JWT secret itself: a change event's MAC is never one made with the token key.
  assert.notDeepEqual(derived?.key, encoder.encode(JWT));
  assert.equal(stateBusKey("gateway", {}), undefined);
});

Deno.test("a bad state bus key stops the component with a message naming the key", () => {
  const refused = (work: () => unknown, pattern: RegExp) =>
    assert.throws(work, (e: Error) => e instanceof ConfigError && pattern.test(e.message));
  refused(
    () => stateBusKey("state", { state_bus_secret: SECRET, state_bus_secret_file: "f" }),
    /state config: set 'state_bus_secret' or 'state_bus_secret_file', not both/,
  );
  refused(
    () => stateBusKey("gateway", { state_bus_secret_file: "missing" }, files({})),
    /gateway config: cannot read 'state_bus_secret_file' missing/,
  );
  refused(
    () => stateBusKey("gateway", { state_bus_secret_file: "short" }, files({ short: "abc\n" })),
    /'state_bus_secret_file' short must hold at least 32 characters/,
  );
  refused(
    () => loadConfig(stateConfig, { args: [], env: { PLANTD_STATE_STATE_BUS_SECRET: "short" } }),
    /state_bus_secret/,
  );
  refused(
    () => loadConfig(gatewayConfig, { args: ["--state-bus-secret", "short"], env: {} }),
    /state_bus_secret/,
  );
  assert.equal(
    loadConfig(stateConfig, { args: [], env: { PLANTD_STATE_STATE_BUS_SECRET: SECRET } })
      .state_bus_secret,
    SECRET,
  );
  const gateway = loadConfig(gatewayConfig, { args: [], env: {} });
  assert.equal(gateway.state_bus_max_skew_ms, 30_000);
});
