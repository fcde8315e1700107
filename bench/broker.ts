/**
 * `deno task bench:broker`: echo round trips through the plantd-ts broker,
 * against raw ZeroMQ (no broker, our ceiling) and NATS request-reply, with
 * 1, 16 and 256 requests in flight; then the broker's idle CPU. Prints
 * markdown tables and the targets of issue 2 as PASS/FAIL.
 *
 * Layout (loopback only, this machine has 2 cores):
 * - brokered: broker child process, echo worker child process with
 *   {@link WORKER_CONCURRENCY} connections (MDP workers), MdpClient here, all
 *   on the TypeScript ZMTP sockets of transport/zmtp/ (plaintext tcp://);
 * - the same on libzmq's sockets (`mdp_transport` libzmq), to show what the
 *   transport takes;
 * - raw zeromq: ROUTER echo server child process, DEALER here, both libzmq
 *   through transport/native_socket.ts (what Go and Python peers run);
 * - NATS: nats-server at 127.0.0.1:4222 (system service), responder
 *   subscription in a child process, client here (@nats-io/transport-node).
 *
 * Each measurement: {@link WARMUP_MS} warm-up, then {@link MEASURE_MS} or
 * {@link MAX_REQUESTS} round trips, whichever ends first; closed loop with
 * N requests in flight. Environment overrides for investigations:
 * BENCH_WORKER_CONCURRENCY, BENCH_MEASURE_MS, BENCH_SYSTEMS (comma list of
 * broker,broker-libzmq,zmq,nats), BENCH_NATS_SERVER (default 127.0.0.1:4222), BENCH_NO_WRITE=1
 * (print only; by default the report replaces this benchmark's section of
 * BENCHMARKS.md, the convention of bench/bus.ts).
 *
 * The machine may be shared: before each row the bench waits (bounded) for an
 * idle machine (at most {@link QUIET_WAIT_MS} per row and
 * {@link QUIET_BUDGET_MS} in all), and it repeats a row (up to {@link ATTEMPTS} times) when
 * processes other than the ones under test used more than
 * {@link FOREIGN_MAX_PERCENT}% of a core meanwhile; the CPU table shows that
 * share as "rest of machine".
 *
 * @module
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { MdpClient } from "../mdp/client.ts";
import type { TransportChoice } from "../transport/message_socket.ts";
import { NativeSocket } from "../transport/native_socket.ts";
import { ECHO_SERVICE } from "../workers/echo.ts";
import {
  CpuMeter,
  findPid,
  num,
  quiet,
  summarize,
  type Summary,
  table,
  ticksPerSecond,
  writeBenchmarksSection,
} from "./_stats.ts";

const IN_FLIGHT = [1, 16, 256] as const;
/** Echo worker connections (MDP workers) in the one worker process. */
const WORKER_CONCURRENCY = Number(Deno.env.get("BENCH_WORKER_CONCURRENCY") ?? "1");
/** Requests each worker connection takes at once (plantd-ts READY capacity; 1 is plain MDP). */
const WORKER_CAPACITY = Number(Deno.env.get("BENCH_WORKER_CAPACITY") ?? "256");
const WARMUP_MS = 500;
const MEASURE_MS = Number(Deno.env.get("BENCH_MEASURE_MS") ?? "3000");
const MAX_REQUESTS = 400_000;
const REQUEST_TIMEOUT_MS = 5000;
const IDLE_SETTLE_MS = 1000;
const IDLE_SAMPLE_MS = 5000;
const PAYLOAD_BYTES = 64;
const NATS_SERVER = Deno.env.get("BENCH_NATS_SERVER") ?? "127.0.0.1:4222";
/** Whole run bounded: children are killed and the process exits past this. */
const WATCHDOG_MS = 600_000;
const ATTEMPTS = 3;
const FOREIGN_MAX_PERCENT = 15;
const QUIET_IDLE = 0.9;
/** Longest wait for a quiet machine before one row, and for all rows together. */
const QUIET_WAIT_MS = 30_000;
const QUIET_BUDGET_MS = 120_000;
let quietBudgetMs = QUIET_BUDGET_MS;
const NO_WRITE = Deno.env.get("BENCH_NO_WRITE") === "1";
const SECTION = "## Broker (deno task bench:broker)";
const SYSTEMS = new Set(
  (Deno.env.get("BENCH_SYSTEMS") ?? "broker,broker-libzmq,zmq,nats").split(",").map((s) =>
    s.trim()
  ),
);

const PAYLOAD = new Uint8Array(PAYLOAD_BYTES).map((_, i) => 97 + (i % 26));
const REPO = new URL("../", import.meta.url).pathname;

// ---------------------------------------------------------------------------
// Child processes

/** Every child still running, so an error or a signal can kill them all. */
const processes = new Set<Deno.ChildProcess>();

/** A child Deno process running one of bench/procs/*.ts. */
class Child {
  readonly name: string;
  readonly pid: number;
  readonly ready: string;
  #process: Deno.ChildProcess;

  private constructor(name: string, process: Deno.ChildProcess, ready: string) {
    this.name = name;
    this.#process = process;
    this.pid = process.pid;
    this.ready = ready;
  }

  /** Starts `bench/procs/<script>` and waits for its `READY…` line. */
  static async spawn(name: string, script: string, args: string[]): Promise<Child> {
    const process = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", `${REPO}deno.json`, `${REPO}bench/procs/${script}`, ...args],
      cwd: REPO,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    processes.add(process);
    try {
      const lines = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let buffered = "";
      const deadline = Date.now() + 20_000;
      let ready: string | undefined;
      while (ready === undefined) {
        const timer = new Promise<"timeout">((resolve) => {
          const id = setTimeout(() => resolve("timeout"), Math.max(0, deadline - Date.now()));
          Deno.unrefTimer(id);
        });
        const next = await Promise.race([lines.read(), timer]);
        if (next === "timeout") throw new Error(`${name}: no READY within 20 s`);
        if (next.done) throw new Error(`${name}: exited before READY`);
        buffered += next.value;
        const at = buffered.indexOf("\n");
        if (at >= 0 && buffered.startsWith("READY")) ready = buffered.slice(0, at).trim();
        else if (at >= 0) {
          console.error(`[${name}] ${buffered.slice(0, at)}`);
          buffered = buffered.slice(at + 1);
        }
      }
      // Keep draining stdout so the child never blocks on a full pipe.
      (async () => {
        try {
          while (!(await lines.read()).done) { /* discard */ }
        } catch { /* closed */ }
      })();
      return new Child(name, process, ready);
    } catch (error) {
      kill(process);
      await process.status;
      processes.delete(process);
      throw error;
    }
  }

  /** Closes its stdin (the child cleans up and exits), SIGKILL after 3 s. */
  async stop(): Promise<void> {
    try {
      await this.#process.stdin.close();
    } catch { /* already closed */ }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.#process.status.then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 3000)),
    ]);
    clearTimeout(timer);
    if (!exited) kill(this.#process);
    await this.#process.status;
    processes.delete(this.#process);
  }
}

function kill(process: Deno.ChildProcess): void {
  try {
    process.kill("SIGKILL");
  } catch { /* already gone */ }
}

function killAll(): void {
  for (const process of processes) kill(process);
}

// ---------------------------------------------------------------------------
// Load driver

type Call = () => Promise<void>;

interface Run {
  count: number;
  errors: number;
  seconds: number;
}

/** N lanes, each issuing one call after the other until time or count runs out. */
async function drive(
  inFlight: number,
  call: Call,
  durationMs: number,
  samples?: Float64Array,
): Promise<Run> {
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

interface Row {
  system: string;
  inFlight: number;
  summary?: Summary;
  note?: string;
  cpu?: string;
}

const samples = new Float64Array(MAX_REQUESTS);

/**
 * Warm-up, then one measured run, on a machine left to us: waits for quiet
 * first, and repeats the run when other processes used CPU meanwhile.
 */
async function measure(
  system: string,
  inFlight: number,
  call: Call,
  meter: CpuMeter,
  cpuLabels: string[],
): Promise<Row> {
  let row: Row | undefined;
  let foreign = NaN;
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const waitFrom = performance.now();
    await quiet(QUIET_IDLE, Math.min(QUIET_WAIT_MS, Math.max(0, quietBudgetMs)));
    quietBudgetMs -= performance.now() - waitFrom;
    await drive(inFlight, call, WARMUP_MS);
    meter.start();
    const run = await drive(inFlight, call, MEASURE_MS, samples);
    const percents = meter.percent();
    const others = meter.otherPercent();
    const cpu = [
      ...percents.map((p, i) => `${cpuLabels[i]} ${num(p)}%`),
      `rest of machine ${num(others)}%`,
    ].join(", ");
    const summary = summarize(samples, run.count, run.errors, run.seconds);
    console.error(
      `  ${system} @${inFlight}: ${num(summary.perSecond)} req/s, p50 ${
        num(summary.p50Ms, 3)
      } ms, ` +
        `p99 ${num(summary.p99Ms, 3)} ms, errors ${run.errors} (${cpu})`,
    );
    // Keep the attempt disturbed least.
    if (row === undefined || !(others >= foreign)) {
      row = { system, inFlight, summary, cpu };
      foreign = others;
    }
    if (!(others > FOREIGN_MAX_PERCENT)) break;
    if (attempt < ATTEMPTS) console.error("    other processes were busy: measuring again");
  }
  if (foreign > FOREIGN_MAX_PERCENT) row!.note = `other processes used ${num(foreign)}% of a core`;
  return row!;
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
// The three systems

const BROKER_LABEL =
  `plantd-ts broker (1 echo proc x ${WORKER_CONCURRENCY} conns x capacity ${WORKER_CAPACITY})`;
/** The same broker, worker and client on libzmq's sockets (mdp_transport libzmq): the transport's share. */
const LIBZMQ_BROKER_LABEL = `same, on libzmq sockets (mdp_transport libzmq)`;
const ZMQ_LABEL = "zeromq DEALER-ROUTER echo, no broker";
let natsLabel = "NATS request-reply";

function timeoutAfter<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

interface BrokerResult {
  rows: Row[];
  idleBrokerPercent: number;
  idleWorkerPercent: number;
}

async function benchBroker(
  ticks: number,
  transport: TransportChoice = "auto",
): Promise<BrokerResult> {
  console.error(
    `broker: starting broker and echo worker (${WORKER_CONCURRENCY} connections, ${transport})`,
  );
  const broker = await Child.spawn("broker", "broker.ts", ["tcp://127.0.0.1:0", transport]);
  const endpoint = broker.ready.split(" ")[1]!;
  const worker = await Child.spawn("echo-worker", "echo_worker.ts", [
    endpoint,
    String(WORKER_CONCURRENCY),
    String(WORKER_CAPACITY),
    transport,
  ]);
  const client = new MdpClient(endpoint, { timeoutMs: REQUEST_TIMEOUT_MS, transport });
  const label = transport === "libzmq" ? LIBZMQ_BROKER_LABEL : BROKER_LABEL;
  try {
    // Wait until the broker has every worker connection registered.
    const deadline = Date.now() + 15_000;
    while (true) {
      const [count] = await client.request("mmi.workers", [ECHO_SERVICE]);
      if (Number(new TextDecoder().decode(count)) >= WORKER_CONCURRENCY) break;
      if (Date.now() > deadline) throw new Error("echo worker connections did not register");
      await new Promise((r) => setTimeout(r, 50));
    }
    const check = await client.request(ECHO_SERVICE, ["echo", PAYLOAD]);
    if (!sameBytes(check[0], PAYLOAD)) throw new Error("brokered echo returned other bytes");

    const call: Call = async () => {
      await client.request(ECHO_SERVICE, ["echo", PAYLOAD]);
    };
    const meter = new CpuMeter(["self", broker.pid, worker.pid], ticks);
    const rows: Row[] = [];
    for (const n of IN_FLIGHT) {
      rows.push(await measure(label, n, call, meter, ["bench", "broker", "worker"]));
    }

    await client.close();
    console.error(`broker: idle CPU over ${IDLE_SAMPLE_MS / 1000} s (broker + idle worker)`);
    await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
    const idle = new CpuMeter([broker.pid, worker.pid], ticks);
    idle.start();
    await new Promise((r) => setTimeout(r, IDLE_SAMPLE_MS));
    const [idleBrokerPercent, idleWorkerPercent] = idle.percent() as [number, number];
    return { rows, idleBrokerPercent, idleWorkerPercent };
  } finally {
    await client.close();
    await worker.stop();
    await broker.stop();
  }
}

async function benchZmq(ticks: number): Promise<Row[]> {
  console.error("zmq: starting raw ROUTER echo server");
  const server = await Child.spawn("zmq-echo", "zmq_echo.ts", ["tcp://127.0.0.1:0"]);
  const client = new RawEchoClient(server.ready.split(" ")[1]!);
  try {
    const echoed = await timeoutAfter(5000, "raw echo", client.request(PAYLOAD));
    if (!sameBytes(echoed, PAYLOAD)) throw new Error("raw echo returned other bytes");
    const call: Call = async () => {
      await client.request(PAYLOAD);
    };
    const meter = new CpuMeter(["self", server.pid], ticks);
    const rows: Row[] = [];
    for (const n of IN_FLIGHT) {
      rows.push(await measure(ZMQ_LABEL, n, call, meter, ["bench", "server"]));
    }
    return rows;
  } finally {
    await client.close();
    await server.stop();
  }
}

async function benchNats(ticks: number): Promise<{ rows: Row[]; available: boolean }> {
  let nc: NatsConnection;
  try {
    nc = await connect({ servers: NATS_SERVER, timeout: 2000, reconnect: false });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    console.log(`NATS is not running at ${NATS_SERVER} (${reason}): NATS rows are unavailable.`);
    return {
      available: false,
      rows: IN_FLIGHT.map((n) => ({ system: natsLabel, inFlight: n, note: "unavailable" })),
    };
  }
  natsLabel = `NATS request-reply (nats-server ${nc.info?.version ?? "?"})`;
  const subject = `plantd.bench.echo.${crypto.randomUUID()}`;
  console.error("nats: starting responder");
  let responder: Child | undefined;
  try {
    responder = await Child.spawn("nats-responder", "nats_responder.ts", [NATS_SERVER, subject]);
    const echoed = await nc.request(subject, PAYLOAD, { timeout: 5000 });
    if (!sameBytes(echoed.data, PAYLOAD)) throw new Error("NATS echo returned other bytes");
    const call: Call = async () => {
      await nc.request(subject, PAYLOAD, { timeout: REQUEST_TIMEOUT_MS });
    };
    const serverPid = findPid("nats-server");
    const pids: Array<number | "self"> = ["self", responder.pid];
    const labels = ["bench", "responder"];
    if (serverPid !== undefined) {
      pids.push(serverPid);
      labels.push("nats-server");
    }
    const meter = new CpuMeter(pids, ticks);
    const rows: Row[] = [];
    for (const n of IN_FLIGHT) rows.push(await measure(natsLabel, n, call, meter, labels));
    return { rows, available: true };
  } finally {
    await nc.close();
    await responder?.stop();
  }
}

// ---------------------------------------------------------------------------
// Main

function cells(row: Row): string[] {
  const s = row.summary;
  if (!s) return [row.system, String(row.inFlight), row.note ?? "n/a", "n/a", "n/a"];
  return [
    row.system,
    String(row.inFlight),
    num(s.perSecond),
    num(s.p50Ms, 3),
    num(s.p99Ms, 3),
  ];
}

/** The commit measured, and whether the code under test had uncommitted changes. */
async function codeVersion(): Promise<string> {
  const git = async (...args: string[]) => {
    const out = await new Deno.Command("git", { args: ["-C", REPO, ...args], stdout: "piped" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  };
  try {
    const commit = await git("rev-parse", "--short", "HEAD");
    if (!commit) return "commit unknown";
    const dirty = await git("status", "--porcelain", "--", "transport", "broker", "mdp", "workers");
    return dirty ? `commit ${commit} + uncommitted changes under test` : `commit ${commit}`;
  } catch {
    return "commit unknown";
  }
}

function verdict(ok: boolean | undefined): string {
  return ok === undefined ? "N/A" : ok ? "PASS" : "FAIL";
}

/** Replaces (or appends) this benchmark's section of BENCHMARKS.md. */

function machine(): string {
  let model = "";
  try {
    model = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "";
  } catch { /* not Linux */ }
  const cores = navigator.hardwareConcurrency;
  return `${cores} cores${model ? ` (${model.trim()})` : ""}, ${Deno.build.os}, ` +
    `Deno ${Deno.version.deno}`;
}

async function main(): Promise<void> {
  const ticks = await ticksPerSecond();
  const started = new Date();
  const version = await codeVersion();
  let broker: BrokerResult | undefined;
  let libzmqBroker: BrokerResult | undefined;
  let zmqRows: Row[] = [];
  let nats: { rows: Row[]; available: boolean } | undefined;
  if (SYSTEMS.has("broker")) broker = await benchBroker(ticks);
  if (SYSTEMS.has("broker-libzmq")) libzmqBroker = await benchBroker(ticks, "libzmq");
  if (SYSTEMS.has("zmq")) zmqRows = await benchZmq(ticks);
  if (SYSTEMS.has("nats")) nats = await benchNats(ticks);

  const rows = [
    ...(broker?.rows ?? []),
    ...(libzmqBroker?.rows ?? []),
    ...zmqRows,
    ...(nats?.rows ?? []),
  ];
  const out: string[] = [];
  out.push(
    `Run ${started.toISOString()}, ${version}, ${machine()}; loopback, ${PAYLOAD_BYTES}-byte ` +
      `payload, per row ${WARMUP_MS} ms warm-up then ${MEASURE_MS} ms or ` +
      `${num(MAX_REQUESTS)} requests, closed loop with N requests in flight.`,
    "",
    table(["system", "in flight", "req/s", "p50 ms", "p99 ms"], rows.map(cells)),
    "",
  );
  for (const r of rows.filter((r) => (r.summary?.errors ?? 0) > 0)) {
    out.push(`Errors: ${r.system} @${r.inFlight}: ${r.summary!.errors} failed requests`, "");
  }
  for (const r of rows.filter((r) => r.summary && r.note)) {
    out.push(`Disturbed: ${r.system} @${r.inFlight}: ${r.note} during the best attempt`, "");
  }
  out.push(
    "Layout: broker, echo worker and raw zeromq server each in their own child process; " +
      "broker, worker and client speak ZMTP through transport/zmtp/ (TypeScript on Deno TCP); " +
      "the 'on libzmq sockets' rows run the same three on libzmq (mdp_transport libzmq), and " +
      "the raw zeromq row is libzmq on both ends (transport/native_socket.ts); " +
      `echo worker concurrency ${WORKER_CONCURRENCY} (one worker process, ${WORKER_CONCURRENCY} ` +
      "MDP connections); NATS responder subscription in a child process; all clients in the " +
      "bench process.",
    "",
  );
  const cpuRows = rows.filter((r) => r.cpu).map((r) => [r.system, String(r.inFlight), r.cpu!]);
  if (cpuRows.length > 0) {
    out.push(
      "CPU during each measured run (% of one core, per process):",
      "",
      table(["system", "in flight", "CPU"], cpuRows),
      "",
    );
  }
  if (broker) {
    out.push(
      `Idle CPU over ${IDLE_SAMPLE_MS / 1000} s after the load (broker with an idle worker ` +
        `connected): broker ${num(broker.idleBrokerPercent, 2)}% of a core, worker ` +
        `${num(broker.idleWorkerPercent, 2)}%.`,
      "",
    );
  }

  // Targets of issue 2, computed from the rows above.
  const brokerAt = (n: number) => broker?.rows.find((r) => r.inFlight === n)?.summary;
  const natsAt = (n: number) => nats?.rows.find((r) => r.inFlight === n)?.summary;
  const at256 = brokerAt(256)?.perSecond;
  const unloaded = brokerAt(1)?.p50Ms;
  const comparisons = IN_FLIGHT.map((n) => ({ n, b: brokerAt(n), s: natsAt(n) }));
  const natsKnown = comparisons.every((c) => c.b && c.s);
  const natsOk = natsKnown ? comparisons.every((c) => c.b!.perSecond >= c.s!.perSecond) : undefined;
  const natsText = natsKnown
    ? comparisons.map((c) => `${c.n}: ${num(c.b!.perSecond)} vs ${num(c.s!.perSecond)}`).join(
      ", ",
    )
    : "NATS unavailable";
  const idle = broker?.idleBrokerPercent;
  out.push(
    "Targets (issue 2):",
    "",
    `- ${verdict(at256 === undefined ? undefined : at256 >= 25_000)} >= 25,000 brokered req/s ` +
      `at 256 in flight: ${num(at256 ?? NaN)} req/s`,
    `- ${verdict(natsOk)} not slower than NATS in the same run (brokered vs NATS req/s, per ` +
      `in-flight level): ${natsText}`,
    `- ${verdict(unloaded === undefined ? undefined : unloaded < 0.5)} unloaded p50 < 0.5 ms ` +
      `(brokered, 1 in flight): ${num(unloaded ?? NaN, 3)} ms`,
    `- ${verdict(idle === undefined || Number.isNaN(idle) ? undefined : idle < 2)} broker idle ` +
      `CPU < 2% of a core: ${num(idle ?? NaN, 2)}%`,
  );
  const report = out.join("\n");
  console.log(report);
  // Only a full run (all systems, default settings) replaces the recorded section.
  const full = SYSTEMS.has("broker") && SYSTEMS.has("zmq") && SYSTEMS.has("nats") &&
    !Deno.env.get("BENCH_WORKER_CONCURRENCY") && !Deno.env.get("BENCH_MEASURE_MS");
  if (!NO_WRITE && full) {
    await writeBenchmarksSection(
      SECTION,
      [
        SECTION,
        "",
        "Command: `deno task bench:broker` (bench/broker.ts). " +
        `Date: ${started.toISOString().slice(0, 10)}. Machine: ${machine()}.`,
        "",
        report,
        "",
      ].join("\n"),
    );
  }
}

const watchdog = setTimeout(() => {
  console.error(`bench: still running after ${WATCHDOG_MS / 1000} s, giving up`);
  killAll();
  Deno.exit(2);
}, WATCHDOG_MS);
Deno.unrefTimer(watchdog);
const onSignal = () => {
  killAll();
  Deno.exit(130);
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

let exitCode = 0;
try {
  await main();
} catch (error) {
  console.error("bench failed:", error);
  exitCode = 1;
} finally {
  killAll();
  clearTimeout(watchdog);
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
}
// Everything is closed; exit explicitly so a lingering native handle cannot keep us alive.
Deno.exit(exitCode);
