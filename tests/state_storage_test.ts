// deno-lint-ignore-file no-explicit-any -- the tests read JSON bodies of many shapes
/**
 * A full state database (SQLite's max_page_count through the state worker's
 * own max_db_bytes, as a full disk fails): the worker's /healthz says so while
 * writes fail, clients get STORAGE_FULL (507 through the gateway), and health
 * is UP again once a write succeeds.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { stateConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { startState } from "../roles/state.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { freePort, waitFor, withBroker } from "./_helpers.ts";
import { startSystem } from "./_system.ts";

/** Room for the schema and a few 8 KiB values, not for 64 of them. */
const MAX_DB_BYTES = 128 * 1024;
const VALUE = "x".repeat(8 * 1024);

async function stateReply(client: MdpClient, operation: string, request: unknown) {
  const [reply] = await client.request(STATE_SERVICE, [operation, JSON.stringify(request)]);
  return JSON.parse(text(reply!));
}

async function healthz(port: number): Promise<{ status: number; body: any }> {
  const response = await fetch(`http://127.0.0.1:${port}/healthz`);
  return { status: response.status, body: await response.json() };
}

Deno.test("the state worker's health is DOWN naming STORAGE_FULL while writes fail, UP once one succeeds", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await withBroker({}, async (server, track) => {
      const port = freePort();
      track(
        await startState(
          {
            ...loadConfig(stateConfig, { args: [], env: {} }),
            db: `${dir}/state.db`,
            max_db_bytes: MAX_DB_BYTES,
            broker_endpoint: server.endpoint,
            health_port: port,
            bus_endpoint: "",
          },
          undefined,
          new Registry(),
        ),
      );
      const client = track(new MdpClient(server.endpoint));
      // UP once connected to the broker.
      await waitFor(async () => (await healthz(port)).status === 200, {
        what: "the state worker UP",
      });

      let reply: any;
      for (let i = 0; i < 64; i++) {
        reply = await stateReply(client, "state-set", {
          service: "big",
          key: `k${i}`,
          value: VALUE,
        });
        if (reply.success !== true) break;
      }
      assert.equal(reply.error, "STORAGE_FULL", JSON.stringify(reply));
      assert.match(reply.message, /full/);

      let health = await healthz(port);
      assert.equal(health.status, 503);
      assert.equal(health.body.status, "DOWN");
      const writes = health.body.checks.find((c: any) => c.name === "store_writes");
      assert.equal(writes?.status, "DOWN");
      assert.match(writes.output, /^STORAGE_FULL: /);
      // Reads are still served from memory: the store itself answers.
      assert.equal(health.body.checks.find((c: any) => c.name === "store")?.status, "UP");

      // The service's own health operation says so too (gateways ask it).
      let data = (await stateReply(client, "health", {})).data;
      assert.equal(data.status, "degraded");
      assert.equal(data.write_failure, "STORAGE_FULL");
      assert.equal(data.store_available, true);

      // Freeing space (deleting needs none) lets the next write through.
      assert.equal((await stateReply(client, "delete-scope", { service: "big" })).success, true);
      reply = await stateReply(client, "state-set", { service: "small", key: "k", value: "v" });
      assert.equal(reply.success, true, JSON.stringify(reply));
      health = await healthz(port);
      assert.equal(health.status, 200, JSON.stringify(health.body));
      assert.equal(
        health.body.checks.find((c: any) => c.name === "store_writes")?.status,
        "UP",
      );
      data = (await stateReply(client, "health", {})).data;
      assert.equal(data.status, "healthy");
      assert.equal(data.write_failure, undefined);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a write to a full state database answers 507 STORAGE_FULL through the gateway", async () => {
  const system = await startSystem({ state: { max_db_bytes: MAX_DB_BYTES } });
  try {
    await waitFor(async () => {
      const response = await fetch(`${system.url}/api/state`);
      await response.body?.cancel();
      return response.ok;
    }, { what: "the state service behind the gateway" });
    let response: Response | undefined;
    let body: any;
    for (let i = 0; i < 64; i++) {
      response = await fetch(`${system.url}/api/state/big/k${i}`, {
        method: "PUT",
        body: VALUE,
        headers: { "content-type": "text/plain" },
      });
      body = await response.json();
      if (!response.ok) break;
    }
    assert.equal(response?.status, 507, JSON.stringify(body));
    assert.equal(body.error.code, "STORAGE_FULL");
    assert.match(body.error.message, /full/);
    // The gateway's /healthz shows it (not required: reads are still served).
    let writes: any;
    await waitFor(async () => {
      const health = await (await fetch(`${system.url}/healthz`)).json();
      writes = health.checks.find((c: { name: string }) => c.name === "state_writes");
      return writes?.status === "DOWN";
    }, { what: "state_writes DOWN on the gateway's /healthz" });
    assert.equal(writes.required, false);
    assert.match(writes.output, /STORAGE_FULL/);
    // Documented where clients look it up.
    const doc = await (await fetch(`${system.url}/api/openapi.json`)).json();
    assert.ok(doc.paths["/api/state/{scope}/{key}"].put.responses["507"], "PUT documents 507");
  } finally {
    await system.stop();
  }
});
