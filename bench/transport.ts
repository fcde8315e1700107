/**
 * `deno task bench:transport`: memory of the broker's ZMTP ROUTER (issue #17).
 *
 * - Idle peers: RSS of a broker child (`main.ts broker`, defaults) before and
 *   after `peers` raw TCP peers complete the handshake (each sends an
 *   MMI query and gets the answer, so each is known handshaken), per peer.
 * - Slow readers: {@link SLOW_READERS} raw clients each send
 *   {@link SLOW_REQUESTS} echo requests of 1 MiB and never read; the broker's
 *   peak RSS while the echo worker answers and the replies pile up for them,
 *   with the default `max_buffered_output_bytes` (256 MiB) and with it out of
 *   the way (each peer still has its own 64 MiB cap).
 *
 * Settings `peers` (BENCH_PEERS, 10,000) and `slow` (BENCH_SLOW=0: idle
 * peers only). Runs on bench/harness.ts; needs about 2 x `peers` file
 * descriptors (one process each side).
 *
 * @module
 */
import {
  encodeMessageInto,
  greeting,
  messageBytes,
  readyCommand,
} from "../transport/zmtp/codec.ts";
import { ECHO_SERVICE } from "../workers/echo.ts";
import { num } from "./_stats.ts";
import { freePort, type Metrics, runBench, startComponent, until } from "./harness.ts";

const SLOW_READERS = 8;
const SLOW_REQUESTS = 80;
const encoder = new TextEncoder();
/** What the broker sends before anything else: greeting and READY. */
const ROUTER_HELLO = 64 + readyCommand({ "Socket-Type": encoder.encode("ROUTER") }).length;

function rss(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

function encoded(frames: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(messageBytes(frames));
  encodeMessageInto(bytes, 0, frames);
  return bytes;
}

const clientRequest = (service: string, body: Uint8Array) =>
  encoded([new Uint8Array(0), encoder.encode("MDPC01"), encoder.encode(service), body]);

/** A raw DEALER: greeting and READY, then `after` (bytes already encoded as frames). */
async function rawPeer(port: number, after: Uint8Array): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const ready = readyCommand({ "Socket-Type": encoder.encode("DEALER") });
  const out = new Uint8Array(64 + ready.length + after.length);
  out.set(greeting());
  out.set(ready, 64);
  out.set(after, 64 + ready.length);
  await conn.write(out);
  return conn;
}

/** Reads until more than `bytes` came in (the broker's hello plus an answer). */
async function readPast(conn: Deno.TcpConn, bytes: number): Promise<void> {
  const buffer = new Uint8Array(4096);
  let total = 0;
  while (total <= bytes) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("broker closed a peer");
    total += n;
  }
}

async function startBroker(extra: string[] = []) {
  const port = freePort();
  const broker = startComponent("broker", [
    "--endpoint",
    `tcp://127.0.0.1:${port}`,
    "--health-port",
    "0",
    "--buses",
    "[]",
    ...extra,
  ]);
  await until(
    async () => {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    },
    20_000,
    "broker",
  );
  return { broker, port };
}

async function idlePeers(
  peers: number,
): Promise<{ before: number; after: number; perPeer: number }> {
  const { broker, port } = await startBroker();
  const mmi = clientRequest("mmi.service", encoder.encode("nobody"));
  const conns: Deno.TcpConn[] = [];
  try {
    const probe = await rawPeer(port, mmi);
    await readPast(probe, ROUTER_HELLO);
    probe.close();
    const before = rss(broker.pid);
    for (let i = 0; i < peers; i += 500) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(500, peers - i) }, () => rawPeer(port, mmi)),
      );
      await Promise.all(batch.map((conn) => readPast(conn, ROUTER_HELLO)));
      conns.push(...batch);
    }
    const after = rss(broker.pid);
    return { before, after, perPeer: (after - before) / peers };
  } finally {
    for (const conn of conns) conn.close();
    await broker.stop();
  }
}

async function slowReaders(extra: string[]): Promise<{ before: number; peak: number }> {
  const { broker, port } = await startBroker(extra);
  const worker = startComponent("echo", ["--broker-endpoint", `tcp://127.0.0.1:${port}`]);
  const conns: Deno.TcpConn[] = [];
  try {
    const mmi = clientRequest("mmi.service", encoder.encode(ECHO_SERVICE));
    await until(
      async () => {
        const probe = await rawPeer(port, mmi);
        const buffer = new Uint8Array(4096);
        let text = "";
        while (!text.includes("200") && !text.includes("404")) {
          const n = await probe.read(buffer);
          if (n === null) break;
          text += new TextDecoder("latin1").decode(buffer.subarray(0, n));
        }
        probe.close();
        return text.includes("200");
      },
      20_000,
      "echo worker",
    );
    const before = rss(broker.pid);
    const request = clientRequest(ECHO_SERVICE, new Uint8Array(1024 * 1024));
    for (let i = 0; i < SLOW_READERS; i++) {
      const conn = await rawPeer(port, new Uint8Array(0));
      conns.push(conn);
      void (async () => {
        for (let j = 0; j < SLOW_REQUESTS; j++) await conn.write(request);
      })().catch(() => {});
    }
    // Sampled until it has not grown for 3 s (the worker has answered what it got).
    let peak = 0;
    let grewAt = Date.now();
    const end = Date.now() + 120_000;
    while (Date.now() - grewAt < 3000 && Date.now() < end) {
      const now = rss(broker.pid);
      if (now > peak) {
        peak = now;
        grewAt = Date.now();
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return { before, peak };
  } finally {
    for (const conn of conns) conn.close();
    await worker.stop();
    await broker.stop();
  }
}

await runBench({
  name: "transport",
  title: "Transport memory (deno task bench:transport)",
  command: "`deno task bench:transport` (bench/transport.ts)",
  settings: {
    peers: { env: "BENCH_PEERS", default: 10_000, help: "idle handshaken peers" },
    slow: { env: "BENCH_SLOW", default: true, help: "also measure slow readers" },
  },
}, async (bench) => {
  const peers = bench.settings.peers;
  const mb = (n: number) => n / 1e6;
  bench.row("idle", `broker (defaults) with ${num(peers)} idle handshaken peers`);
  const units: Array<{ key: string; extra?: string[] }> = [{ key: "idle" }];
  if (bench.settings.slow) {
    bench.row(
      "limited",
      `${SLOW_READERS} slow readers x ${SLOW_REQUESTS} MiB of echo replies, ` +
        "max_buffered_output_bytes 256 MiB (the default)",
    );
    bench.row(
      "unlimited",
      "the same, max_buffered_output_bytes out of the way (2^40; 64 MiB per peer only)",
    );
    units.push({ key: "limited", extra: [] }, {
      key: "unlimited",
      extra: ["--max-buffered-output-bytes", String(2 ** 40)],
    });
  }
  await bench.rounds(units, async (unit): Promise<Metrics> => {
    if (unit.key === "idle") {
      const idle = await idlePeers(peers);
      return {
        "KiB per peer": idle.perPeer / 1024,
        "MB before": mb(idle.before),
        "MB after": mb(idle.after),
      };
    }
    const slow = await slowReaders(unit.extra!);
    return { "peak MB": mb(slow.peak), "MB before": mb(slow.before) };
  });
  return {
    description: "Resident memory (VmRSS) of a broker child process (`main.ts broker`, defaults " +
      "unless the row says otherwise), a fresh one per run. Idle peers: raw TCP peers that " +
      "complete the ZMTP handshake and one MMI query each, RSS before and after. Slow readers: " +
      `${SLOW_READERS} raw clients each send ${SLOW_REQUESTS} echo requests of 1 MiB and never ` +
      "read; the broker's peak RSS (sampled every 50 ms until it has not grown for 3 s) while " +
      "the echo worker answers and the replies pile up for them.",
    tables: [
      {
        rows: ["idle"],
        columns: [
          { header: "measure", show: "label" },
          { header: "KiB per peer (median)", show: "median:KiB per peer", decimals: 1 },
          { header: "range", show: "range:KiB per peer", decimals: 1 },
          { header: "MB before", show: "median:MB before", decimals: 1 },
          { header: "MB after", show: "median:MB after", decimals: 1 },
        ],
      },
      ...(bench.settings.slow
        ? [{
          rows: ["limited", "unlimited"],
          columns: [
            { header: "measure", show: "label" },
            { header: "peak MB (median)", show: "median:peak MB", decimals: 1 },
            { header: "range", show: "range:peak MB", decimals: 1 },
            { header: "MB before", show: "median:MB before", decimals: 1 },
          ],
        }]
        : []),
    ],
  };
});
