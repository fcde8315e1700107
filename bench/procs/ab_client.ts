/**
 * Benchmark child: an MdpClient of the tree given as first argument (so the
 * code under comparison runs on both sides), driving echo round trips in a
 * closed loop when asked. Args: tree, endpoint. Reads `RUN <inFlight> <ms>`
 * lines on stdin and prints `RESULT {"count","errors","seconds","p50Ms","p99Ms"}`.
 * BENCH_WIRE_HEARTBEAT_MS turns ZMTP heartbeats on (timeout and TTL 3x), on
 * trees that have them.
 *
 * @module
 */
import { wireHeartbeatFromEnv } from "./_child.ts";

const [tree, endpoint] = Deno.args;
if (!tree || !endpoint) throw new Error("usage: ab_client.ts <tree> <endpoint>");
const { MdpClient } = await import(`${tree}/mdp/client.ts`);
const client = new MdpClient(endpoint, {
  timeoutMs: 5000,
  ...wireHeartbeatFromEnv(),
});
const payload = new TextEncoder().encode("0123456789abcdef");
const samples = new Float64Array(1_000_000);

async function run(inFlight: number, ms: number) {
  let count = 0;
  let errors = 0;
  const start = performance.now();
  const stopAt = start + ms;
  const lane = async () => {
    while (performance.now() < stopAt && count < samples.length) {
      const t0 = performance.now();
      try {
        await client.request("org.plantd.module.Echo", ["echo", payload]);
        samples[count++] = performance.now() - t0;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  const seconds = (performance.now() - start) / 1000;
  const sorted = samples.subarray(0, count).sort();
  const at = (q: number) => sorted[Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1))];
  return { count, errors, seconds, p50Ms: at(0.5), p99Ms: at(0.99) };
}

// Until the worker is registered, requests queue at the broker: one answer means it is.
await client.request("org.plantd.module.Echo", ["echo", payload]);
console.log("READY");
let buffered = "";
for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
  buffered += chunk;
  let at: number;
  while ((at = buffered.indexOf("\n")) >= 0) {
    const [command, n, ms] = buffered.slice(0, at).split(" ");
    buffered = buffered.slice(at + 1);
    if (command === "RUN") {
      console.log(`RESULT ${JSON.stringify(await run(Number(n), Number(ms)))}`);
    }
  }
}
await client.close();
Deno.exit(0);
