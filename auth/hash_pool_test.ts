import assert from "node:assert/strict";
import { HashPool, HashPoolBusy, inProcessHasher } from "./hash_pool.ts";
import { hashPassword, verifyPassword } from "./secrets.ts";

Deno.test("HashPool: argon2id hashes made in a Worker verify in-process and back", async () => {
  const pool = new HashPool({ workers: 1, maxPending: 4 });
  try {
    const hash = await pool.hash("correct horse");
    assert.match(hash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    assert.equal(await verifyPassword("correct horse", hash), true);
    assert.equal(await pool.verify("correct horse", await hashPassword("correct horse")), true);
    assert.equal(await pool.verify("wrong", hash), false);
    assert.equal(await pool.verify("x", "not a hash"), false);
  } finally {
    pool.close();
  }
});

/**
 * Counts the turns of the event loop (a 1 ms interval) while `work` runs. On
 * the main thread argon2id holds the loop for each whole hash, so the count
 * stays near the number of hashes; off it, the loop keeps turning.
 */
async function turnsDuring(work: () => Promise<unknown>): Promise<number> {
  let turns = 0;
  const timer = setInterval(() => turns++, 1);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return turns;
}

Deno.test("HashPool: the event loop keeps turning while hashes run (they are off the main thread)", async () => {
  const pool = new HashPool({ workers: 1, maxPending: 8 });
  try {
    const stored = await hashPassword("correct horse");
    const hashes = 4;
    const pooled = await turnsDuring(() =>
      Promise.all(Array.from({ length: hashes }, () => pool.verify("guess", stored)))
    );
    const inProcess = await turnsDuring(() =>
      Promise.all(Array.from({ length: hashes }, () => inProcessHasher.verify("guess", stored)))
    );
    // Four hashes of ~100-300 ms each: hundreds of turns off the loop, a
    // handful on it. The in-process run shows what the pool prevents.
    assert.ok(pooled >= 10 * hashes, `${pooled} turns while ${hashes} pooled hashes ran`);
    assert.ok(inProcess < 3 * hashes, `${inProcess} turns while hashing in-process`);
  } finally {
    pool.close();
  }
});

Deno.test("HashPool: past maxPending a hash is refused at once; the pool serves again after", async () => {
  const pool = new HashPool({ workers: 1, maxPending: 2 });
  try {
    const stored = await hashPassword("pw");
    const running = [pool.verify("a", stored), pool.verify("b", stored)];
    assert.equal(pool.pending, 2);
    await assert.rejects(pool.verify("c", stored), HashPoolBusy);
    assert.deepEqual(await Promise.all(running), [false, false]);
    assert.equal(pool.pending, 0);
    assert.equal(await pool.verify("pw", stored), true);
  } finally {
    pool.close();
  }
});

Deno.test("HashPool: close terminates the workers and fails what waits", async () => {
  const pool = new HashPool({ workers: 2, maxPending: 4 });
  const waiting = pool.hash("pw");
  pool.close();
  await assert.rejects(waiting, /closed/);
  await assert.rejects(pool.hash("pw"), /closed/);
});
