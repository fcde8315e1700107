/**
 * A broker pair in real processes (docs/ha.md): `main.ts broker` as primary
 * and backup, a `main.ts state` worker registered with both, MDP clients of
 * the pair here. SIGKILL of the primary under steady state writes: service
 * resumes on the backup, no acknowledged write is lost, none is applied
 * twice, none is applied after its caller was told it failed. The killed
 * primary restarted comes back passive (no split brain). Go-plantd-style
 * peers on one endpoint (Python, no deadline frames) keep working against
 * the active broker, and get BROKER_PASSIVE from the passive one.
 */
import assert from "node:assert/strict";
import { MdpClient } from "../mdp/client.ts";
import { MdpBrokerError } from "../mdp/errors.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { sharedPoller } from "../transport/fd_poller.ts";
import { waitFor, type WatchedChild } from "./_helpers.ts";
import {
  BrokerProcess,
  checkWrites,
  pairHealth,
  pairPorts,
  startStateProcess,
  WriteLoad,
} from "./_pair.ts";

const PYTHON = "/usr/bin/python3";
const PEER = new URL("./peers/mdp_peer.py", import.meta.url).pathname;
const HEARTBEAT_MS = 500;
const SCOPE = "ha";

/** A Python plantd-dialect client (as Go plantd's: one endpoint, no deadline frame). */
async function pythonClient(endpoint: string, service: string, body: string[]) {
  const output = await new Deno.Command(PYTHON, {
    args: [
      PEER,
      "client",
      "--endpoint",
      endpoint,
      "--dialect",
      "plantd",
      "--service",
      service,
      "--timeout-ms",
      "5000",
      "--",
      ...body,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const lines = new TextDecoder().decode(output.stdout).split("\n").filter((l) => l.trim());
  assert.equal(output.code, 0, `python client: ${lines}${new TextDecoder().decode(output.stderr)}`);
  return lines.map((line) => JSON.parse(line) as { event: string; body: string[] });
}

Deno.test("broker pair in processes: SIGKILL of the primary under steady writes fails over to the backup with no acknowledged write lost or applied twice; the restarted primary comes back passive; single-endpoint Go-style peers keep working", async () => {
  const ports = pairPorts();
  const endpoints = [ports.primary.endpoint, ports.backup.endpoint];
  const dir = await Deno.makeTempDir({ prefix: "ha-pair-" });
  const primary = new BrokerProcess(ports, "primary", HEARTBEAT_MS);
  let backup: BrokerProcess | undefined;
  let state: WatchedChild | undefined;
  let python: Deno.ChildProcess | undefined;
  const clients: MdpClient[] = [];
  const client = (list: string | string[]) => {
    const made = new MdpClient(list, { timeoutMs: 3000 });
    clients.push(made);
    return made;
  };
  try {
    // Alone for two heartbeats, the primary would serve alone; the backup is started at once.
    backup = new BrokerProcess(ports, "backup", HEARTBEAT_MS);
    await primary.waitState("active");
    await backup.waitState("passive");
    state = startStateProcess(endpoints, `${dir}/state.db`);
    const writer = client(endpoints);
    await waitFor(async () => {
      try {
        const [reply] = await writer.request(STATE_SERVICE, [
          "create-scope",
          JSON.stringify({ service: SCOPE }),
        ]);
        return JSON.parse(text(reply!)).success === true;
      } catch {
        return false;
      }
    }, { timeoutMs: 30_000, intervalMs: 200, what: () => `the state service: ${state?.stderr()}` });

    // Steady writes, then the primary dies.
    const load = new WriteLoad(writer, SCOPE, { rate: 200, maxInFlight: 256, timeoutMs: 3000 });
    await waitFor(() => load.acked >= 300, {
      timeoutMs: 30_000,
      what: "writes through the primary",
    });
    const killedAt = Date.now();
    await primary.kill();
    await waitFor(() => load.ackedSince(killedAt) >= 300, {
      timeoutMs: 30_000,
      what: () => `writes after the kill (backup ${backup?.child.stderr()})`,
    });
    await load.stop();
    const firstAck = load.firstAckSince(killedAt)!;
    // The backup serves alone: healthy, its peer check (not required) DOWN.
    const alone = await pairHealth(ports.backup.healthPort);
    assert.equal(alone.state, "active");
    assert.equal(alone.status, 200);
    assert.equal(alone.peerUp, false, alone.peer);
    assert.match(alone.peer, /no report from the peer/);

    const check = await checkWrites(writer, SCOPE, load.records);
    console.log(
      `failover: first write acknowledged ${firstAck - killedAt} ms after SIGKILL; ` +
        `${check.attempted} writes, ${check.acked} acknowledged, ${check.failed} failed ` +
        `(${check.failedApplied} of them applied before their caller was told)`,
    );
    assert.deepEqual(check.lost, [], "no acknowledged write lost");
    assert.deepEqual(check.duplicated, [], "no write applied twice");
    assert.deepEqual(check.phantoms, [], "no write applied after its caller was told it failed");
    assert.equal(check.acked + check.failed, check.attempted, "every write was answered");

    // The primary comes back: passive, since its peer is active. A client of the primary
    // alone asks from the start: the restarted primary must serve none of it (split brain).
    const probe = client(ports.primary.endpoint);
    let served = 0;
    let refusedPassive = 0;
    let probing = true;
    const prober = (async () => {
      while (probing) {
        try {
          await probe.request("org.plantd.Broker", ["services", "{}"], { timeoutMs: 1000 });
          served++;
        } catch (error) {
          if (error instanceof MdpBrokerError && error.code === "BROKER_PASSIVE") refusedPassive++;
        }
      }
    })();
    primary.restart();
    await primary.waitState("passive");
    await waitFor(() => refusedPassive > 0, { what: "a probe refused by the restarted primary" });
    probing = false;
    await prober;
    assert.equal(served, 0, "the restarted primary served no client while the backup was active");
    const health = await pairHealth(ports.primary.healthPort);
    assert.equal(health.status, 200, "passive is healthy");
    assert.ok(health.peerUp, health.peer);
    assert.equal((await pairHealth(ports.backup.healthPort)).state, "active");
    assert.doesNotMatch(primary.child.stderr(), /-> active/, "the restarted primary never served");
    // Writes go on through the backup; the passive primary refuses a client of its own.
    const after = await writer.request(STATE_SERVICE, [
      "state-set",
      JSON.stringify({ service: SCOPE, key: "after-restart", value: "x" }),
    ]);
    assert.equal(JSON.parse(text(after[0]!)).success, true);
    await assert.rejects(
      client(ports.primary.endpoint).request(STATE_SERVICE, ["health", "{}"]),
      (error: Error) => error instanceof MdpBrokerError && error.code === "BROKER_PASSIVE",
    );

    // Go-plantd-style peers on one endpoint: a worker and a client at the active broker.
    python = new Deno.Command(PYTHON, {
      args: [
        PEER,
        "worker",
        "--endpoint",
        ports.backup.endpoint,
        "--dialect",
        "plantd",
        "--service",
        "go.echo",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let events: Array<{ event: string; body: string[] }> = [];
    await waitFor(async () => {
      events = await pythonClient(ports.backup.endpoint, "go.echo", ["hello"]);
      return events.at(-1)?.event === "reply" && events.at(-1)?.body[0] === "hello";
    }, {
      timeoutMs: 15_000,
      intervalMs: 200,
      what: () => `an echo from the Go-style worker: ${JSON.stringify(events)}`,
    });
    // At the passive broker the same client gets a reply it can show: the broker's error.
    const refused = await pythonClient(ports.primary.endpoint, "go.echo", ["hello"]);
    assert.equal(refused.at(-1)?.event, "reply");
    assert.equal(JSON.parse(refused.at(-1)!.body[0]!).mdp.code, "BROKER_PASSIVE");
  } finally {
    for (const made of clients) await made.close();
    try {
      python?.kill("SIGKILL");
      await python?.status;
    } catch {
      // already gone
    }
    await state?.stop("SIGKILL");
    await backup?.kill();
    await primary.kill();
    await sharedPoller().idle();
    await Deno.remove(dir, { recursive: true });
  }
});
