/** Whether the gateway sees every state change (gateway/state_coherence.ts). */
import assert from "node:assert/strict";
import { type LossReason, StateCoherence } from "./state_coherence.ts";

function tracker(workers = 4) {
  const lost: LossReason[] = [];
  const time = { now: 1_000, workers };
  const coherence = new StateCoherence({
    onLost: (reason) => lost.push(reason),
    workers: () => time.workers,
    now: () => time.now,
  });
  return { coherence, lost, time };
}

Deno.test("complete once a publisher's heartbeat covers the broker's workers; numbers in order keep it", () => {
  const { coherence, lost } = tracker();
  assert.equal(coherence.check(), false, "nothing heard yet");
  coherence.heartbeat("a", 0, 1000, 4);
  assert.equal(coherence.check(), true);
  coherence.change("a", 1);
  coherence.change("a", 2);
  coherence.heartbeat("a", 2, 1000, 4);
  assert.equal(coherence.check(), true);
  assert.deepEqual(lost, []);
});

Deno.test("a missing number, in a change or a heartbeat, is a gap", () => {
  const { coherence, lost } = tracker();
  coherence.heartbeat("a", 0, 1000, 4);
  coherence.change("a", 1);
  coherence.change("a", 3);
  assert.deepEqual(lost, ["gap"]);
  // The last event before a heartbeat was lost: only the heartbeat shows it.
  coherence.heartbeat("a", 4, 1000, 4);
  assert.deepEqual(lost, ["gap", "gap"]);
  coherence.change("a", 5);
  assert.deepEqual(lost, ["gap", "gap"], "in step again");
});

Deno.test("a publisher first heard after its first event joined late; from its start it did not", () => {
  const { coherence, lost } = tracker();
  coherence.heartbeat("a", 7, 1000, 4);
  coherence.change("b", 1);
  coherence.change("c", 2);
  assert.deepEqual(lost, ["late_join", "late_join"]);
});

Deno.test("a publisher whose heartbeats stop is forgotten after liveness x period, and that is a loss", () => {
  const { coherence, lost, time } = tracker();
  coherence.heartbeat("a", 0, 1000, 4);
  time.now += 2_999;
  assert.equal(coherence.check(), true);
  time.now += 1;
  assert.equal(coherence.check(), false);
  assert.deepEqual(lost, ["silent"]);
  assert.equal(coherence.publishers, 0);
  assert.equal(coherence.check(), false);
  assert.deepEqual(lost, ["silent"], "told once");
});

Deno.test("more broker workers than the publishers account for: incomplete, a loss when it happens", () => {
  const { coherence, lost, time } = tracker(4);
  coherence.heartbeat("a", 0, 1000, 4);
  assert.equal(coherence.check(), true);
  time.workers = 5; // a worker whose events never come here (a Go state service)
  assert.equal(coherence.check(), false);
  assert.deepEqual(lost, ["unseen_worker"]);
  coherence.heartbeat("b", 0, 1000, 1);
  assert.equal(coherence.check(), true, "its heartbeat accounts for it");
  time.workers = 3; // fewer (a connection being re-made): still complete
  assert.equal(coherence.check(), true);
});
