/**
 * `deno task bench:broker`: echo round trips through the plantd-ts broker,
 * against raw ZeroMQ (no broker, our ceiling) and NATS request-reply, with
 * 1, 16 and 256 requests in flight; then the broker's idle CPU. Runs on
 * bench/harness.ts (interleaved rounds, median and range, raw results in
 * bench/results/); `deno task bench:report` puts it in BENCHMARKS.md.
 *
 * Layout (loopback only): every system is started once, up front, and stays
 * up (idle) while the others are measured, so rounds can interleave them:
 * - plantd-ts broker and echo worker processes, MdpClient in this process,
 *   on the TypeScript ZMTP sockets (plaintext tcp://). The headline row runs
 *   the echo worker at its defaults (1 connection, capacity 1: plain
 *   Majordomo, as Go plantd's and any MDP worker); rows with 4 and 16
 *   connections, and one connection of capacity 256 (a plantd-ts extension),
 *   name what they change;
 * - the same at defaults on libzmq's sockets (`mdp_transport` libzmq);
 * - raw zeromq: ROUTER echo server child process, DEALER here, both libzmq
 *   through transport/native_socket.ts;
 * - NATS: nats-server (system service), responder subscription in a child
 *   process, client here through @nats-io/transport-node on Deno's Node
 *   layer; and the same with the C client (bench/native/nats_echo.c, built
 *   here with `cc` against Debian's libnats-dev) as requester and responder
 *   processes. The CPU table shows what each client costs ("client").
 *
 * Each run: {@link WARMUP_MS} warm-up, then `measure_ms` or
 * {@link MAX_REQUESTS} round trips, closed loop with N requests in flight.
 *
 * @module
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { MdpClient } from "../mdp/client.ts";
import type { TransportChoice } from "../transport/message_socket.ts";
import { NativeSocket } from "../transport/native_socket.ts";
import { ECHO_SERVICE } from "../workers/echo.ts";
import { CpuMeter, findPid, summarize, ticksPerSecond } from "./_stats.ts";
import { type Child, type Metrics, runBench, spawnReady } from "./harness.ts";

const IN_FLIGHT = [1, 16, 256] as const;
const WARMUP_MS = 500;
const MAX_REQUESTS = 400_000;
const REQUEST_TIMEOUT_MS = 5000;
const IDLE_SETTLE_MS = 1000;
const IDLE_SAMPLE_MS = 5000;
const PAYLOAD_BYTES = 64;
const PAYLOAD = new Uint8Array(PAYLOAD_BYTES).map((_, i) => 97 + (i % 26));
const ALL_SYSTEMS = "ts-1x1,ts-4x1,ts-16x1,ts-1x256,libzmq-1x1,zmq,nats,nats-c";
const DENO_JSON = new URL("../deno.json", import.meta.url);

/** The version of an npm import in deno.json, for labels. */
async function importVersion(name: string): Promise<string> {
  const imports = JSON.parse(await Deno.readTextFile(DENO_JSON)).imports ?? {};
  return /@([\d.]+[^/]*)$/.exec(String(imports[name] ?? ""))?.[1] ?? "?";
}

/** N lanes, each issuing one call after the other until time or count runs out. */
async function drive(
  inFlight: number,
  call: () => Promise<void>,
  durationMs: number,
  samples?: Float64Array,
): Promise<{ count: number; errors: number; seconds: number }> {
  const limit = samples ? Math.min(samples.length, MAX_REQUESTS) : MAX_REQUESTS;
  let issued = 0;
  let count = 0;
  let errors = 0;
  const start = performance.now();
  const stopAt = start + durationMs;
  const lane = async () => {
    while (issued < limit && performance.now() < stopAt) {
      issued++;
      const t0 = performance.now();
      try {
        await call();
        if (samples) samples[count] = performance.now() - t0;
        count++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  return { count, errors, seconds: (performance.now() - start) / 1000 };
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && a.every((v, i) => v === b[i]);
}

// ---------------------------------------------------------------------------
// Raw ZeroMQ client: DEALER with a request id frame, many requests in flight,
// on the project's transport (NativeSocket, as the broker, client and worker).

/** libzmq's socket type number (stable ABI). */
const ZMQ_DEALER = 5;

class RawEchoClient {
  #socket = new NativeSocket(ZMQ_DEALER, {
    linger: 0,
    sendHighWaterMark: 100_000,
    receiveHighWaterMark: 100_000,
  });
  #pending = new Map<
    number,
    { resolve: (body: Uint8Array) => void; reject: (e: Error) => void; sent: number }
  >();
  #next = 1;
  #loop: Promise<void>;
  #sweep: ReturnType<typeof setInterval>;

  constructor(endpoint: string) {
    this.#socket.connect(endpoint);
    this.#loop = (async () => {
      for await (const message of this.#socket) {
        const idFrame = message[0];
        if (!idFrame || idFrame.length !== 4) continue;
        const id = new DataView(idFrame.buffer, idFrame.byteOffset, 4).getUint32(0);
        const pending = this.#pending.get(id);
        if (!pending) continue;
        this.#pending.delete(id);
        pending.resolve(message[1] ?? new Uint8Array());
      }
    })();
    this.#sweep = setInterval(() => {
      const now = performance.now();
      for (const [id, p] of this.#pending) {
        if (now - p.sent > REQUEST_TIMEOUT_MS) {
          this.#pending.delete(id);
          p.reject(new Error("raw echo timed out"));
        }
      }
    }, 500);
  }

  request(body: Uint8Array): Promise<Uint8Array> {
    const id = this.#next;
    this.#next = this.#next >= 0xffffffff ? 1 : this.#next + 1;
    const idFrame = new Uint8Array(4);
    new DataView(idFrame.buffer).setUint32(0, id);
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, sent: performance.now() });
      this.#socket.send([idFrame, body]).catch(reject);
    });
  }

  async close(): Promise<void> {
    clearInterval(this.#sweep);
    for (const p of this.#pending.values()) p.reject(new Error("closed"));
    this.#pending.clear();
    this.#socket.close();
    await this.#loop;
  }
}

// ---------------------------------------------------------------------------
// Systems: started once, measured in every round.

interface System {
  key: string;
  label: string;
  call: () => Promise<void>;
  /** Measures a run itself (a client in another process) instead of driving `call` here. */
  measure?: (inFlight: number, ms: number) => Promise<Metrics>;
  /** Processes whose CPU is shown, by name. */
  processes: Array<[string, number | "self"]>;
  close(): Promise<void>;
  /** Broker and worker pids, for the idle measurement. */
  idle?: { broker: number; worker: number };
}

const BROKER_LAYOUTS: Record<string, { conns: number; capacity: number; label: string }> = {
  "ts-1x1": {
    conns: 1,
    capacity: 1,
    label: "plantd-ts broker, echo worker at defaults (1 connection, capacity 1: plain MDP)",
  },
  "ts-4x1": {
    conns: 4,
    capacity: 1,
    label: "plantd-ts broker, echo worker with 4 connections (concurrency 4), capacity 1",
  },
  "ts-16x1": {
    conns: 16,
    capacity: 1,
    label: "plantd-ts broker, echo worker with 16 connections (concurrency 16), capacity 1",
  },
  "ts-1x256": {
    conns: 1,
    capacity: 256,
    label: "plantd-ts broker, echo worker with 1 connection of capacity 256 (plantd-ts extension)",
  },
  "libzmq-1x1": {
    conns: 1,
    capacity: 1,
    label: "same as the first row on libzmq sockets (mdp_transport libzmq), worker at defaults",
  },
};

async function startBroker(key: string): Promise<System> {
  const layout = BROKER_LAYOUTS[key]!;
  const transport: TransportChoice = key.startsWith("libzmq") ? "libzmq" : "auto";
  const broker = await spawnReady({
    name: `broker ${key}`,
    script: "bench/procs/broker.ts",
    args: ["tcp://127.0.0.1:0", transport],
  });
  const endpoint = broker.ready.split(" ")[0]!;
  const worker = await spawnReady({
    name: `echo ${key}`,
    script: "bench/procs/echo_worker.ts",
    args: [endpoint, String(layout.conns), String(layout.capacity), transport],
  });
  const client = new MdpClient(endpoint, { timeoutMs: REQUEST_TIMEOUT_MS, transport });
  // Until every worker connection is registered, requests would wait for the rest.
  const deadline = Date.now() + 15_000;
  while (true) {
    const [count] = await client.request("mmi.workers", [ECHO_SERVICE]);
    if (Number(new TextDecoder().decode(count)) >= layout.conns) break;
    if (Date.now() > deadline) throw new Error(`${key}: echo worker connections did not register`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const check = await client.request(ECHO_SERVICE, ["echo", PAYLOAD]);
  if (!sameBytes(check[0], PAYLOAD)) throw new Error(`${key}: echo returned other bytes`);
  return {
    key,
    label: layout.label,
    call: async () => {
      await client.request(ECHO_SERVICE, ["echo", PAYLOAD]);
    },
    processes: [["client", "self"], ["broker", broker.child.pid], ["worker", worker.child.pid]],
    idle: { broker: broker.child.pid, worker: worker.child.pid },
    close: async () => {
      await client.close();
      await worker.child.stop();
      await broker.child.stop();
    },
  };
}

async function startZmq(): Promise<System> {
  const server = await spawnReady({
    name: "zmq-echo",
    script: "bench/procs/zmq_echo.ts",
    args: ["tcp://127.0.0.1:0"],
  });
  const client = new RawEchoClient(server.ready.split(" ")[0]!);
  const echoed = await Promise.race([
    client.request(PAYLOAD),
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error("raw echo: no answer")), 5000)
    ),
  ]);
  if (!sameBytes(echoed, PAYLOAD)) throw new Error("raw echo returned other bytes");
  return {
    key: "zmq",
    label: "zeromq DEALER-ROUTER echo, no broker (libzmq at both ends)",
    call: async () => {
      await client.request(PAYLOAD);
    },
    processes: [["client", "self"], ["server", server.child.pid]],
    close: async () => {
      await client.close();
      await server.child.stop();
    },
  };
}

async function startNats(server: string): Promise<System> {
  const nc: NatsConnection = await connect({ servers: server, timeout: 2000, reconnect: false });
  const subject = `plantd.bench.echo.${crypto.randomUUID()}`;
  let responder: Child | undefined;
  try {
    responder = (await spawnReady({
      name: "nats-responder",
      script: "bench/procs/nats_responder.ts",
      args: [server, subject],
    })).child;
    const echoed = await nc.request(subject, PAYLOAD, { timeout: 5000 });
    if (!sameBytes(echoed.data, PAYLOAD)) throw new Error("NATS echo returned other bytes");
  } catch (error) {
    await nc.close();
    await responder?.stop();
    throw error;
  }
  const processes: System["processes"] = [["client", "self"], ["responder", responder.pid]];
  const serverPid = findPid("nats-server");
  if (serverPid !== undefined) processes.push(["nats-server", serverPid]);
  const client = await importVersion("@nats-io/transport-node");
  return {
    key: "nats",
    label: `NATS request-reply (nats-server ${nc.info?.version ?? "?"}; client and responder: ` +
      `@nats-io/transport-node ${client} on Deno's Node layer)`,
    call: async () => {
      await nc.request(subject, PAYLOAD, { timeout: REQUEST_TIMEOUT_MS });
    },
    processes,
    close: async () => {
      await nc.close();
      await responder!.stop();
    },
  };
}

/**
 * NATS request-reply through the C client (Debian's libnats-dev), requester
 * and responder each in a process of its own: what a native client costs.
 */
async function startNatsC(server: string): Promise<System> {
  const dir = await Deno.makeTempDir({ prefix: "bench-nats-c-" });
  const binary = `${dir}/nats_echo`;
  const source = new URL("./native/nats_echo.c", import.meta.url).pathname;
  const build = await new Deno.Command("cc", {
    args: ["-O2", "-o", binary, source, "-lnats"],
    stdout: "null",
    stderr: "piped",
  }).output().catch((error) => ({
    success: false,
    stderr: new TextEncoder().encode(String(error)),
  }));
  if (!build.success) {
    throw new Error(
      "the C client needs cc and Debian's libnats-dev (apt-get install gcc libnats-dev): " +
        new TextDecoder().decode(build.stderr).split("\n")[0],
    );
  }
  const url = `nats://${server}`;
  const subject = `plantd.bench.cecho.${crypto.randomUUID()}`;
  const responder = await spawnReady({
    name: "nats-c responder",
    command: binary,
    args: ["respond", url, subject],
  });
  const serverPid = findPid("nats-server");
  const ticks = await ticksPerSecond();
  return {
    key: "nats-c",
    label: `NATS request-reply (nats-server; client and responder: C client ${responder.ready}, ` +
      "send_asap as its Request() sends)",
    call: () => Promise.reject(new Error("measured by the requester process")),
    measure: async (inFlight, ms) => {
      const pids = serverPid === undefined
        ? [responder.child.pid]
        : [responder.child.pid, serverPid];
      const meter = new CpuMeter(pids, ticks);
      const requester = new Deno.Command(binary, {
        args: [
          "request",
          url,
          subject,
          String(inFlight),
          String(WARMUP_MS),
          String(ms),
          String(PAYLOAD_BYTES),
        ],
        stdout: "piped",
        stderr: "inherit",
      }).output();
      // The requester measures after its warm-up; the others are metered over about the same time.
      await new Promise((r) => setTimeout(r, WARMUP_MS));
      meter.start();
      const output = await requester;
      const percents = meter.percent();
      const line = new TextDecoder().decode(output.stdout).split("\n").find((l) =>
        l.startsWith("RESULT ")
      );
      if (!output.success || !line) throw new Error("C requester failed");
      const r = JSON.parse(line.slice("RESULT ".length));
      return {
        "req/s": r.count / r.seconds,
        "p50 ms": r.p50Ms,
        "p99 ms": r.p99Ms,
        errors: 0,
        "cpu.client": r.cpuSeconds / r.seconds * 100,
        "cpu.responder": percents[0]!,
        ...(serverPid === undefined ? {} : { "cpu.nats-server": percents[1]! }),
      };
    },
    processes: [],
    close: async () => {
      await responder.child.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

await runBench({
  name: "broker",
  title: "Broker (deno task bench:broker)",
  command: "`deno task bench:broker` (bench/broker.ts)",
  servers: ["nats-server"],
  settings: {
    measure_ms: { env: "BENCH_MEASURE_MS", default: 3000, help: "measured time per run" },
    systems: {
      env: "BENCH_SYSTEMS",
      default: ALL_SYSTEMS,
      help: `comma list of ${ALL_SYSTEMS}`,
    },
    nats_server: { env: "BENCH_NATS_SERVER", default: "127.0.0.1:4222", help: "NATS server" },
  },
}, async (bench) => {
  const ticks = await ticksPerSecond();
  const wanted = bench.settings.systems.split(",").map((s) => s.trim()).filter(Boolean);
  const systems: System[] = [];
  const problems: string[] = [];
  let headline: System | undefined;
  try {
    for (const key of wanted) {
      console.error(`starting ${key}`);
      try {
        if (key in BROKER_LAYOUTS) systems.push(await startBroker(key));
        else if (key === "zmq") systems.push(await startZmq());
        else if (key === "nats") systems.push(await startNats(bench.settings.nats_server));
        else if (key === "nats-c") systems.push(await startNatsC(bench.settings.nats_server));
        else throw new Error(`unknown system '${key}' (known: ${ALL_SYSTEMS})`);
      } catch (error) {
        // NATS may be down, or the C client missing: their rows say so; an unknown name is a mistake.
        if (!key.startsWith("nats")) throw error;
        problems.push(`${key} at ${bench.settings.nats_server}: ${(error as Error).message}`);
      }
    }
    const units = systems.flatMap((system) =>
      IN_FLIGHT.map((n) => {
        bench.row(`${system.key}@${n}`, system.label, { "in flight": n });
        return { key: `${system.key}@${n}`, system, inFlight: n };
      })
    );
    headline = systems.find((s) => s.key === "ts-1x1");
    const idleUnits = headline?.idle ? [{ key: "idle", system: headline, inFlight: 0 }] : [];
    if (headline) bench.row("idle", `${headline.label}, idle client connected`);
    const samples = new Float64Array(MAX_REQUESTS);
    await bench.rounds([...units, ...idleUnits], async ({ key, system, inFlight }) => {
      if (key === "idle") {
        await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
        const idle = new CpuMeter([system.idle!.broker, system.idle!.worker], ticks);
        idle.start();
        await new Promise((r) => setTimeout(r, IDLE_SAMPLE_MS));
        const [broker, worker] = idle.percent() as [number, number];
        return { "cpu.broker": broker, "cpu.worker": worker };
      }
      if (system.measure) return await system.measure(inFlight, bench.settings.measure_ms);
      await drive(inFlight, system.call, WARMUP_MS);
      const meter = new CpuMeter(system.processes.map(([, pid]) => pid), ticks);
      meter.start();
      const run = await drive(inFlight, system.call, bench.settings.measure_ms, samples);
      const percents = meter.percent();
      const s = summarize(samples, run.count, run.errors, run.seconds);
      const metrics: Metrics = {
        "req/s": s.perSecond,
        "p50 ms": s.p50Ms,
        "p99 ms": s.p99Ms,
        errors: run.errors,
      };
      system.processes.forEach(([name], i) => metrics[`cpu.${name}`] = percents[i]!);
      return metrics;
    });
  } finally {
    for (const system of systems) await system.close().catch(() => {});
  }

  const keys = (system: string) => IN_FLIGHT.map((n) => `${system}@${n}`);
  const present = (system: string) => systems.some((s) => s.key === system);
  const tableRows = systems.flatMap((s) => keys(s.key));
  const natsVs = (system: string, what: string, nats: string, client: string) =>
    present(system) && present(nats)
      ? IN_FLIGHT.map((n) => ({
        name: `not slower than NATS (${client}) at ${n} in flight, ${what}`,
        value: { rows: [`${system}@${n}`], metric: "req/s" },
        op: ">=" as const,
        target: { rows: [`${nats}@${n}`], metric: "req/s" },
      }))
      : [];
  return {
    description: [
      `Loopback, ${PAYLOAD_BYTES}-byte payload; per run ${WARMUP_MS} ms warm-up, then ` +
      `${bench.settings.measure_ms} ms or ${MAX_REQUESTS.toLocaleString("en-US")} requests, ` +
      "closed loop with N requests in flight. Every system is started once and stays up, idle, " +
      "while the others run. Broker, echo worker, raw zeromq server and NATS responder each run " +
      "in their own child process; every client runs in the bench process. The broker rows speak " +
      "ZMTP through transport/zmtp/ (TypeScript on Deno TCP) unless labelled libzmq; the raw " +
      "zeromq row is libzmq at both ends (transport/native_socket.ts). The echo worker's defaults " +
      "are 1 connection of capacity 1 (one request at a time, as plain Majordomo); rows with more " +
      "connections or capacity say so in their label.",
      ...problems.map((p) => `Not measured: ${p}.`),
    ].join("\n\n"),
    tables: [
      {
        rows: tableRows,
        columns: [
          { header: "system", show: "label" },
          { header: "in flight", show: "param:in flight" },
          { header: "req/s (median)", show: "median:req/s" },
          { header: "req/s range", show: "range:req/s" },
          { header: "p50 ms", show: "median:p50 ms", decimals: 3 },
          { header: "p99 ms", show: "median:p99 ms", decimals: 3 },
          { header: "errors", show: "sum:errors" },
        ],
      },
      {
        intro: "CPU during each run, % of one core per process (median over rounds); the client " +
          "is the bench process, except for the C client's row, where it is the requester " +
          "process (its own CPU time over its measured window; responder and nats-server over " +
          "about the same time). For NATS, `client` is what the client library costs, and " +
          "nats-server is the system service.",
        rows: tableRows,
        columns: [
          { header: "system", show: "label" },
          { header: "in flight", show: "param:in flight" },
          { header: "CPU % of a core", show: "cpu:cpu." },
          { header: "other processes, cores (max)", show: "other", decimals: 2 },
        ],
      },
      ...(headline
        ? [{
          intro: `Idle CPU over ${IDLE_SAMPLE_MS / 1000} s after ${IDLE_SETTLE_MS / 1000} s of ` +
            "rest (broker with its worker and an idle client connected), % of one core:",
          rows: ["idle"],
          columns: [
            { header: "system", show: "label" },
            { header: "CPU % of a core", show: "cpu:cpu.", decimals: 2 },
          ],
        }]
        : []),
    ],
    checks: [
      {
        name: ">= 25,000 brokered req/s at 256 in flight, echo worker at defaults",
        value: { rows: ["ts-1x1@256"], metric: "req/s" },
        op: ">=",
        target: 25_000,
      },
      {
        name: ">= 25,000 brokered req/s at 256 in flight, best worker layout measured",
        value: {
          rows: ["ts-1x1@256", "ts-4x1@256", "ts-16x1@256", "ts-1x256@256"],
          metric: "req/s",
        },
        op: ">=",
        target: 25_000,
      },
      ...natsVs("ts-1x1", "echo worker at defaults", "nats", "Node client"),
      ...natsVs("ts-1x1", "echo worker at defaults", "nats-c", "C client"),
      ...natsVs("ts-1x256", "worker of capacity 256", "nats", "Node client"),
      ...natsVs("ts-1x256", "worker of capacity 256", "nats-c", "C client"),
      {
        name: "unloaded p50 < 0.5 ms (1 in flight, echo worker at defaults), ms",
        value: { rows: ["ts-1x1@1"], metric: "p50 ms" },
        op: "<",
        target: 0.5,
        decimals: 3,
      },
      {
        name: "broker idle CPU < 2% of a core",
        value: { rows: ["idle"], metric: "cpu.broker" },
        op: "<",
        target: 2,
        decimals: 2,
      },
    ],
  };
});
