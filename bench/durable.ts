/**
 * `deno task bench:durable`: durable requests (journaled before they are
 * routed, docs/durability.md) beside non-durable requests through the same
 * broker, and beside NATS JetStream (publish with ack, then a push consumer
 * with explicit acks that answers the publisher), with 1, 16 and 256
 * requests in flight. Runs on bench/harness.ts: every system is started once
 * and stays up; each (system, in flight) pair is a unit, the units
 * interleave in rotating order each round; median and range over rounds.
 *
 * Layout (loopback):
 * - broker A (child, bench/procs/durable_broker.ts): durable service
 *   `bench.durable` on a libSQL journal with synchronous=full (the default),
 *   and the non-durable `bench.plain`; broker B: `bench.durable` with
 *   synchronous=normal. Each service has an echo worker child (one
 *   connection, capacity 256). The client is the bench process; durable
 *   requests carry `durable: true`.
 * - JetStream: the machine's nats-server (`-js`), a file stream with
 *   work-queue retention; the publisher here awaits each publish's ack
 *   (stored), the consumer child acks the message and answers the publisher
 *   over core NATS; a request is done when both came back. The stream's
 *   storage is read back from the server and the server's sync setting from
 *   its command line (JetStream syncs on an interval unless `sync_always`).
 *
 * @module
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { MdpClient } from "../mdp/client.ts";
import { findPid, summarize } from "./_stats.ts";
import { closedLoop, filesystemOf, type Metrics, runBench, spawnReady, until } from "./harness.ts";

const WARMUP_MS = 300;
const MAX_REQUESTS = 200_000;
const PAYLOAD_BYTES = 64;
const PAYLOAD = new Uint8Array(PAYLOAD_BYTES).map((_, i) => 97 + (i % 26));
// Unique per run: several people may bench on the machine's one nats-server.
const RUN_ID = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
const STREAM = `BENCH_DURABLE_${RUN_ID}`;
const SUBJECT = `bench.durable.js.${RUN_ID}`;
const REPLY_TTL_MS = 600_000;

type Call = () => Promise<void>;

const share = (a: number, b: number) =>
  Number.isFinite(a / b) && b > 0 ? `${Math.round((a / b) * 100)}%` : "n/a";

/** A durable broker child and an echo worker for each of its services. */
async function startBroker(
  journal: string,
  synchronous: "full" | "normal",
  services: string[],
): Promise<string> {
  const { ready } = await spawnReady({
    name: `durable-broker-${synchronous}`,
    script: "bench/procs/durable_broker.ts",
    args: ["tcp://127.0.0.1:0", journal, synchronous, JSON.stringify(["bench.durable"])],
  });
  const endpoint = ready;
  for (const service of services) {
    await spawnReady({
      name: `worker-${service}-${synchronous}`,
      script: "bench/procs/service_worker.ts",
      args: [endpoint, service, "1", "256"],
    });
  }
  return endpoint;
}

async function waitForWorker(client: MdpClient, service: string): Promise<void> {
  await until(
    async () => {
      const [count] = await client.request("mmi.workers", [service], { timeoutMs: 1000 });
      return Number(new TextDecoder().decode(count)) >= 1;
    },
    15_000,
    `a worker for ${service}`,
  );
}

/** How the machine's nats-server syncs JetStream writes, from its command line. */
function natsSync(): { sync: string; storeDir: string } {
  const pid = findPid("nats-server");
  if (pid === undefined) return { sync: "sync setting unknown (server not found)", storeDir: "" };
  const args = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter(Boolean);
  const at = (flags: string[]) => {
    const i = args.findIndex((a) => flags.includes(a));
    return i >= 0 ? args[i + 1] ?? "" : "";
  };
  const config = at(["-c", "--config"]);
  const storeDir = at(["-sd", "--store_dir"]);
  return {
    sync: config
      ? `sync as set in ${config}`
      : "no config file: sync_interval at its default (2 min), sync_always off",
    storeDir,
  };
}

/** JetStream: the stream, the consumer child, and a call that publishes and waits for both answers. */
async function jetstream(
  server: string,
): Promise<{ call: Call; label: string; close(): Promise<void> }> {
  const nc: NatsConnection = await connect({ servers: server, timeout: 2000 });
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
  const info = await api(`$JS.API.STREAM.INFO.${STREAM}`, {});
  const storage = String(info.config?.storage ?? "?");
  const { sync, storeDir } = natsSync();
  await spawnReady({
    name: "jetstream-consumer",
    script: "bench/procs/jetstream_consumer.ts",
    args: [server, STREAM, SUBJECT],
  });
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
    label: `NATS JetStream (nats-server ${nc.info?.version ?? "?"}, stream storage ${storage}` +
      `${storeDir ? ` in ${storeDir} on ${filesystemOf(storeDir)}` : ""}, work queue; ${sync})`,
    async close() {
      await api(`$JS.API.STREAM.DELETE.${STREAM}`, {}).catch(() => {});
      await nc.close();
    },
  };
}

await runBench({
  name: "durable",
  title: "Durable requests (deno task bench:durable)",
  command: "`deno task bench:durable` (bench/durable.ts)",
  servers: ["nats-server"],
  settings: {
    measure_ms: { env: "BENCH_MEASURE_MS", default: 2000, help: "measured time per run" },
    in_flight: { env: "BENCH_IN_FLIGHT", default: "1,16,256", help: "requests in flight (list)" },
    nats: { env: "BENCH_NATS_SERVER", default: "127.0.0.1:4222", help: "nats-server with -js" },
    db_dir: {
      env: "BENCH_DB_DIR",
      default: "",
      help: "where journals go (default: the system's temporary directory)",
    },
  },
}, async (bench) => {
  const settings = bench.settings;
  const inFlight = settings.in_flight.split(",").map(Number).filter((n) => n > 0);
  const dbDir = settings.db_dir || Deno.env.get("TMPDIR") || "/tmp";
  const dir = await Deno.makeTempDir({ prefix: "bench-durable-", dir: dbDir });
  const fs = filesystemOf(dir);
  const closers: Array<() => Promise<void>> = [];
  try {
    const fullEndpoint = await startBroker(`${dir}/full.db`, "full", [
      "bench.durable",
      "bench.plain",
    ]);
    const normalEndpoint = await startBroker(`${dir}/normal.db`, "normal", ["bench.durable"]);
    const a = new MdpClient(fullEndpoint, { timeoutMs: 10_000 });
    const b = new MdpClient(normalEndpoint, { timeoutMs: 10_000 });
    closers.push(() => a.close(), () => b.close());
    await waitForWorker(a, "bench.durable");
    await waitForWorker(a, "bench.plain");
    await waitForWorker(b, "bench.durable");
    const js = await jetstream(settings.nats);
    closers.push(js.close);
    const systems: Array<{ key: string; label: string; call: Call }> = [
      {
        key: "plain",
        label: "plantd-ts broker, non-durable service (same broker as the next row)",
        call: async () => void await a.request("bench.plain", ["echo", PAYLOAD]),
      },
      {
        key: "durable-full",
        label:
          `plantd-ts broker, durable (libSQL journal, WAL, synchronous=full, group commit, ${fs})`,
        call: async () =>
          void await a.request("bench.durable", ["echo", PAYLOAD], { durable: true }),
      },
      {
        key: "durable-normal",
        label:
          `plantd-ts broker, durable (libSQL journal, WAL, synchronous=normal, group commit, ${fs})`,
        call: async () =>
          void await b.request("bench.durable", ["echo", PAYLOAD], { durable: true }),
      },
      { key: "jetstream", label: js.label, call: js.call },
    ];
    const units: Array<{ key: string; call: Call; n: number }> = [];
    for (const system of systems) {
      for (const n of inFlight) {
        const key = `${system.key}@${n}`;
        bench.row(key, system.label, { "in flight": n });
        units.push({ key, call: system.call, n });
      }
    }
    const loop = { warmupMs: WARMUP_MS, measureMs: settings.measure_ms, maxOps: MAX_REQUESTS };
    await bench.rounds(units, async (unit): Promise<Metrics> => {
      let firstError: unknown;
      const run = await closedLoop(unit.n, () =>
        unit.call().catch((error) => {
          firstError ??= error;
          throw error;
        }), loop);
      if (firstError !== undefined) console.error(`${unit.key}: first error: ${firstError}`);
      const s = summarize(run.latencies, run.count, run.errors, run.seconds);
      return { "req/s": s.perSecond, "p50 ms": s.p50Ms, "p99 ms": s.p99Ms, errors: s.errors };
    });
    const top = Math.max(...inFlight);
    const plainTop = bench.stats(`plain@${top}`, "req/s").median;
    const fullTop = bench.stats(`durable-full@${top}`, "req/s").median;
    const jsTop = bench.stats(`jetstream@${top}`, "req/s").median;
    return {
      description: `${PAYLOAD_BYTES}-byte payload, closed loop with N requests in flight; per ` +
        `run ${WARMUP_MS} ms warm-up, then ${settings.measure_ms} ms (or ${MAX_REQUESTS} ` +
        "requests). Brokers (bench/procs/durable_broker.ts), echo workers (one connection, " +
        "capacity 256) and the JetStream consumer are child processes; the clients are the " +
        "bench process. Durable rows: each request is journaled (libSQL file, WAL, one " +
        "transaction per group of what arrived meanwhile) before it is routed and its reply " +
        `kept (${REPLY_TTL_MS} ms); journals in ${dir.replace(/\/[^/]*$/, "")} on ${fs}. ` +
        "JetStream: a request is the publish's ack (stored by the server) plus the consumer's " +
        "answer; it is durable only as its label says (the server syncs to disk on an interval, " +
        "not per message, unless sync_always is set), where synchronous=full syncs every group " +
        "commit before routing.",
      tables: [{
        rows: units.map((u) => u.key),
        columns: [
          { header: "system", show: "label" },
          { header: "in flight", show: "param:in flight" },
          { header: "requests/s (median)", show: "median:req/s" },
          { header: "range", show: "range:req/s" },
          { header: "p50 ms", show: "median:p50 ms", decimals: 2 },
          { header: "p99 ms", show: "median:p99 ms", decimals: 2 },
          { header: "errors", show: "sum:errors" },
        ],
      }],
      notes: [
        `At ${top} in flight, durable (synchronous=full) requests run at ${
          share(fullTop, plainTop)
        } ` +
        `of non-durable ones through the same broker, and at ${share(fullTop, jsTop)} of ` +
        "JetStream's rate.",
      ],
      checks: [{
        name: `no errors`,
        value: { rows: units.map((u) => u.key), metric: "errors" },
        op: "<=",
        target: 0,
      }],
      data: { payloadBytes: PAYLOAD_BYTES, warmupMs: WARMUP_MS, replyTtlMs: REPLY_TTL_MS },
    };
  } finally {
    for (const close of closers.reverse()) await close().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
