/**
 * Benchmark child of bench/bus.ts: a bus, a publisher or a subscriber of one
 * of the systems compared (a plantd bus, direct PUB-SUB, Redis, NATS).
 *
 *   bus_peer.ts bus <capture:0|1>
 *   bus_peer.ts pub <system> <id> <subscribers> <payload bytes> <window> <target> <rate>
 *   bus_peer.ts sub <system> <id> <ack every> <target> <credit endpoints,…> [publisher endpoints,…]
 *
 * Flow control, the same for every system: each publisher binds a ZeroMQ PULL
 * "credit" socket; each subscriber tells every publisher, every `ack every`
 * messages, how many of its messages it has read. A publisher keeps at most
 * `window` messages beyond what its slowest subscriber has read, so nothing
 * overflows anywhere and every message is counted (lossless). A `window` of
 * 0 turns this off: publishers then publish at their rate whatever happens,
 * as real ones do, and what does not arrive is counted as lost.
 *
 * High-water marks: off (0) on every ZeroMQ socket unless BUS_PEER_HWM is
 * `default`, which leaves libzmq's and the bus's defaults (1,000).
 *
 * Payload: float64 send time (ms, timeOrigin-based, comparable across
 * processes), uint32 sequence, uint16 publisher id, uint8 probe flag, zeros.
 *
 * Protocol on stdin/stdout, one line each: the parent writes `probe`, `go
 * <ms>` (publishers) and `stop` (subscribers); children answer `CREDIT …`,
 * `READY …`, `DONE …`, `RESULT {json}`. EOF on stdin ends a child.
 *
 * @module
 */
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { Redis } from "ioredis";
import { Bus } from "../../bus/bus.ts";
import { Publisher } from "../../bus/publisher.ts";
import { Subscriber } from "../../bus/subscriber.ts";
import { ZMQ_PULL, ZMQ_PUSH } from "../../transport/libzmq.ts";
import { NativeSocket } from "../../transport/native_socket.ts";
import { cpuTicks, ticksPerSecond } from "../_stats.ts";

export const TOPIC = "org.plantd.Metric";
const REDIS = { host: "127.0.0.1", port: 6379 };
const NATS = "127.0.0.1:4222";
const SAMPLE_EVERY = 4;
const MAX_SAMPLES = 1 << 21;
/** Credit message kinds. */
const ACK = 1;
const PROBE_ACK = 2;

const [role, ...args] = Deno.args;
/** ZeroMQ sockets with high-water marks off (0), or at their defaults. */
const HWM = Deno.env.get("BUS_PEER_HWM") === "default" ? {} : undefined;
const hwm = (key: "sendHighWaterMark" | "receiveHighWaterMark") => HWM ?? { [key]: 0 };
const encoder = new TextEncoder();

function say(line: string): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

const TICKS = await ticksPerSecond();

/** CPU seconds (user + system, all threads) this process has used. */
function cpuSeconds(): number {
  return (cpuTicks("self") ?? 0) / TICKS;
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * One event-loop turn (a MessageChannel message, a few µs; a 0 ms timer
 * waits for the next ~1 ms tick). Lets a client library write what it has
 * buffered without a round trip to its server.
 */
const yieldTurn = (() => {
  let channel: MessageChannel | undefined;
  const waiting: Array<() => void> = [];
  const turn = (): Promise<void> => {
    if (!channel) {
      channel = new MessageChannel();
      channel.port1.onmessage = () => waiting.shift()?.();
    }
    const port = channel.port2;
    return new Promise((resolve) => {
      waiting.push(resolve);
      port.postMessage(0);
    });
  };
  turn.close = () => {
    channel?.port1.close();
    channel?.port2.close();
    channel = undefined;
  };
  return turn;
})();

/** Lines from the parent; resolves null at EOF. */
const lines = (() => {
  const reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  return async (): Promise<string | null> => {
    while (true) {
      const at = buffered.indexOf("\n");
      if (at >= 0) {
        const line = buffered.slice(0, at);
        buffered = buffered.slice(at + 1);
        return line;
      }
      const next = await reader.read();
      if (next.done) return null;
      buffered += next.value;
    }
  };
})();

async function expect(command: string): Promise<string> {
  const line = await lines();
  if (line === null) Deno.exit(0);
  if (!line.startsWith(command)) throw new Error(`expected '${command}', got '${line}'`);
  return line.slice(command.length).trim();
}

// ---------------------------------------------------------------------------
// Systems

interface PublishSide {
  /** Where subscribers connect, for direct PUB-SUB. */
  endpoint?: string;
  publish(payload: Uint8Array): void;
  /** Lets a client library write what it buffered (no round trip). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

interface SubscribeSide {
  /**
   * Calls `onMessage` for every message until closed, with its arrival time
   * (read per message, as the Redis and NATS clients' callbacks must).
   */
  start(onMessage: (payload: Uint8Array, at: number) => void): Promise<void>;
  close(): Promise<void>;
}

async function publishSide(system: string, frontend: string): Promise<PublishSide> {
  switch (system) {
    case "bus":
    case "bus+capture":
    case "direct": {
      const publisher = new Publisher(
        system === "direct" ? "@tcp://127.0.0.1:*" : frontend,
        hwm("sendHighWaterMark"),
      );
      return {
        endpoint: publisher.endpoint,
        publish: (payload) => publisher.publish(TOPIC, payload),
        flush: () => Promise.resolve(),
        close: () => publisher.close(),
      };
    }
    case "redis": {
      const redis = new Redis({ ...REDIS, enableAutoPipelining: true, lazyConnect: true });
      await redis.connect();
      return {
        publish: (payload) => {
          redis.publish(TOPIC, Buffer.from(payload)).catch(() => {});
        },
        flush: yieldTurn,
        close: async () => {
          await redis.quit();
        },
      };
    }
    case "nats": {
      const nc: NatsConnection = await natsConnect({ servers: NATS });
      return {
        publish: (payload) => nc.publish(TOPIC, payload),
        flush: yieldTurn,
        close: async () => {
          await nc.flush();
          await nc.close();
        },
      };
    }
    default:
      throw new Error(`unknown system ${system}`);
  }
}

async function subscribeSide(
  system: string,
  backend: string,
  publishers: string[],
): Promise<SubscribeSide> {
  switch (system) {
    case "bus":
    case "bus+capture":
    case "direct": {
      const subscriber = new Subscriber(system === "direct" ? publishers[0]! : backend, {
        bus: system,
        topics: [TOPIC],
        ...hwm("receiveHighWaterMark"),
      });
      // Direct: one SUB connected to every publisher.
      if (system === "direct") {
        for (const endpoint of publishers.slice(1)) subscriber.connect(endpoint);
      }
      let loop: Promise<void> | undefined;
      return {
        start: (onMessage) => {
          loop = (async () => {
            try {
              while (true) {
                const batch = await subscriber.receiveBatch(4096);
                for (let i = 0; i < batch.length; i++) onMessage(batch[i]!.payload, now());
              }
            } catch {
              // closed
            }
          })();
          return Promise.resolve();
        },
        close: async () => {
          await subscriber.close();
          await loop;
        },
      };
    }
    case "redis": {
      const redis = new Redis({ ...REDIS, lazyConnect: true });
      await redis.connect();
      return {
        start: async (onMessage) => {
          redis.on(
            "messageBuffer",
            (_channel: Buffer, message: Buffer) => onMessage(message, now()),
          );
          await redis.subscribe(TOPIC);
        },
        close: async () => {
          redis.disconnect();
          await Promise.resolve();
        },
      };
    }
    case "nats": {
      const nc = await natsConnect({ servers: NATS });
      return {
        start: async (onMessage) => {
          nc.subscribe(TOPIC, { callback: (_error, message) => onMessage(message.data, now()) });
          await nc.flush();
        },
        close: () => nc.close(),
      };
    }
    default:
      throw new Error(`unknown system ${system}`);
  }
}

// ---------------------------------------------------------------------------
// Roles

async function runBus(capture: boolean): Promise<void> {
  const bus = Bus.start({
    name: "bench",
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
    ...hwm("sendHighWaterMark"),
    ...hwm("receiveHighWaterMark"),
    ...(capture ? { capture: "inproc://bench-capture" } : {}),
  });
  say(`READY ${bus.frontend} ${bus.backend}`);
  let mark = cpuSeconds();
  for (let line = await lines(); line !== null; line = await lines()) {
    if (line === "mark") mark = cpuSeconds();
    else if (line === "report") say(`CPU ${cpuSeconds() - mark}`);
  }
  const snapshot = await bus.snapshot();
  await bus.close();
  // stderr: the parent has stopped reading stdout by now.
  console.error(
    `[bus] frames in ${snapshot.statistics.frontend.framesIn}, out ${snapshot.statistics.backend.framesOut}` +
      (snapshot.capture
        ? `, capture read ${snapshot.capture.totals.frames}, missed ${snapshot.capture.missedFrames}`
        : ""),
  );
}

async function runPublisher(
  system: string,
  id: number,
  subscribers: number,
  payloadBytes: number,
  window: number,
  frontend: string,
  /** Messages per second; 0 publishes as fast as the window allows. */
  rate: number,
): Promise<void> {
  const credit = new NativeSocket(ZMQ_PULL, { receiveHighWaterMark: 0 });
  const creditEndpoint = credit.bind("tcp://127.0.0.1:*", "bench publisher");
  const side = await publishSide(system, frontend);
  say(`CREDIT ${creditEndpoint} ${side.endpoint ?? "-"}`);

  const acked = new Float64Array(subscribers);
  const probed = new Uint8Array(subscribers);
  const readCredits = (): void => {
    for (let frames = credit.tryReceive(); frames; frames = credit.tryReceive()) {
      const v = new Uint32Array(frames[0]!.slice().buffer);
      if (v[0] === PROBE_ACK) probed[v[1]!] = 1;
      else if (v[0] === ACK) acked[v[1]!] = Math.max(acked[v[1]!]!, v[2]!);
    }
  };
  const slowest = (): number => {
    let min = Infinity;
    for (const a of acked) if (a < min) min = a;
    return min;
  };
  const payload = new Uint8Array(payloadBytes);
  const view = new DataView(payload.buffer);
  view.setUint16(12, id, true);

  // Probe until every subscriber has seen this publisher: nothing is lost to
  // ZeroMQ's slow-joiner window once the measurement starts.
  await expect("probe");
  payload[14] = 1;
  const probeDeadline = Date.now() + 20_000;
  while (probed.some((p) => p === 0)) {
    if (Date.now() > probeDeadline) throw new Error(`publisher ${id}: subscribers not reached`);
    view.setFloat64(0, now(), true);
    side.publish(payload);
    await side.flush();
    await new Promise((resolve) => setTimeout(resolve, 5));
    readCredits();
  }
  payload[14] = 0;
  say("READY");

  const durationMs = Number(await expect("go"));
  const cpuAtStart = cpuSeconds();
  const startedAt = performance.now();
  const stopAt = startedAt + durationMs;
  let sent = 0;
  /** Without a window, nothing waits for credit. */
  const flow = window > 0;
  while (performance.now() < stopAt) {
    let room = flow ? window - (sent - slowest()) : Infinity;
    if (rate > 0) {
      // Paced: publish what is due by now, then sleep until the next timer tick.
      const due = Math.floor(((performance.now() - startedAt) / 1000) * rate) - sent;
      if (due <= 0) {
        readCredits();
        await side.flush();
        await new Promise((resolve) => setTimeout(resolve, 1));
        continue;
      }
      room = Math.min(room, due);
    }
    if (flow && room <= 0) {
      readCredits();
      room = window - (sent - slowest());
      if (room <= 0) {
        await side.flush();
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          credit.waitReadable(),
          new Promise((resolve) => timer = setTimeout(resolve, 50)),
        ]);
        clearTimeout(timer);
        continue;
      }
    }
    const batch = Math.min(room, 1024);
    for (let i = 0; i < batch; i++) {
      view.setFloat64(0, now(), true);
      view.setUint32(8, sent, true);
      side.publish(payload);
      sent++;
    }
    readCredits();
    if (system === "redis" || system === "nats") await side.flush();
  }
  await side.flush();
  const cpu = cpuSeconds() - cpuAtStart;
  // Drain: wait until every subscriber has read everything (bounded), or,
  // when messages were lost, until their counts stop moving.
  const drainDeadline = Date.now() + 10_000;
  let progressAt = Date.now();
  let last = slowest();
  while (slowest() < sent && Date.now() < drainDeadline && Date.now() - progressAt < 1000) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      credit.waitReadable(),
      new Promise((resolve) => timer = setTimeout(resolve, 50)),
    ]);
    clearTimeout(timer);
    readCredits();
    if (slowest() !== last) {
      last = slowest();
      progressAt = Date.now();
    }
  }
  say(`DONE ${sent} ${slowest()} ${cpu}`);
  await lines(); // EOF
  await side.close();
  credit.close();
  yieldTurn.close();
}

async function runSubscriber(
  system: string,
  id: number,
  ackEvery: number,
  backend: string,
  credits: string[],
  publishers: string[],
  warmupMs: number,
  measureMs: number,
): Promise<void> {
  const pushes = credits.map((endpoint) => {
    const push = new NativeSocket(ZMQ_PUSH, { sendHighWaterMark: 0 });
    push.connect(endpoint);
    return push;
  });
  const message = new Uint32Array(3);
  message[1] = id;
  const tell = (publisher: number, kind: number, count: number) => {
    message[0] = kind;
    message[2] = count;
    pushes[publisher]!.trySend([new Uint8Array(message.buffer.slice(0))]);
  };
  const counts = new Float64Array(credits.length);
  const probed = new Uint8Array(credits.length);
  const samples = new Float64Array(MAX_SAMPLES);
  let sampled = 0;
  let received = 0;
  let first = 0;
  let windowStart = 0;
  let windowEnd = 0;
  let inWindow = 0;
  let nth = 0;
  /** Negative while the window is open (minus the CPU seconds at its start). */
  let cpuInWindow = 0;
  const time = new Float64Array(1);
  const timeBytes = new Uint8Array(time.buffer);
  const side = await subscribeSide(system, backend, publishers);
  await side.start((payload, at) => {
    const publisher = payload[12]! | (payload[13]! << 8);
    if (payload[14] === 1) {
      if (!probed[publisher]) {
        probed[publisher] = 1;
        tell(publisher, PROBE_ACK, 0);
      }
      return;
    }
    if (received === 0) {
      first = at;
      windowStart = first + warmupMs;
      windowEnd = windowStart + measureMs;
    }
    received++;
    if (at >= windowStart && at < windowEnd) {
      if (inWindow === 0) cpuInWindow = -cpuSeconds();
      inWindow++;
      if (++nth === SAMPLE_EVERY) {
        nth = 0;
        if (sampled < MAX_SAMPLES) {
          for (let i = 0; i < 8; i++) timeBytes[i] = payload[i]!;
          samples[sampled++] = at - time[0]!;
        }
      }
    } else if (at >= windowEnd && cpuInWindow < 0) cpuInWindow += cpuSeconds();
    const count = ++counts[publisher]!;
    if (count % ackEvery === 0) tell(publisher, ACK, count);
  });
  say("READY");
  await expect("stop");
  if (cpuInWindow < 0) cpuInWindow += cpuSeconds();
  // Final acks so publishers' drain ends at once (they were already waiting).
  const sorted = samples.subarray(0, sampled).sort();
  const at = (q: number) =>
    sampled === 0 ? NaN : sorted[Math.min(sampled - 1, Math.ceil(q * sampled) - 1)]!;
  say(`RESULT ${
    JSON.stringify({
      received,
      inWindow,
      windowSeconds: measureMs / 1000,
      perPublisher: [...counts],
      p50Ms: at(0.5),
      p99Ms: at(0.99),
      cpuSeconds: cpuInWindow,
    })
  }`);
  await lines();
  await side.close();
  for (const push of pushes) push.close();
}

// ---------------------------------------------------------------------------

try {
  switch (role) {
    case "bus":
      await runBus(args[0] === "1");
      break;
    case "pub": {
      const [system, id, subscribers, payloadBytes, window, frontend, rate] = args;
      await runPublisher(
        system!,
        Number(id),
        Number(subscribers),
        Number(payloadBytes),
        Number(window),
        frontend!,
        Number(rate ?? "0"),
      );
      break;
    }
    case "sub": {
      const [system, id, ackEvery, backend, credits, publishers, warmupMs, measureMs] = args;
      await runSubscriber(
        system!,
        Number(id),
        Number(ackEvery),
        backend!,
        credits!.split(","),
        publishers === "-" ? [] : publishers!.split(","),
        Number(warmupMs),
        Number(measureMs),
      );
      break;
    }
    default:
      throw new Error(`unknown role ${role}`);
  }
} catch (error) {
  console.error(`[${role}] ${error instanceof Error ? error.stack : error}`);
  Deno.exit(1);
}
Deno.exit(0);
