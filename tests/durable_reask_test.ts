/**
 * Asking again by key (mdp/durable_key.ts), the wire behaviour a reconnecting
 * client relies on: a durable request asked again from another connection is
 * attached to the pending one (its reply goes to the new connection, the
 * worker runs it once), answered from the stored reply once it was answered,
 * told it is a dead letter when it is one, and journaled and run once when
 * the broker never stored it. Requests to other services are not journaled.
 */
import assert from "node:assert/strict";
import { DurableRequests } from "../broker/durable.ts";
import { LibsqlJournal } from "../broker/journal_libsql.ts";
import type { BrokerServer } from "../broker/server.ts";
import { durableKeyFrame, keyHex, newDurableKey } from "../mdp/durable_key.ts";
import { MdpClient } from "../mdp/client.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { brokerOp } from "./_durable.ts";
import { Peer, str, waitFor, withBroker } from "./_helpers.ts";

const workerOptions = { heartbeatIntervalMs: 200, heartbeatLiveness: 10, reconnectMs: 100 };

async function withDurableBroker(
  body: (
    server: BrokerServer,
    track: <T extends { close(): unknown }>(closable: T) => T,
    journal: LibsqlJournal,
  ) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const journal = await LibsqlJournal.open({ location: `${dir}/j.db`, synchronous: "normal" });
  const durable = await DurableRequests.open(journal, {
    services: ["plant.*"],
    maxAttempts: 2,
    timeoutMs: 30_000,
  });
  try {
    await withBroker(
      { durable, heartbeatIntervalMs: 200 },
      (server, track) => body(server, track, journal),
    );
  } finally {
    await durable.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** A client request asked with `key` from a raw DEALER: id | key frame | "" | MDPC02 | REQUEST | service | body. */
function ask(
  peer: Peer,
  id: string,
  key: Uint8Array,
  reask: boolean,
  service: string,
  body: string,
) {
  return peer.send([id, durableKeyFrame(key, reask), "", "MDPC02", "REQUEST", service, body]);
}

/** The next final reply at `peer`, as its id and body texts. */
async function finalAt(peer: Peer): Promise<{ id: string; body: string[] }> {
  const reply = await peer.next({ timeoutMs: 10_000 });
  // id | "" | MDPC02 | FINAL | service | body…
  assert.equal(str(reply[3]), "FINAL", reply.map((f) => str(f)).join("|"));
  return { id: str(reply[0]), body: reply.slice(5).map((f) => str(f)) };
}

Deno.test("asked again from another connection while pending: attached, the worker runs it once and the new connection gets the reply", async () => {
  await withDurableBroker(async (server, track) => {
    const runs: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => release = resolve);
    track(
      new MdpWorker(server.endpoint, "plant.valve", async (body) => {
        runs.push(str(body[0]));
        await gate;
        return ["done", str(body[0])];
      }, workerOptions),
    );
    const key = newDurableKey();
    const first = track(new Peer(server.endpoint, { name: "first" }));
    await ask(first, "A", key, false, "plant.valve", "open");
    await waitFor(() => runs.length === 1, { what: "the worker running the request" });
    // The first connection is gone (a crash); the client asks again on a new one.
    await first.close();
    const second = track(new Peer(server.endpoint, { name: "second" }));
    await ask(second, "B", key, true, "plant.valve", "open");
    const ops = track(new MdpClient(server.endpoint));
    await waitFor(async () =>
      (await brokerOp(ops, "journal")).pending === 1 &&
      (await durableStatus(ops, key)) === "pending", { what: "the request still pending" });
    release();
    const reply = await finalAt(second);
    assert.deepEqual(reply, { id: "B", body: ["done", "open"] });
    assert.deepEqual(runs, ["open"], "the worker ran it once");
  });
});

async function durableStatus(ops: MdpClient, key: Uint8Array): Promise<unknown> {
  return (await brokerOp(ops, "durable-status", { id: keyHex(key) })).state;
}

Deno.test("asked again once answered: the stored reply, without running it again; a key never stored: journaled and run once", async () => {
  await withDurableBroker(async (server, track) => {
    const runs: string[] = [];
    track(
      new MdpWorker(server.endpoint, "plant.valve", (body) => {
        runs.push(str(body[0]));
        return ["done", str(body[0]), String(runs.length)];
      }, workerOptions),
    );
    const key = newDurableKey();
    const peer = track(new Peer(server.endpoint));
    await ask(peer, "A", key, false, "plant.valve", "close");
    assert.deepEqual(await finalAt(peer), { id: "A", body: ["done", "close", "1"] });
    const ops = track(new MdpClient(server.endpoint));
    await waitFor(async () => (await durableStatus(ops, key)) === "replied", {
      what: "the reply stored",
    });
    const again = track(new Peer(server.endpoint));
    await ask(again, "B", key, true, "plant.valve", "close");
    assert.deepEqual(await finalAt(again), { id: "B", body: ["done", "close", "1"] });
    assert.deepEqual(runs, ["close"], "answered from the journal");

    // Asked again, but the broker never stored it (it fell before the commit).
    const unknown = newDurableKey();
    await ask(again, "C", unknown, true, "plant.valve", "stop");
    assert.deepEqual(await finalAt(again), { id: "C", body: ["done", "stop", "2"] });
    assert.deepEqual(runs, ["close", "stop"]);
  });
});

Deno.test("asked again as a dead letter: told DEAD_LETTERED with its reason, not run", async () => {
  await withDurableBroker(async (server, track) => {
    const key = newDurableKey();
    const peer = track(new Peer(server.endpoint));
    // No worker: each lost worker counts; here two workers die holding it (max_attempts 2).
    for (let attempt = 0; attempt < 2; attempt++) {
      const dying = new Peer(server.endpoint, { name: `worker ${attempt}` });
      await dying.send(["", "MDPW02", "READY", "plant.valve"]);
      if (attempt === 0) await ask(peer, "A", key, false, "plant.valve", "poison");
      const request = await dying.next({ skip: (m) => !m.some((f) => str(f) === "REQUEST") });
      assert.equal(str(request.at(-1)), "poison");
      await dying.close();
    }
    const told = await finalAt(peer);
    assert.equal(told.id, "A");
    assert.match(told.body[0]!, /"code":"DEAD_LETTERED"/);
    assert.match(told.body[0]!, /worker_lost: its worker was lost 2 times/);
    const again = track(new Peer(server.endpoint));
    await ask(again, "B", key, true, "plant.valve", "poison");
    const reply = await finalAt(again);
    assert.equal(reply.id, "B");
    assert.match(reply.body[0]!, /"code":"DEAD_LETTERED"/);
  });
});

Deno.test("requests to services that are not durable are not journaled, and a key frame comes back to the client", async () => {
  await withDurableBroker(async (server, track, journal) => {
    track(new MdpWorker(server.endpoint, "echo", (body) => body, workerOptions));
    const peer = track(new Peer(server.endpoint));
    const key = newDurableKey();
    await ask(peer, "A", key, false, "echo", "hello");
    const reply = await peer.next({ timeoutMs: 10_000 });
    // id | key frame | "" | MDPC02 | FINAL | service | body: the stack as sent.
    assert.equal(str(reply[0]), "A");
    assert.deepEqual(reply[1], durableKeyFrame(key));
    assert.equal(str(reply.at(-1)), "hello");
    const client = track(new MdpClient(server.endpoint));
    const [answer] = await client.request("echo", ["x"], { durable: true });
    assert.equal(str(answer), "x");
    assert.deepEqual(await journal.counts(), { pending: 0, replies: 0, dead: 0 });
  });
});

Deno.test("plain MDP clients of a durable service (RFC 7 and RFC 18, no key, no deadline) get their replies as before; the request is journaled under a key of the broker's", async () => {
  await withDurableBroker(async (server, track, journal) => {
    track(
      new MdpWorker(server.endpoint, "plant.valve", (body) => ["done", ...body], workerOptions),
    );
    const rfc7 = track(new Peer(server.endpoint, { name: "rfc7" }));
    // A REQ socket's empty delimiter, then MDPC01 | service | body.
    await rfc7.send(["", "MDPC01", "plant.valve", "open"]);
    const reply7 = await rfc7.next({ timeoutMs: 10_000 });
    assert.deepEqual(reply7.map((f) => str(f)), ["", "MDPC01", "plant.valve", "done", "open"]);
    const rfc18 = track(new Peer(server.endpoint, { name: "rfc18" }));
    await rfc18.send(["MDPC02", [0x01], "plant.valve", "close"]);
    const reply18 = await rfc18.next({ timeoutMs: 10_000 });
    assert.deepEqual(reply18[1], Uint8Array.of(0x03), "FINAL");
    assert.deepEqual(reply18.slice(2).map((f) => str(f)), ["plant.valve", "done", "close"]);
    await waitFor(async () => (await journal.counts()).replies === 2, {
      what: "both replies kept",
    });
    assert.equal((await journal.counts()).pending, 0);
  });
});
