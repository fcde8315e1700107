/**
 * Call credentials taken once by the state service as a whole (issue 16):
 * the same credential with another delivery (a request a fake client made
 * with a captured credential) is refused and counted, by the worker that
 * took it and by any other worker on the same PostgreSQL store; the same
 * delivery again (the broker routing the request again after a worker was
 * lost) is served, a write with the reply it got the first time, applied once.
 */
import assert from "node:assert/strict";
import { CallSigner, serviceTokenCheck } from "../auth/call_credentials.ts";
import type { TokenSettings } from "../auth/tokens.ts";
import { frame } from "../mdp/protocol.ts";
import { freshDatabase } from "../tests/_postgres.ts";
import type { StateBackend } from "./backend.ts";
import { openStateDatabase } from "./db.ts";
import { openPgStateDatabase } from "./db_pg.ts";
import { STATE_SERVICE, StateOperations } from "./operations.ts";
import { StateStore } from "./store.ts";
import { PgStateStore } from "./store_pg.ts";

const SETTINGS: TokenSettings = {
  secret: "a-test-secret-that-is-32-bytes-long!",
  issuer: "plantd",
  audience: "plantd",
};
const CALLER = { id: "user:ada", name: "ada" };
const signer = new CallSigner(SETTINGS, 10);
const REFUSED = '{"error": "AUTHENTICATION_FAILED", "message": "Invalid or expired token"}';

/** A state worker over `store`: its operations and what it counted. */
function worker(store: StateBackend) {
  const reused: string[] = [];
  const refusals: string[] = [];
  const ledger = store instanceof PgStateStore
    ? { claim: store.claimCallCredential.bind(store) }
    : undefined;
  const ops = new StateOperations(store, {
    verify: serviceTokenCheck(SETTINGS, STATE_SERVICE, ledger ? { ledger } : {}),
  }, {
    callReused: (use) => reused.push(use),
    refused: (_code, _op, _scope, reason) => refusals.push(reason),
  });
  /** Handles `json` for `operation` as delivered with client address `client`. */
  const handle = async (operation: string, json: string, client?: string) =>
    await ops.handle(
      [frame(operation), frame(json)],
      client === undefined ? undefined : new TextEncoder().encode(client),
    );
  return { handle, reused, refusals };
}

/** A request JSON the gateway would send for `caller`, with its call credential. */
function signed(operation: string, request: Record<string, unknown>): string {
  return signer.stateRequest(CALLER, STATE_SERVICE, operation, request);
}

/**
 * The checks, on two workers (the same one twice on libSQL, where one worker
 * holds the file).
 */
async function replaysRefused(a: StateBackend, b: StateBackend): Promise<void> {
  const one = worker(a);
  const two = a === b ? one : worker(b);
  assert.match(
    await one.handle("create-scope", signed("create-scope", { service: "p" }), "gw#1"),
    /created/,
  );

  const write = signed("state-set-many", { service: "p", entries: { k: "v1" } });
  const first = await one.handle("state-set-many", write, "gw#2");
  assert.equal(first, '{"success":true,"data":{"revisions":{"k":1},"scope":"p","status":"set"}}');
  // A captured credential sent again by another client: refused, on either worker.
  assert.equal(await two.handle("state-set-many", write, "attacker#1"), REFUSED);
  assert.equal(await one.handle("state-set-many", write, "attacker#2"), REFUSED);
  // Without an address there is no telling a redelivery: refused too.
  assert.equal(await two.handle("state-set-many", write), REFUSED);
  // The broker routing the same request again (its worker was lost after the
  // commit): served on either worker, with the first reply, applied once.
  const again = await two.handle("state-set-many", write, "gw#2");
  assert.equal(again, first.slice(0, -1) + ',"replayed":true}');
  const read = signed("state-get-many", { service: "p", keys: ["k"] });
  assert.match(await one.handle("state-get-many", read, "gw#3"), /"revision":1,/);
  assert.match(await two.handle("state-get-many", read, "gw#3"), /"revision":1,/);
  assert.equal(await two.handle("state-get-many", read, "attacker#4"), REFUSED);

  const counted = [...one.reused, ...(a === b ? [] : two.reused)].sort();
  assert.deepEqual(counted, ["redelivery", "redelivery", "replay", "replay", "replay", "replay"]);
  const reasons = new Set([...one.refusals, ...two.refusals]);
  assert.deepEqual([...reasons], ["Call credential already used"]);
}

Deno.test("libsql: a state worker refuses a used call credential from another delivery and serves the same delivery again once", async () => {
  const open = await openStateDatabase({ location: ":memory:" });
  const store = await StateStore.load(open, {});
  try {
    await replaysRefused(store, store);
  } finally {
    await store.close();
  }
});

Deno.test("postgres: two state workers on one database take a call credential once between them; a redelivery to the other gets the stored reply", async () => {
  const database = await freshDatabase();
  const a = new PgStateStore(await openPgStateDatabase({ url: database.url, poolSize: 3 }), {});
  const b = new PgStateStore(await openPgStateDatabase({ url: database.url, poolSize: 3 }), {});
  try {
    await replaysRefused(a, b);
    // Two workers taking one credential at once: one first use, one replay.
    const json = signed("state-get", { service: "p", key: "k" });
    const both = await Promise.all([
      worker(a).handle("state-get", json, "gw#9"),
      worker(b).handle("state-get", json, "attacker#9"),
    ]);
    assert.deepEqual(both.map((r) => r === REFUSED).sort(), [false, true]);
    // Expired ids go with the purge of expired keys.
    assert.equal(await a.purgeExpiredKeys(100), 0);
  } finally {
    await a.close();
    await b.close();
    await database.drop();
  }
});

Deno.test("a ledger the database cannot reach answers STORAGE_UNAVAILABLE, not a bad token", async () => {
  const store = await StateStore.load(await openStateDatabase({ location: ":memory:" }), {});
  try {
    const ledger = {
      claim(): never {
        throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), {
          code: "ECONNREFUSED",
        });
      },
    };
    const refusals: string[] = [];
    const ops = new StateOperations(store, {
      verify: serviceTokenCheck(SETTINGS, STATE_SERVICE, { ledger }),
    }, { refused: (code) => refusals.push(code) });
    const json = signed("list-scopes", {});
    const reply = JSON.parse(
      await ops.handle([frame("list-scopes"), frame(json)], new Uint8Array([1])),
    );
    assert.equal(reply.error, "STORAGE_UNAVAILABLE", JSON.stringify(reply));
    assert.deepEqual(refusals, []);
  } finally {
    await store.close();
  }
});
