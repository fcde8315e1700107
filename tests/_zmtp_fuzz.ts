/**
 * A property-based fuzzer (fast-check) of the ZMTP codec and handshake:
 * sessions of random and mutated greetings, commands (READY, ERROR, PING,
 * PONG, unknown, malformed) and frame headers (flags of every bit, sizes up
 * to 2^64 - 1), split at random points into TCP writes, sent to the broker's
 * ZmtpRouter and, playing a ROUTER, to a ZmtpDealer.
 *
 * Properties, checked after every session:
 * - nothing escapes a connection: no unhandled rejection or uncaught error;
 * - no buffer beyond the configured maximum message size is allocated (every
 *   `new Uint8Array(n)` / `new ArrayBuffer(n)` is recorded while it runs);
 * - the connection is released (the broker's end of it is closed);
 * - the broker, with a real worker and client, answers a request; the DEALER
 *   still talks to a well-behaved ROUTER.
 *
 * Used by tests/zmtp_fuzz_test.ts (fixed seed, bounded) and by
 * `deno task fuzz:zmtp` (tests/zmtp_fuzz_task.ts: seed and runs from env).
 */
import fc from "fast-check";
import { BrokerServer } from "../broker/server.ts";
import { MdpClient } from "../mdp/client.ts";
import { text } from "../mdp/protocol.ts";
import { command, greeting, readyCommand } from "../transport/zmtp/codec.ts";
import { ZmtpDealer } from "../transport/zmtp/dealer.ts";
import { ECHO_SERVICE, startEchoWorker } from "../workers/echo.ts";
import { waitFor } from "./_helpers.ts";
import { Collector, rawConnect, tcpSocketHeld, untilClosed, writeAll } from "./_zmtp.ts";

/** The maximum message size of the sockets under test: small, so any allocation of a declared size shows. */
export const FUZZ_MAX_MESSAGE_BYTES = 4096;
/**
 * The largest buffer a connection may allocate: its 64 KiB read slab with
 * room for one frame within the limit, write buffers of a few PONGs and
 * ERRORs. Any declared size the fuzzer sends above 1 MiB would show.
 */
export const ALLOCATION_CEILING = 1 << 20;

const enc = new TextEncoder();

/** The settings of one fuzz run. */
export interface FuzzRun {
  seed: number;
  runs: number;
  /** Printed progress (the task), or nothing (the test). */
  log?: (line: string) => void;
}

// ---------------------------------------------------------------- generators

const SOCKET_TYPES = ["DEALER", "ROUTER", "REQ", "REP", "PUB", "SUB", "PAIR", "", "dealer"];
const MECHANISMS = ["NULL", "PLAIN", "CURVE", "GSSAPI", "", "NULLX"];
const COMMAND_NAMES = ["READY", "ERROR", "PING", "PONG", "HELLO", "SUBSCRIBE", "CANCEL", "X"];
/** Sizes at the edges of the header formats and of the limit, up to 2^64 - 1. */
const EDGE_SIZES = [
  0n,
  1n,
  255n,
  256n,
  4095n,
  4096n,
  4097n,
  65_536n,
  (1n << 31n) - 1n,
  1n << 31n,
  1n << 32n,
  (1n << 53n) + 1n,
  1n << 62n,
  (1n << 63n) - 1n,
  1n << 63n,
  (1n << 64n) - 1n,
];

const bytesArb = (maxLength: number) => fc.uint8Array({ maxLength });

/** A frame header with any flags and any size, and a body that may not match it. */
const frameArb = fc.record({
  flags: fc.oneof(fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 7), fc.integer({ min: 0, max: 255 })),
  size: fc.oneof(
    fc.bigInt({ min: 0n, max: 300n }),
    fc.constantFrom(...EDGE_SIZES),
    fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  ),
  body: fc.oneof(fc.constant("exact" as const), bytesArb(64)),
  bodySeed: fc.integer({ min: 0, max: 255 }),
}).map(({ flags, size, body, bodySeed }) => {
  const long = (flags & 2) !== 0;
  const header = long ? new Uint8Array(9) : new Uint8Array(2);
  header[0] = flags;
  if (long) new DataView(header.buffer).setBigUint64(1, size);
  else header[1] = Number(size & 0xffn);
  const declared = long ? size : size & 0xffn;
  const payload = body === "exact" && declared <= 300n
    ? new Uint8Array(Number(declared)).fill(bodySeed)
    : body === "exact"
    ? new Uint8Array(0)
    : body;
  return concat([header, payload]);
});

/** READY metadata: real and made-up names, values of any length (a 300-byte Identity too). */
const propertiesArb = fc.array(
  fc.tuple(
    fc.oneof(
      fc.constantFrom("Socket-Type", "Identity", "socket-type", "X-Extra"),
      fc.string({ minLength: 1, maxLength: 20 }),
    ),
    fc.oneof(
      fc.constantFrom(...SOCKET_TYPES).map((s) => enc.encode(s)),
      bytesArb(300),
    ),
  ),
  { maxLength: 4 },
).map((pairs) => Object.fromEntries(pairs.map(([k, v]) => [k, v])));

/** A command: well-formed with random bodies, or broken (lying lengths). */
const commandArb = fc.oneof(
  propertiesArb.map((p) => readyCommand(p)),
  fc.tuple(fc.constantFrom(...COMMAND_NAMES), bytesArb(40)).map(([n, b]) => command(n, b)),
  // PING: TTL and a context of any length (the spec allows 16 bytes).
  fc.tuple(fc.integer({ min: 0, max: 0xffff }), bytesArb(40)).map(([ttl, context]) =>
    command("PING", concat([Uint8Array.of(ttl >> 8, ttl & 0xff), context]))
  ),
  // ERROR whose reason length lies.
  fc.tuple(fc.integer({ min: 0, max: 255 }), bytesArb(20)).map(([n, b]) =>
    command("ERROR", concat([Uint8Array.of(n), b]))
  ),
  // A command frame whose name length is 0 or runs past the body.
  fc.tuple(fc.integer({ min: 0, max: 255 }), bytesArb(20)).map(([n, b]) => {
    const body = concat([Uint8Array.of(n), b]);
    return concat([Uint8Array.of(4, body.length), body]);
  }),
);

/** A greeting: ours, ours mutated at a few bytes, with another version or mechanism, cut, or noise. */
const greetingArb = fc.oneof(
  { weight: 5, arbitrary: fc.constant(greeting()) },
  {
    weight: 3,
    arbitrary: fc.array(
      fc.tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 0, max: 255 })),
      {
        minLength: 1,
        maxLength: 4,
      },
    ).map((changes) => {
      const g = greeting();
      for (const [at, value] of changes) g[at] = value;
      return g;
    }),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(
      fc.integer({ min: 0, max: 5 }),
      fc.integer({ min: 0, max: 3 }),
      fc.constantFrom(...MECHANISMS),
      fc.boolean(),
    ).map(([major, minor, mechanism, asServer]) => {
      const g = greeting();
      g[10] = major;
      g[11] = minor;
      g.fill(0, 12, 32);
      g.set(enc.encode(mechanism), 12);
      g[32] = asServer ? 1 : 0;
      return g;
    }),
  },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 63 }).map((n) => greeting().subarray(0, n)) },
  { weight: 1, arbitrary: bytesArb(80) },
);

/** What follows the greeting: usually a fitting READY first (to reach the frame parser), then anything. */
const sessionArb = (socketType: string) =>
  fc.record({
    greeting: greetingArb,
    ready: fc.oneof(
      {
        weight: 4,
        arbitrary: fc.constant(readyCommand({ "Socket-Type": enc.encode(socketType) })),
      },
      { weight: 1, arbitrary: commandArb },
      { weight: 1, arbitrary: fc.constant(new Uint8Array(0)) },
    ),
    items: fc.array(
      fc.oneof(
        { weight: 3, arbitrary: frameArb },
        { weight: 2, arbitrary: commandArb },
        { weight: 1, arbitrary: bytesArb(32) },
      ),
      { maxLength: 12 },
    ),
    cuts: fc.array(fc.integer({ min: 0, max: 1 << 16 }), { maxLength: 6 }),
    // How the fuzzer leaves: FIN (it read everything) or, closing with unread input, RST.
    ending: fc.constantFrom("fin" as const, "reset" as const),
  }).map(({ greeting, ready, items, cuts, ending }) => {
    const bytes = concat([greeting, ready, ...items]);
    const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
    const writes: Uint8Array[] = [];
    let from = 0;
    for (const point of [...points, bytes.length]) {
      if (point > from) writes.push(bytes.subarray(from, point));
      from = point;
    }
    return { bytes, writes, ending };
  });

export type Session = { bytes: Uint8Array; writes: Uint8Array[]; ending: "fin" | "reset" };

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

// ------------------------------------------------------------------ watchers

/**
 * Records what must never happen while a session runs: errors escaping a
 * connection, and allocations beyond {@link ALLOCATION_CEILING}.
 */
export class Watch {
  escaped: string[] = [];
  largest = 0;
  #restore: (() => void) | undefined;

  start(): void {
    const onRejection = (event: PromiseRejectionEvent) => {
      event.preventDefault();
      this.escaped.push(`unhandled rejection: ${describeError(event.reason)}`);
    };
    const onError = (event: ErrorEvent) => {
      event.preventDefault();
      this.escaped.push(`uncaught error: ${describeError(event.error)}`);
    };
    globalThis.addEventListener("unhandledrejection", onRejection);
    globalThis.addEventListener("error", onError);
    const originalU8 = globalThis.Uint8Array;
    const originalAB = globalThis.ArrayBuffer;
    // Sizes requested by number: the buffers the parser makes for what a header declares.
    const record = (args: unknown[]) => {
      if (typeof args[0] === "number" && args[0] > this.largest) this.largest = args[0];
    };
    globalThis.Uint8Array = new Proxy(originalU8, {
      construct(target, args, newTarget) {
        record(args);
        return Reflect.construct(target, args, newTarget);
      },
    });
    globalThis.ArrayBuffer = new Proxy(originalAB, {
      construct(target, args, newTarget) {
        record(args);
        return Reflect.construct(target, args, newTarget);
      },
    });
    this.#restore = () => {
      globalThis.Uint8Array = originalU8;
      globalThis.ArrayBuffer = originalAB;
      globalThis.removeEventListener("unhandledrejection", onRejection);
      globalThis.removeEventListener("error", onError);
    };
  }

  stop(): void {
    this.#restore?.();
    this.#restore = undefined;
  }

  /** Why the last session broke a property, or undefined. */
  violation(): string | undefined {
    if (this.escaped.length > 0) return this.escaped.join("; ");
    if (this.largest > ALLOCATION_CEILING) {
      return `allocated ${this.largest} bytes (the ceiling is ${ALLOCATION_CEILING})`;
    }
    return undefined;
  }

  reset(): void {
    this.escaped = [];
    this.largest = 0;
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/**
 * Ends a session as it says: a FIN, after which the peer must close its end
 * too (within 3 s), or a close with unread input (a reset).
 */
async function endSession(conn: Deno.TcpConn, session: Session): Promise<void> {
  if (session.ending === "fin") {
    try {
      await conn.closeWrite();
    } catch {
      // Reset by the peer already.
    }
    await untilClosed(conn, 3000);
  }
  conn.close();
}

/** Writes a session's pieces, a macrotask apart (so they arrive as separate reads); stops once refused. */
async function writeSession(conn: Deno.Conn, session: Session): Promise<void> {
  try {
    for (const piece of session.writes) {
      await writeAll(conn, piece);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  } catch {
    // The peer closed on us (a refusal): what it had read is what counts.
  }
}

// -------------------------------------------------------------------- runs

/**
 * Fuzzes the broker's ZmtpRouter; throws (with fast-check's report: seed,
 * path and the shrunk session) when a property fails.
 */
export async function fuzzBroker(run: FuzzRun): Promise<void> {
  const server = await BrokerServer.start({
    endpoint: "tcp://127.0.0.1:*",
    maxMessageBytes: FUZZ_MAX_MESSAGE_BYTES,
  });
  if (server.transport !== "zmtp") throw new Error("the broker is not on the ZMTP transport");
  const worker = startEchoWorker(server.endpoint);
  const client = new MdpClient(server.endpoint, { timeoutMs: 5000 });
  const watch = new Watch();
  try {
    const first = await client.request(ECHO_SERVICE, ["echo", "ready"]);
    if (first.map(text).join() !== "ready") throw new Error("the broker does not echo");
    const serverPort = Number(server.endpoint.split(":").pop());
    let done = 0;
    watch.start();
    await fc.assert(
      fc.asyncProperty(sessionArb("DEALER"), async (session) => {
        watch.reset();
        const conn = await rawConnect(server.endpoint);
        const clientPort = (conn.localAddr as Deno.NetAddr).port;
        await writeSession(conn, session);
        await endSession(conn, session);
        await waitFor(() => !tcpSocketHeld(serverPort, clientPort), {
          timeoutMs: 3000,
          what: "the broker to release the connection",
        });
        const reply = await client.request(ECHO_SERVICE, ["echo", String(done)]);
        if (reply.map(text).join() !== String(done)) throw new Error("a wrong echo");
        const violation = watch.violation();
        if (violation) throw new Error(violation);
        if (++done % 500 === 0) run.log?.(`broker: ${done} sessions`);
      }),
      {
        seed: run.seed,
        numRuns: run.runs,
        timeout: 5000,
        endOnFailure: Deno.env.get("ZMTP_FUZZ_NOSHRINK") === "1",
      },
    );
  } finally {
    watch.stop();
    await client.close();
    await worker.close();
    await server.close();
  }
}

/**
 * Fuzzes a ZmtpDealer from the listening side (the fuzzer plays the ROUTER
 * it connects to); afterwards the DEALER must still talk to a real one.
 */
export async function fuzzDealer(run: FuzzRun): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dealer = new ZmtpDealer({
    routingId: "fuzzed",
    maxMessageSize: FUZZ_MAX_MESSAGE_BYTES,
    reconnectMs: 1,
  });
  const inbox = new Collector(dealer);
  const watch = new Watch();
  try {
    dealer.connect(`tcp://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`);
    let done = 0;
    let next = listener.accept();
    watch.start();
    await fc.assert(
      fc.asyncProperty(sessionArb("ROUTER"), async (session) => {
        watch.reset();
        const conn = await next;
        await writeSession(conn, session);
        await endSession(conn, session);
        // The DEALER dials again only once it has closed this connection: done with it.
        next = listener.accept();
        await next;
        const violation = watch.violation();
        if (violation) throw new Error(violation);
        if (++done % 500 === 0) run.log?.(`dealer: ${done} sessions`);
      }),
      {
        seed: run.seed,
        numRuns: run.runs,
        timeout: 5000,
        endOnFailure: Deno.env.get("ZMTP_FUZZ_NOSHRINK") === "1",
      },
    );
    watch.stop();
    // A well-behaved ROUTER now: the DEALER's next connection works.
    const conn = await next;
    try {
      await writeAll(conn, greeting());
      await writeAll(conn, readyCommand({ "Socket-Type": enc.encode("ROUTER") }));
      await writeAll(conn, Uint8Array.of(0, 5, ...enc.encode("hello")));
      // Messages of earlier sessions that were well-formed come first.
      while (new TextDecoder().decode((await inbox.next())[0]) !== "hello") {
        // skip
      }
    } finally {
      conn.close();
    }
  } finally {
    watch.stop();
    dealer.close();
    listener.close();
    await inbox.done;
  }
}
