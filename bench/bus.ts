/**
 * `deno task bench:bus`: messages/s and latency through a plantd bus, against
 * direct PUB-SUB (no proxy: the ceiling), Redis pub/sub (ioredis, auto
 * pipelined) and NATS pub/sub (@nats-io/transport-node), on
 * bench/harness.ts (interleaved rounds, median and range, raw results in
 * bench/results/).
 *
 * Every publisher, subscriber and the bus run in child processes
 * (bench/procs/bus_peer.ts), all on loopback, fresh for each run. Two kinds
 * of runs:
 *
 * - Saturated, lossless (not the defaults, and labelled so): subscribers
 *   report what they have read to each publisher over a ZeroMQ side channel,
 *   publishers keep at most {@link WINDOW} messages beyond their slowest
 *   subscriber, and ZeroMQ high-water marks are off, so nothing can be lost
 *   and the rate is what the slowest part allows. 16 B and 1 KiB payloads,
 *   one subscriber (1 and {@link MORE_PUBLISHERS} publishers) and ten.
 * - Paced, at defaults: one publisher at a fixed rate (`paced_rates`), one
 *   subscriber, 16 B, high-water marks at their defaults and no window, as a
 *   real publisher runs; whatever does not arrive is counted as lost.
 *
 * Throughput is what each subscriber read during `measure_ms` after
 * {@link WARMUP_MS}; latency is send-to-read time of every 4th message in
 * that window (the clock is read per message on every system), so under
 * saturation it includes the time spent queued in the window. CPU per
 * message counts a publisher, the bus process or the server (redis-server,
 * nats-server: every process of that name), and a subscriber.
 *
 * @module
 */
import { zmqVersion } from "../transport/libzmq.ts";
import { num, ticksOfCommand, ticksPerSecond } from "./_stats.ts";
import { Child, type Metrics, runBench } from "./harness.ts";

const WARMUP_MS = 500;
/** With one subscriber, each saturated system also runs with this many publisher processes. */
const MORE_PUBLISHERS = 2;
/** Publishers keep publishing this long after the measurement window ends. */
const TAIL_MS = 500;
/** Messages a publisher may have beyond its slowest subscriber (saturated runs). */
const WINDOW = 4000;
const ACK_EVERY = 500;
const RUN_TIMEOUT_MS = 60_000;
const SERVERS: Record<string, string> = { redis: "redis-server", nats: "nats-server" };

const LABELS: Record<string, string> = {
  bus: "plantd bus (native XSUB/XPUB proxy)",
  "bus+capture": "plantd bus + capture counting",
  direct: "direct PUB-SUB, no proxy (ceiling)",
  redis: "Redis pub/sub (ioredis, auto-pipelined)",
  nats: "NATS pub/sub (@nats-io/transport-node on Deno's Node layer)",
};

interface SubscriberResult {
  received: number;
  inWindow: number;
  windowSeconds: number;
  perPublisher: number[];
  p50Ms: number;
  p99Ms: number;
  cpuSeconds: number;
}

interface RunSpec {
  system: string;
  payload: number;
  subscribers: number;
  publishers: number;
  /** Messages/s per publisher; 0: as fast as the window allows. */
  rate: number;
  /** Lossless (credit window, HWM off) or as a real publisher runs (defaults, no window). */
  mode: "lossless" | "defaults";
}

async function run(spec: RunSpec, measureMs: number, v8Flags: string): Promise<Metrics> {
  const { system, payload, subscribers, rate, mode } = spec;
  const peers: Child[] = [];
  const env = { BUS_PEER_HWM: mode === "defaults" ? "default" : "off" };
  const start = (name: string, args: string[]) => {
    const peer = new Child({
      name,
      script: "bench/procs/bus_peer.ts",
      args,
      env,
      denoFlags: v8Flags ? [`--v8-flags=${v8Flags}`] : [],
    });
    peers.push(peer);
    return peer;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("run timed out")), RUN_TIMEOUT_MS);
  });
  const window = mode === "lossless" ? WINDOW : 0;
  try {
    return await Promise.race([
      timeout,
      (async (): Promise<Metrics> => {
        let frontend = "-";
        let backend = "-";
        let bus: Child | undefined;
        if (system.startsWith("bus")) {
          bus = start("bus", ["bus", system === "bus+capture" ? "1" : "0"]);
          [frontend, backend] = (await bus.line("READY")).split(" ") as [string, string];
        }
        const publishers = Array.from({ length: spec.publishers }, (_, id) =>
          start(`pub${id}`, [
            "pub",
            system,
            String(id),
            String(subscribers),
            String(payload),
            String(window),
            frontend,
            String(rate),
          ]));
        const credits: string[] = [];
        const dataEndpoints: string[] = [];
        for (const publisher of publishers) {
          const [credit, data] = (await publisher.line("CREDIT")).split(" ") as [string, string];
          credits.push(credit);
          dataEndpoints.push(data);
        }
        const subs = Array.from({ length: subscribers }, (_, id) =>
          start(`sub${id}`, [
            "sub",
            system,
            String(id),
            String(ACK_EVERY),
            backend,
            credits.join(","),
            system === "direct" ? dataEndpoints.join(",") : "-",
            String(WARMUP_MS),
            String(measureMs),
          ]));
        for (const sub of subs) await sub.line("READY");
        for (const publisher of publishers) await publisher.send("probe");
        for (const publisher of publishers) await publisher.line("READY");
        await bus?.send("mark");
        const server = SERVERS[system];
        const serverTicks = server ? ticksOfCommand(server) : 0;
        for (const publisher of publishers) {
          await publisher.send(`go ${WARMUP_MS + measureMs + TAIL_MS}`);
        }
        const sent: number[] = [];
        let publisherCpu = 0;
        for (const publisher of publishers) {
          const [count, , cpu] = (await publisher.line("DONE", RUN_TIMEOUT_MS)).split(" ");
          sent.push(Number(count));
          publisherCpu += Number(cpu) / Math.max(1, Number(count));
        }
        const total = Math.max(1, sent.reduce((a, b) => a + b, 0));
        let middleCpu = NaN;
        if (bus) {
          await bus.send("report");
          middleCpu = Number(await bus.line("CPU")) / total;
        } else if (server) {
          middleCpu = (ticksOfCommand(server) - serverTicks) / (await ticksPerSecond()) / total;
        }
        const results: SubscriberResult[] = [];
        for (const sub of subs) {
          await sub.send("stop");
          results.push(JSON.parse(await sub.line("RESULT")));
        }
        let lost = 0;
        for (const result of results) {
          sent.forEach((count, p) => lost += count - (result.perPublisher[p] ?? 0));
        }
        const rates = results.map((r) => r.inWindow / r.windowSeconds);
        // A subscriber that sampled nothing reports null (JSON has no NaN).
        const p50s = results.map((r) => r.p50Ms ?? NaN).sort((a, b) => a - b);
        return {
          "msgs/s": rates.reduce((a, b) => a + b, 0) / rates.length,
          "deliveries/s": rates.reduce((a, b) => a + b, 0),
          "p50 ms": p50s[Math.floor(p50s.length / 2)]!,
          "p99 ms": Math.max(...results.map((r) => r.p99Ms ?? NaN)),
          sent: total,
          lost,
          "lost %": lost / (total * subscribers) * 100,
          "cpu.pub": (publisherCpu / publishers.length) * 1e6,
          "cpu.middle": middleCpu * 1e6,
          "cpu.sub": (results.reduce((a, r) => a + r.cpuSeconds / Math.max(1, r.inWindow), 0) /
            results.length) * 1e6,
        };
      })(),
    ]);
  } finally {
    clearTimeout(timer);
    await Promise.all(peers.map((peer) => peer.stop()));
  }
}

function size(bytes: number): string {
  return bytes >= 1024 ? `${bytes / 1024} KiB` : `${bytes} B`;
}

const list = (text: string) => text.split(",").map((s) => s.trim()).filter(Boolean);

await runBench({
  name: "bus",
  title: "Buses (deno task bench:bus)",
  command: "`deno task bench:bus` (bench/bus.ts)",
  servers: ["redis-server", "nats-server"],
  watchdogMs: 90 * 60_000,
  settings: {
    systems: {
      env: "BENCH_SYSTEMS",
      default: "bus,bus+capture,direct,redis,nats",
      help: "comma list of bus, bus+capture, direct, redis, nats",
    },
    payloads: { env: "BENCH_PAYLOADS", default: "16,1024", help: "payload bytes (saturated)" },
    fanouts: { env: "BENCH_FANOUTS", default: "1,10", help: "subscribers (saturated)" },
    paced_rates: {
      env: "BENCH_PACED_RATES",
      default: "20000,200000",
      help: "msgs/s of the paced runs at defaults",
    },
    measure_ms: { env: "BENCH_MEASURE_MS", default: 2000, help: "measured window per run" },
    v8_flags: { env: "BENCH_V8_FLAGS", default: "", help: "--v8-flags of the peers" },
  },
}, async (bench) => {
  const systems = list(bench.settings.systems);
  const payloads = list(bench.settings.payloads).map(Number);
  const fanouts = list(bench.settings.fanouts).map(Number);
  const pacedRates = list(bench.settings.paced_rates).map(Number);
  const units: Array<RunSpec & { key: string }> = [];
  const saturatedKeys: string[] = [];
  const key = (s: RunSpec) =>
    s.mode === "lossless"
      ? `sat/${s.system}/${s.payload}/${s.publishers}x${s.subscribers}`
      : `paced/${s.system}/${s.rate}`;
  for (const payload of payloads) {
    for (const subscribers of fanouts) {
      for (const system of systems) {
        const counts = system === "bus+capture"
          ? (subscribers === 1 ? [1] : [])
          : subscribers === 1
          ? [1, MORE_PUBLISHERS]
          : [1];
        for (const publishers of counts) {
          const spec: RunSpec = {
            system,
            payload,
            subscribers,
            publishers,
            rate: 0,
            mode: "lossless",
          };
          const k = key(spec);
          bench.row(k, `${LABELS[system] ?? system}; window ${WINDOW}, HWM off`, {
            payload: size(payload),
            pubs: publishers,
            subs: subscribers,
          });
          saturatedKeys.push(k);
          units.push({ key: k, ...spec });
        }
      }
    }
  }
  const pacedKeys: string[] = [];
  for (const rate of pacedRates) {
    for (const system of systems) {
      if (system === "bus+capture") continue;
      const spec: RunSpec = {
        system,
        payload: 16,
        subscribers: 1,
        publishers: 1,
        rate,
        mode: "defaults",
      };
      const k = key(spec);
      const defaults = system === "redis" || system === "nats"
        ? "client defaults"
        : "defaults (HWM 1,000)";
      bench.row(k, `${LABELS[system] ?? system}; ${defaults}, no window`, { offered: rate });
      pacedKeys.push(k);
      units.push({ key: k, ...spec });
    }
  }
  await bench.rounds(
    units,
    (unit) => run(unit, bench.settings.measure_ms, bench.settings.v8_flags),
  );

  // Targets: each system at its best (over publisher counts) for a payload and fan-out.
  const best = (system: string, payload: number, subscribers: number) =>
    saturatedKeys.filter((k) => k.startsWith(`sat/${system}/${payload}/`))
      .filter((k) => k.endsWith(`x${subscribers}`));
  const checks = [];
  for (const payload of payloads) {
    for (const subscribers of fanouts) {
      const where = `${size(payload)}, ${subscribers} sub`;
      const bus = best("bus", payload, subscribers);
      if (systems.includes("direct") && bus.length) {
        checks.push({
          name: `proxy costs <= 10% vs direct PUB-SUB (${where}; best of publisher counts)`,
          value: { rows: bus, metric: "msgs/s" },
          op: ">=" as const,
          target: { rows: best("direct", payload, subscribers), metric: "msgs/s" },
          factor: 0.9,
        });
      }
      if (systems.includes("redis") && bus.length) {
        checks.push({
          name: `>= 3x Redis pub/sub (${where}; best of publisher counts)`,
          value: { rows: bus, metric: "msgs/s" },
          op: ">=" as const,
          target: { rows: best("redis", payload, subscribers), metric: "msgs/s" },
          factor: 3,
        });
      }
    }
  }
  checks.push({
    name: "1M messages/s through a bus (16 B, 1 subscriber)",
    value: { rows: best("bus", 16, 1), metric: "msgs/s" },
    op: ">=" as const,
    target: 1_000_000,
  });
  checks.push({
    name: "lossless with the credit window: messages lost in all saturated runs",
    value: { rows: saturatedKeys, metric: "lost", stat: "sum" as const, combine: "sum" as const },
    op: "==" as const,
    target: 0,
  });

  const notes: string[] = [];
  const bus1 = best("bus", 16, 1);
  const direct1 = best("direct", 16, 1);
  const cheapest = (keys: string[]) =>
    keys.map((k) => ({ k, rate: bench.stats(k, "msgs/s").median })).sort((a, b) =>
      b.rate - a.rate
    )[0]?.k;
  const busKey = cheapest(bus1);
  const directKey = cheapest(direct1);
  if (busKey && directKey) {
    const m = (k: string, metric: string) => bench.stats(k, metric).median;
    const cores = navigator.hardwareConcurrency;
    const busSum = m(busKey, "cpu.pub") + m(busKey, "cpu.middle") + m(busKey, "cpu.sub");
    const directSum = m(directKey, "cpu.pub") + m(directKey, "cpu.sub");
    notes.push(
      `Where the time goes (16 B, one subscriber, best runs, medians): through the bus a message ` +
        `costs ${num(m(busKey, "cpu.pub"), 2)} µs of CPU in the publisher, ` +
        `${num(m(busKey, "cpu.middle"), 2)} in the bus and ${num(m(busKey, "cpu.sub"), 2)} in ` +
        `the subscriber, ${num(busSum, 2)} µs in all, which bounds it at ${cores} cores / ` +
        `${num(busSum, 2)} µs = ${num((cores / busSum) * 1e6)} msgs/s (measured ` +
        `${num(m(busKey, "msgs/s"))}); direct PUB-SUB costs ${num(directSum, 2)} µs, bounded at ` +
        `${num((cores / directSum) * 1e6)} (measured ${num(m(directKey, "msgs/s"))}). Every ` +
        `process shares the same ${cores} cores, so the proxy's own work is taken from the ` +
        "clients.",
    );
  }
  return {
    description: [
      `libzmq ${zmqVersion()}. Every publisher, subscriber and bus in its own child process, ` +
      `fresh for each run; ${bench.settings.measure_ms} ms measured after ${WARMUP_MS} ms of ` +
      `warm-up (publishers go on ${TAIL_MS} ms after). Bus and direct runs use bus/publisher.ts ` +
      "and bus/subscriber.ts (single-frame form, topic `org.plantd.Metric`). Latency is send " +
      "to read of every 4th message in the window, the clock read per message on every system.",
      `Saturated runs (first table) are not at defaults, as their labels say: a credit window ` +
      `of ${WINDOW} messages per publisher (subscribers acknowledge every ${ACK_EVERY}) and ` +
      "ZeroMQ high-water marks off make them lossless by construction, so their rate is what " +
      "the slowest part allows and their latency includes time queued in the window. Paced runs " +
      "(second table) run as a real publisher does: high-water marks at their defaults, no " +
      "window, a fixed rate; what does not arrive is lost and counted.",
    ].join("\n\n"),
    tables: [
      {
        title: "Saturated, lossless (credit window, high-water marks off)",
        intro: "CPU µs/msg: user + system time of one publisher process, of the bus process " +
          "(bus rows) or of redis-server / nats-server (Redis and NATS rows), and of one " +
          "subscriber process, per message sent (all threads).",
        rows: saturatedKeys,
        columns: [
          { header: "system", show: "label" },
          { header: "payload", show: "param:payload" },
          { header: "pubs", show: "param:pubs" },
          { header: "subs", show: "param:subs" },
          { header: "msgs/s per sub (median)", show: "median:msgs/s" },
          { header: "range", show: "range:msgs/s" },
          { header: "deliveries/s", show: "median:deliveries/s" },
          { header: "p50 ms", show: "median:p50 ms", decimals: 2 },
          { header: "p99 ms", show: "median:p99 ms", decimals: 2 },
          { header: "CPU µs/msg pub", show: "median:cpu.pub", decimals: 2 },
          { header: "bus / server", show: "median:cpu.middle", decimals: 2 },
          { header: "sub", show: "median:cpu.sub", decimals: 2 },
          { header: "lost (all runs)", show: "sum:lost" },
        ],
      },
      {
        title: "Paced, at defaults (one publisher, one subscriber, 16 B)",
        rows: pacedKeys,
        columns: [
          { header: "system", show: "label" },
          { header: "offered msgs/s", show: "param:offered" },
          { header: "received msgs/s (median)", show: "median:msgs/s" },
          { header: "range", show: "range:msgs/s" },
          { header: "p50 ms", show: "median:p50 ms", decimals: 3 },
          { header: "p99 ms", show: "median:p99 ms", decimals: 3 },
          { header: "lost % (median)", show: "median:lost %", decimals: 2 },
          { header: "lost % (max)", show: "max:lost %", decimals: 2 },
          { header: "lost (all runs)", show: "sum:lost" },
        ],
      },
    ],
    notes,
    checks,
  };
});
