/** Group commit of the libSQL store, observed through its commit hook. */
import assert from "node:assert/strict";
import { openStateDatabase } from "./db.ts";
import { StateStore } from "./store.ts";

Deno.test("writes queued while a commit runs share the next commit (group commit)", async () => {
  const groups: number[] = [];
  const open = await openStateDatabase({ location: ":memory:" });
  const store = await StateStore.load(open, { onCommit: (writes) => groups.push(writes) });
  try {
    await store.write({ kind: "create-scope", scope: "s" });
    groups.length = 0;
    const results = await Promise.all(
      Array.from(
        { length: 300 },
        (_, i) => store.write({ kind: "set", scope: "s", entries: [[`k${i % 10}`, String(i)]] }),
      ),
    );
    assert.equal(results.length, 300);
    assert.equal(groups.reduce((a, b) => a + b, 0), 300, "every write counted once");
    // All 300 are queued in one turn, before the first commit can start: one
    // transaction holds them (at most 4096 per group), so one write per commit
    // is a regression, not noise.
    assert.deepEqual(groups, [300]);
    assert.equal(store.get("s", "k3")?.revision, 30);
  } finally {
    await store.close();
  }
});
