/**
 * The Binary Star state machine (broker/binary_star.ts): the guide's
 * transitions, table by table, and the two rules that keep a pair from
 * splitting its brain: no failover while the peer is alive, and none
 * without a client request. And the broker's side of the vote.
 */
import assert from "node:assert/strict";
import { encodeClientRequest, frame, text } from "../mdp/protocol.ts";
import { BinaryStar, type PairRole, type PairState } from "./binary_star.ts";
import { Broker } from "./broker.ts";

const HEARTBEAT = 1000;

/** A state machine on a clock the test moves by hand. */
function machine(role: PairRole) {
  let now = 1_000_000;
  const fsm = new BinaryStar(role, { heartbeatMs: HEARTBEAT, now: () => now });
  return { fsm, advance: (ms: number) => now += ms };
}

/** A machine of `role` brought into `state` the way a running pair gets there. */
function inState(role: PairRole, state: PairState) {
  const m = machine(role);
  const other: PairRole = role === "primary" ? "backup" : "primary";
  if (state === "active") {
    if (role === "primary") m.fsm.onPeer("backup", "backup");
    else {
      m.fsm.onPeer("active", "primary");
      m.advance(3 * HEARTBEAT);
      assert.ok(m.fsm.onClientRequest().accept);
    }
  } else if (state === "passive") {
    m.fsm.onPeer("active", other);
  } else {
    assert.equal(state, role, "a machine starts in its role's state only");
  }
  assert.equal(m.fsm.state, state);
  return m;
}

Deno.test("binary star: a pair starting together ends primary active, backup passive", () => {
  const primary = machine("primary");
  const backup = machine("backup");
  assert.equal(primary.fsm.state, "primary");
  assert.equal(backup.fsm.state, "backup");
  // Each hears the other's starting state first.
  assert.deepEqual(backup.fsm.onPeer("primary", "primary"), {});
  assert.equal(backup.fsm.state, "backup");
  assert.equal(primary.fsm.onPeer("backup", "backup").transition?.to, "active");
  assert.equal(backup.fsm.onPeer("active", "primary").transition?.to, "passive");
  assert.deepEqual(primary.fsm.onPeer("passive", "backup"), {});
  assert.equal(primary.fsm.state, "active");
  assert.ok(primary.fsm.onClientRequest().accept);
  assert.equal(backup.fsm.onClientRequest().accept, false);
});

// Peer reports: [role, state before, peer's state, state after, error expected].
const PEER_TABLE: Array<[PairRole, PairState, PairState, PairState, boolean]> = [
  // Primary waiting for its peer.
  ["primary", "primary", "backup", "active", false],
  ["primary", "primary", "active", "passive", false],
  ["primary", "primary", "passive", "primary", false],
  ["primary", "primary", "primary", "primary", true],
  // Backup waiting for its peer.
  ["backup", "backup", "active", "passive", false],
  ["backup", "backup", "primary", "backup", false],
  ["backup", "backup", "passive", "backup", false],
  ["backup", "backup", "backup", "backup", true],
  // Active: a restarting peer (primary or backup) goes passive on hearing us.
  ["primary", "active", "passive", "active", false],
  ["primary", "active", "backup", "active", false],
  ["backup", "active", "passive", "active", false],
  ["backup", "active", "primary", "active", false],
  // Two actives (the guide aborts): the backup gives way.
  ["primary", "active", "active", "active", true],
  ["backup", "active", "active", "passive", true],
  // Passive: the active peer restarting means we take over.
  ["primary", "passive", "active", "passive", false],
  ["backup", "passive", "active", "passive", false],
  ["primary", "passive", "backup", "active", false],
  ["backup", "passive", "primary", "active", false],
  // Two passives (the guide aborts): the primary takes over.
  ["primary", "passive", "passive", "active", true],
  ["backup", "passive", "passive", "passive", true],
];

for (const [role, before, peer, after, error] of PEER_TABLE) {
  Deno.test(`binary star: ${role} in ${before} hearing peer ${peer} -> ${after}${error ? " (error)" : ""}`, () => {
    const { fsm } = inState(role, before);
    const outcome = fsm.onPeer(peer);
    assert.equal(fsm.state, after);
    assert.equal(outcome.transition?.to, after === before ? undefined : after);
    assert.equal(outcome.error !== undefined, error, outcome.error ?? "no error");
    assert.ok(fsm.peerAlive, "any report counts as a live peer");
  });
}

// Client requests: [role, state, peer silent?, accepted, state after].
const CLIENT_TABLE: Array<[PairRole, PairState, boolean, boolean, PairState]> = [
  ["primary", "active", false, true, "active"],
  ["primary", "active", true, true, "active"],
  ["backup", "active", false, true, "active"],
  ["backup", "active", true, true, "active"],
  // No failover while the peer is alive.
  ["primary", "passive", false, false, "passive"],
  ["backup", "passive", false, false, "passive"],
  // Failover: the peer silent for two heartbeats, and a client asks.
  ["primary", "passive", true, true, "active"],
  ["backup", "passive", true, true, "active"],
  // A backup that never heard its primary never serves.
  ["backup", "backup", false, false, "backup"],
  ["backup", "backup", true, false, "backup"],
  // A starting primary serves alone once no backup spoke for two heartbeats.
  ["primary", "primary", false, false, "primary"],
  ["primary", "primary", true, true, "active"],
];

for (const [role, state, silent, accept, after] of CLIENT_TABLE) {
  Deno.test(`binary star: ${role} in ${state}, peer ${silent ? "silent" : "alive"}, client request ${accept ? "served" : "refused"} -> ${after}`, () => {
    const m = inState(role, state);
    if (silent) m.advance(2 * HEARTBEAT + 1);
    const outcome = m.fsm.onClientRequest();
    assert.equal(outcome.accept, accept);
    assert.equal(m.fsm.state, after);
    assert.equal(outcome.transition?.to, after === state ? undefined : after);
  });
}

Deno.test("binary star: no failover without a client request, however long the peer is silent", () => {
  const { fsm, advance } = inState("backup", "passive");
  for (let i = 0; i < 100; i++) {
    advance(HEARTBEAT);
    assert.equal(fsm.state, "passive");
    assert.equal(fsm.active, false);
  }
  assert.equal(fsm.peerAlive, false);
  assert.equal(fsm.onClientRequest().transition?.to, "active");
});

Deno.test("binary star: no failover while the peer is alive, however many clients ask", () => {
  const { fsm, advance } = inState("backup", "passive");
  for (let i = 0; i < 100; i++) {
    // The peer reports every heartbeat; silence up to two heartbeats is still alive.
    advance(HEARTBEAT);
    fsm.onPeer("active", "primary");
    advance(2 * HEARTBEAT);
    assert.equal(fsm.onClientRequest().accept, false);
    assert.equal(fsm.state, "passive");
  }
  advance(1);
  assert.equal(fsm.onClientRequest().accept, true, "one millisecond past two heartbeats");
});

Deno.test("binary star: a primary restarted while the backup is active comes back passive without serving", () => {
  const backup = inState("backup", "active");
  const primary = machine("primary");
  // Clients that ask the restarted primary before it hears its peer are refused.
  assert.equal(primary.fsm.onClientRequest().accept, false);
  assert.deepEqual(backup.fsm.onPeer("primary", "primary"), {});
  assert.equal(backup.fsm.state, "active");
  assert.equal(primary.fsm.onPeer("active", "backup").transition?.to, "passive");
  primary.advance(HEARTBEAT);
  assert.equal(primary.fsm.onClientRequest().accept, false);
  assert.equal(backup.fsm.onClientRequest().accept, true);
});

Deno.test("binary star: a peer with the same role is an error, counted alive, and changes nothing", () => {
  const { fsm, advance } = machine("primary");
  advance(5 * HEARTBEAT);
  const outcome = fsm.onPeer("active", "primary");
  assert.match(outcome.error ?? "", /also the primary/);
  assert.equal(outcome.transition, undefined);
  assert.equal(fsm.state, "primary");
  assert.equal(fsm.onClientRequest().accept, false, "a misconfigured pair does not serve");
});

Deno.test("binary star: the heartbeat must be positive", () => {
  assert.throws(() => new BinaryStar("primary", { heartbeatMs: 0 }), RangeError);
});

Deno.test("broker: a request the pair's vote refuses gets BROKER_PASSIVE, unqueued; going passive refuses the queue", () => {
  const sent: Array<{ to: string; body: string }> = [];
  let admit = true;
  const broker = new Broker(
    (identity, frames) =>
      sent.push({ to: new TextDecoder().decode(identity), body: text(frames.at(-1)!) }),
    { admitClient: () => admit },
  );
  const request = (client: string, body: string) =>
    broker.handle([
      new TextEncoder().encode(client),
      ...encodeClientRequest("plantd", "svc", [frame(body)]),
    ]);
  // Admitted with no worker: queued.
  request("c1", "queued");
  assert.equal(broker.services()[0]?.queued, 1);
  assert.equal(sent.length, 0);
  admit = false;
  request("c2", "refused");
  assert.equal(broker.services()[0]?.queued, 1, "a refused request is not queued");
  assert.equal(sent.length, 1);
  assert.equal(sent[0]!.to, "c2");
  assert.equal(JSON.parse(sent[0]!.body).mdp.code, "BROKER_PASSIVE");
  broker.refuseQueued();
  assert.equal(broker.services().length, 0, "the queue is empty");
  assert.equal(sent[1]!.to, "c1");
  assert.equal(JSON.parse(sent[1]!.body).mdp.code, "BROKER_PASSIVE");
});
