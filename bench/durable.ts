/**
 * `deno task bench:durable`: durable requests (journaled before they are
 * routed, docs/durability.md) beside non-durable requests through the same
 * broker, and beside NATS JetStream (publish with ack, then a push consumer
 * with explicit acks that answers the publisher), with 1, 16 and 256
 * requests in flight, in interleaved rounds; the median and range of the
 * rounds per row.
 *
 * Layout (loopback, this machine has 2 cores shared with others):
 * - broker A (child): durable service `bench.durable` on a libSQL journal
 *   with synchronous=full, and the non-durable `bench.plain`; broker B
 *   (child): `bench.durable` with synchronous=normal. Each service has an
 *   echo worker child (one connection, capacity 256). Client here, durable
 *   requests with `durable: true` (a journal key, asked again after
 *   reconnections).
 * - JetStream: nats-server at 127.0.0.1:4222 (system service, `-js`), a file
 *   stream with work-queue retention; the publisher here awaits each
 *   publish's ack (stored), the consumer child acks the message and answers
 *   the publisher over core NATS; a request is done when both came back.
 *
 * Environment: BENCH_ROUNDS (default 3), BENCH_MEASURE_MS (default 2000),
 * BENCH_NATS_SERVER, BENCH_NO_WRITE=1 (print only; by default the section of
 * BENCHMARKS.md is replaced and the raw result kept in bench/results/).
 *
 * @module
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { MdpClient } from "../mdp/client.ts";
import { median, num, saveResult, summarize, table, writeBenchmarksSection } from "./_stats.ts";

const IN_FLIGHT = [1, 16, 256] as const;
const ROUNDS = Number(Deno.env.get("BENCH_ROUNDS") ?? "3");
const MEASURE_MS = Number(Deno.env.get("BENCH_MEASURE_MS") ?? "2000");
const WARMUP_MS = 300;
const MAX_REQUESTS = 200_000;
const PAYLOAD_BYTES = 64;
const NATS_SERVER = Deno.env.get("BENCH_NATS_SERVER") ?? "127.0.0.1:4222";
const NO_WRITE = Deno.env.get("BENCH_NO_WRITE") === "1";
const WATCHDOG_MS = 900_000;
const SECTION = "## Durable requests (deno task bench:durable)";
const REPO = new URL("../", import.meta.url).pathname;
const PAYLOAD = new Uint8Array(PAYLOAD_BYTES).map((_, i) => 97 + (i % 26));
const STREAM = "BENCH_DURABLE";
const SUBJECT = "bench.durable.js";

const processes = new Set<Deno.ChildProcess>();

/** Starts `bench/procs/<script>`; resolves with its `READY…` line. */
async function spawn(
  script: string,
  args: string[],
): Promise<{ ready: string; stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", `${REPO}deno.json`, `${REPO}bench/procs/${script}`, ...args],
    cwd: REPO,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  processes.add(child);
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    while (!buffered.includes("\n")) {
      const next = await reader.read();
      if (next.done) throw new Error(`${script}: exited before READY`);
      buffered += next.value;
    }
  } finally {
    clearTimeout(timer);
  }
  (async () => {
    try {
      while (!(await reader.read()).done) { /* drain */ }
    } catch { /* closed */ }
  })();
  return {
    ready: buffered.slice(0, buffered.indexOf("\n")).trim(),
    async stop() {
      try {
        await child.stdin.close();
      } catch { /* closed */ }
      const killer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await child.status;
      clearTimeout(killer);
      processes.delete(child);
    },
  };
}

function killAll(): void {
  for (const child of processes) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }
}

type Call = () => Promise<void>;

/** `inFlight` lanes, each one call after the other, for `durationMs`. */
async function drive(inFlight: number, call: Call, durationMs: number, samples?: Float64Array) {
  let count = 0;
  let errors = 0;
  let firstError: unknown;
  const start = performance.now();
  const end = start + durationMs;
  const lane = async () => {
    while (performance.now() < end && count < MAX_REQUESTS) {
      const t0 = performance.now();
      try {
        await call();
        if (samples && count < samples.length) samples[count] = performance.now() - t0;
        count++;
      } catch (error) {
        errors++;
        firstError ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  if (firstError) console.error(`  first error: ${firstError}`);
  return { count, errors, seconds: (performance.now() - start) / 1000 };
}

interface Sample {
  system: string;
  inFlight: number;
  round: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

async function measure(
  system: string,
  inFlight: number,
  round: number,
  call: Call,
): Promise<Sample> {
  await drive(inFlight, call, WARMUP_MS);
  const samples = new Float64Array(MAX_REQUESTS);
  const run = await drive(inFlight, call, MEASURE_MS, samples);
  const summary = summarize(samples, Math.min(run.count, samples.length), run.errors, run.seconds);
  console.error(
    `  round ${round} ${system} x${inFlight}: ${num(summary.perSecond)}/s p50 ${
      num(summary.p50Ms, 2)
    } ms p99 ${num(summary.p99Ms, 2)} ms${run.errors ? `, ${run.errors} errors` : ""}`,
  );
  return {
    system,
    inFlight,
    round,
    perSecond: summary.perSecond,
    p50Ms: summary.p50Ms,
    p99Ms: summary.p99Ms,
    errors: run.errors,
  };
}

async function waitForWorker(client: MdpClient, service: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (true) {
    const [count] = await client.request("mmi.workers", [service]);
    if (Number(new TextDecoder().decode(count)) >= 1) return;
    if (Date.now() > deadline) throw new Error(`no worker for ${service}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** JetStream: the stream, the consumer child, and a call that publishes and waits for both answers. */
async function jetstream(): Promise<{ call: Call; label: string; close(): Promise<void> }> {
  const nc: NatsConnection = await connect({ servers: NATS_SERVER, timeout: 2000 });
  const api = async (subject: string, body: unknown) => {
    const reply = await nc.request(subject, JSON.stringify(body), { timeout: 5000 });
    return JSON.parse(new TextDecoder().decode(reply.data));
  };
  await api(`$JS.API.STREAM.DELETE.${STREAM}`, {});
  const created = await api(`$JS.API.STREAM.CREATE.${STREAM}`, {
    name: STREAM,
    subjects: [SUBJECT],
    storage: "file",
    retention: "workqueue",
    discard: "old",
  });
  if (created.error) throw new Error(`stream: ${JSON.stringify(created.error)}`);
  const consumer = await spawn("jetstream_consumer.ts", [NATS_SERVER, STREAM, SUBJECT]);
  const inbox = `_bench.answers.${crypto.randomUUID()}`;
  const inboxBytes = new TextEncoder().encode(inbox);
  const waiting = new Map<number, () => void>();
  nc.subscribe(inbox, {
    callback: (error, msg) => {
      if (error) return;
      const d = msg.data;
      const id = ((d[0]! << 24) | (d[1]! << 16) | (d[2]! << 8) | d[3]!) >>> 0;
      waiting.get(id)?.();
    },
  });
  await nc.flush();
  let next = 1;
  const call: Call = async () => {
    const id = next++;
    const message = new Uint8Array(1 + inboxBytes.length + 4 + PAYLOAD.length);
    message[0] = inboxBytes.length;
    message.set(inboxBytes, 1);
    const at = 1 + inboxBytes.length;
    message[at] = id >>> 24;
    message[at + 1] = (id >>> 16) & 0xff;
    message[at + 2] = (id >>> 8) & 0xff;
    message[at + 3] = id & 0xff;
    message.set(PAYLOAD, at + 4);
    const answered = new Promise<void>((resolve) => waiting.set(id, resolve));
    try {
      // The publish's ack says the server stored it; the answer, that the consumer got it.
      const ack = await nc.request(SUBJECT, message, { timeout: 10_000 });
      const stored = JSON.parse(new TextDecoder().decode(ack.data));
      if (stored.error) throw new Error(`publish: ${JSON.stringify(stored.error)}`);
      await answered;
    } finally {
      waiting.delete(id);
    }
  };
  return {
    call,
    label: `JetStream (nats-server ${
      nc.info?.version ?? "?"
    }, file stream, work queue; server default sync, not per message)`,
    async close() {
      await consumer.stop();
      await api(`$JS.API.STREAM.DELETE.${STREAM}`, {}).catch(() => {});
      await nc.close();
    },
  };
}

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error("bench:durable: watchdog, giving up");
    killAll();
    Deno.exit(1);
  }, WATCHDOG_MS);
  Deno.unrefTimer(watchdog);
  const dir = await Deno.makeTempDir({ prefix: "bench-durable-" });
  const stops: Array<() => Promise<void>> = [];
  try {
    const full = await spawn("durable_broker.ts", [
      "tcp://127.0.0.1:0",
      `${dir}/full.db`,
      "full",
      JSON.stringify(["bench.durable"]),
    ]);
    stops.push(full.stop);
    const normal = await spawn("durable_broker.ts", [
      "tcp://127.0.0.1:0",
      `${dir}/normal.db`,
      "normal",
      JSON.stringify(["bench.durable"]),
    ]);
    stops.push(normal.stop);
    const fullEndpoint = full.ready.split(" ")[1]!;
    const normalEndpoint = normal.ready.split(" ")[1]!;
    for (
      const [endpoint, service] of [
        [fullEndpoint, "bench.durable"],
        [fullEndpoint, "bench.plain"],
        [normalEndpoint, "bench.durable"],
      ] as const
    ) {
      const worker = await spawn("service_worker.ts", [endpoint, service, "1", "256"]);
      stops.push(worker.stop);
    }
    const a = new MdpClient(fullEndpoint, { timeoutMs: 10_000 });
    const b = new MdpClient(normalEndpoint, { timeoutMs: 10_000 });
    stops.push(() => a.close(), () => b.close());
    await waitForWorker(a, "bench.durable");
    await waitForWorker(a, "bench.plain");
    await waitForWorker(b, "bench.durable");
    const systems: Array<{ label: string; call: Call }> = [
      {
        label: "plantd-ts broker, non-durable (same broker as the next row)",
        call: async () => void await a.request("bench.plain", ["echo", PAYLOAD]),
      },
      {
        label: "plantd-ts broker, durable (libSQL WAL, synchronous=full, group commit)",
        call: async () =>
          void await a.request("bench.durable", ["echo", PAYLOAD], { durable: true }),
      },
      {
        label: "plantd-ts broker, durable (libSQL WAL, synchronous=normal, group commit)",
        call: async () =>
          void await b.request("bench.durable", ["echo", PAYLOAD], { durable: true }),
      },
    ];
    try {
      const js = await jetstream();
      stops.push(js.close);
      systems.push({ label: js.label, call: js.call });
    } catch (error) {
      console.error(`JetStream unavailable: ${error}`);
    }

    const samples: Sample[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      for (const n of IN_FLIGHT) {
        for (const system of systems) {
          samples.push(await measure(system.label, n, round, system.call));
        }
      }
    }

    const rows = systems.flatMap((system) =>
      IN_FLIGHT.map((n) => {
        const of = samples.filter((s) => s.system === system.label && s.inFlight === n);
        const range = (pick: (s: Sample) => number, decimals: number) => {
          const values = of.map(pick);
          return `${num(median(values), decimals)} (${num(Math.min(...values), decimals)}–${
            num(Math.max(...values), decimals)
          })`;
        };
        return [
          system.label,
          String(n),
          range((s) => s.perSecond, 0),
          range((s) => s.p50Ms, 2),
          range((s) => s.p99Ms, 2),
          String(of.reduce((sum, s) => sum + s.errors, 0)),
        ];
      })
    );
    const report = [
      SECTION,
      "",
      `${ROUNDS} interleaved rounds of ${MEASURE_MS} ms per row (after ${WARMUP_MS} ms warm-up), ` +
      `${PAYLOAD_BYTES}-byte payload, closed loop; median of the rounds, range in brackets. ` +
      "Broker, workers (one connection, capacity 256) and the JetStream consumer are child " +
      "processes, the client is the bench process; 2 shared cores. Durable rows: the request is " +
      "journaled (libSQL file, WAL) before it is routed and its reply kept " +
      "(durable_reply_ttl_ms 600000), one transaction per group of what arrived meanwhile. " +
      "JetStream: a request is the publish's ack (stored) plus the consumer's answer.",
      "",
      table(["system", "in flight", "requests/s", "p50 ms", "p99 ms", "errors"], rows),
      "",
    ].join("\n");
    console.log(report);
    if (!NO_WRITE) {
      await writeBenchmarksSection(SECTION, report);
      const path = await saveResult("durable", {
        rounds: ROUNDS,
        measureMs: MEASURE_MS,
        payloadBytes: PAYLOAD_BYTES,
      }, samples);
      console.error(`kept ${path}`);
    }
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    killAll();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

await main();
