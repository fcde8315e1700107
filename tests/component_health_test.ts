/**
 * Health checks that say what is true now: the broker's socket check follows
 * the socket, and a check's `lastUpdated` is when its status last changed,
 * not the time of the request.
 */
import assert from "node:assert/strict";
import { brokerConfig, echoConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { startBroker } from "../roles/broker.ts";
import { startEcho } from "../roles/echo.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { freePort, waitFor } from "./_helpers.ts";

interface Check {
  name: string;
  status: string;
  lastUpdated: string;
  output?: string;
}

async function health(port: number): Promise<{ status: number; checks: Check[] }> {
  const response = await fetch(`http://127.0.0.1:${port}/healthz`);
  return { status: response.status, checks: (await response.json()).checks };
}

const find = (checks: Check[], name: string) => checks.find((c) => c.name === name)!;

Deno.test("broker_socket goes DOWN when the broker's socket closes, while the health port still answers", async () => {
  const healthPort = freePort();
  const broker = await startBroker(loadConfig(brokerConfig, {
    args: ["--endpoint", "tcp://127.0.0.1:*", "--health-port", String(healthPort)],
    env: { PLANTD_BROKER_BUSES: "[]", PLANTD_BROKER_LOG_LEVEL: "error" },
  }));
  try {
    const up = await health(healthPort);
    assert.equal(up.status, 200);
    assert.equal(find(up.checks, "broker_socket").status, "UP");
    await broker.server.close();
    const down = await health(healthPort);
    assert.equal(down.status, 503);
    const check = find(down.checks, "broker_socket");
    assert.equal(check.status, "DOWN");
    assert.ok(check.output?.includes(broker.server.endpoint), JSON.stringify(check));
  } finally {
    await broker.close();
    await sharedPoller().idle();
  }
});

Deno.test("echo's broker_connection lastUpdated is when it came UP or went DOWN, not each read", async () => {
  const brokerPort = freePort();
  const echoHealth = freePort();
  const args = ["--endpoint", `tcp://127.0.0.1:${brokerPort}`, "--health-port", "0"];
  const env = { PLANTD_BROKER_BUSES: "[]", PLANTD_BROKER_LOG_LEVEL: "error" };
  let broker = await startBroker(loadConfig(brokerConfig, { args, env }));
  const echo = startEcho(loadConfig(echoConfig, {
    args: [
      "--broker-endpoint",
      `tcp://127.0.0.1:${brokerPort}`,
      "--health-port",
      String(echoHealth),
      "--heartbeat-interval-ms",
      "200",
    ],
    env: { PLANTD_MODULE_ECHO_LOG_LEVEL: "error" },
  }));
  try {
    let first: Check | undefined;
    await waitFor(async () => {
      first = find((await health(echoHealth)).checks, "broker_connection");
      return first.status === "UP";
    }, { what: "echo UP", timeoutMs: 10_000 });
    const readAt = Date.now();
    await waitFor(() => Date.now() > readAt + 1, { what: "the clock to move" });
    const again = find((await health(echoHealth)).checks, "broker_connection");
    assert.equal(again.status, "UP");
    assert.equal(again.lastUpdated, first!.lastUpdated, "unchanged while still UP");

    await broker.close();
    let down: Check | undefined;
    await waitFor(async () => {
      down = find((await health(echoHealth)).checks, "broker_connection");
      return down.status === "DOWN";
    }, { what: "echo DOWN", timeoutMs: 15_000 });
    assert.ok(Date.parse(down!.lastUpdated) > Date.parse(first!.lastUpdated));
    broker = await startBroker(loadConfig(brokerConfig, { args, env }));
  } finally {
    await echo.close();
    await broker.close();
    await sharedPoller().idle();
  }
});
