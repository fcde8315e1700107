/**
 * Liveness, routing ids and strictness of the TypeScript ZMTP sockets
 * (docs/transport.md), against raw TCP peers and libzmq through pyzmq:
 * PINGs at the interval, a silent or stopped peer closed within the timeout
 * and its leftovers released, a peer's PING TTL honoured, TCP keepalive,
 * closePeer, duplicate routing ids without a reconnect storm, handover, and
 * protocol violations refused at once.
 */
import assert from "node:assert/strict";
import type { Frames } from "../transport/frames.ts";
import {
  command,
  greeting,
  GREETING_BYTES,
  parseCommand,
  readFrameHead,
  readyCommand,
  writeHeader,
} from "../transport/zmtp/codec.ts";
import { ZmtpDealer } from "../transport/zmtp/dealer.ts";
import { parseTcpEndpoint } from "../transport/zmtp/endpoint.ts";
import { ZmtpRouter, type ZmtpRouterOptions } from "../transport/zmtp/router.ts";
import { Peer, sleep, waitFor, withBroker } from "./_helpers.ts";
import { brokerConfig, echoConfig } from "../config/components.ts";
import { ConfigError, loadConfig } from "../config/load.ts";
import { wireHeartbeat } from "../roles/wire_heartbeat.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

interface End {
  refused: boolean;
  reason: string;
  at: number;
}

/** A ROUTER that records how its connections end. */
function router(options: ZmtpRouterOptions = {}): { router: ZmtpRouter; ends: End[] } {
  const ends: End[] = [];
  const socket = ZmtpRouter.bind("tcp://127.0.0.1:0", "test", {
    ...options,
    onConnectionEnd: (end) => ends.push({ ...end, at: performance.now() }),
  });
  return { router: socket, ends };
}

async function writeAll(conn: Deno.TcpConn, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) {
    written += await conn.write(bytes.subarray(written));
  }
}

/** A frame (header included) with `flags` as given, for breaking the rules on purpose. */
function rawFrame(flags: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + body.length);
  writeHeader(out, 0, body.length, false);
  out[0] = flags;
  out.set(body, 2);
  return out;
}

/** Reads a peer's commands and messages off a raw connection, as they arrive. */
class RawPeer {
  readonly conn: Deno.TcpConn;
  readonly commands: { name: string; body: Uint8Array; at: number }[] = [];
  /** Resolves at EOF or a read error, with when it happened. */
  readonly ended: Promise<number>;
  #buffer = new Uint8Array(0);
  #greeted = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.ended = this.#read();
  }

  static async connect(router: { endpoint: string }, identity?: Uint8Array): Promise<RawPeer> {
    const peer = await RawPeer.open(router);
    await writeAll(peer.conn, greeting());
    const properties: Record<string, Uint8Array> = { "Socket-Type": enc.encode("DEALER") };
    if (identity) properties["Identity"] = identity;
    await writeAll(peer.conn, readyCommand(properties));
    return peer;
  }

  /** A TCP connection and nothing sent yet. */
  static async open(router: { endpoint: string }): Promise<RawPeer> {
    return new RawPeer(await Deno.connect(parseTcpEndpoint(router.endpoint)!));
  }

  async #read(): Promise<number> {
    const chunk = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.conn.read(chunk);
        if (n === null) break;
        const joined = new Uint8Array(this.#buffer.length + n);
        joined.set(this.#buffer);
        joined.set(chunk.subarray(0, n), this.#buffer.length);
        this.#buffer = joined;
        this.#parse();
      }
    } catch {
      // Reset by the other side: ended all the same.
    }
    return performance.now();
  }

  #parse(): void {
    let at = 0;
    if (!this.#greeted) {
      if (this.#buffer.length < GREETING_BYTES) return;
      this.#greeted = true;
      at = GREETING_BYTES;
    }
    while (true) {
      const head = readFrameHead(this.#buffer, at, this.#buffer.length);
      if (!head || head.start + head.size > this.#buffer.length) break;
      if (head.command) {
        const parsed = parseCommand(this.#buffer.slice(head.start, head.start + head.size))!;
        this.commands.push({ ...parsed, at: performance.now() });
      }
      at = head.start + head.size;
    }
    this.#buffer = this.#buffer.slice(at);
  }

  named(name: string): { name: string; body: Uint8Array; at: number }[] {
    return this.commands.filter((c) => c.name === name);
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Closed by the other side.
    }
  }
}

/** When `ended` settles, or undefined after `ms` (a test fails rather than hangs). */
function within(ended: Promise<number>, ms: number): Promise<number | undefined> {
  return Promise.race([ended, sleep(ms).then(() => undefined)]);
}

/** Runs a Python script; each line it prints is handed over; stdin closing ends it. */
class Python {
  readonly child: Deno.ChildProcess;
  readonly lines: string[] = [];
  readonly done: Promise<void>;

  constructor(script: string, ...args: string[]) {
    const child = this.child = new Deno.Command("/usr/bin/python3", {
      args: ["-c", script, ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.done = (async () => {
      let rest = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        const parts = rest.split("\n");
        rest = parts.pop()!;
        this.lines.push(...parts);
      }
    })();
  }

  async line(index: number, timeoutMs = 10_000): Promise<string> {
    await waitFor(() => this.lines.length > index, { timeoutMs, what: `python line ${index}` });
    return this.lines[index]!;
  }

  async write(text: string): Promise<void> {
    const writer = this.child.stdin.getWriter();
    await writer.write(enc.encode(text));
    writer.releaseLock();
  }

  async stop(): Promise<void> {
    try {
      this.child.kill("SIGCONT");
      await this.child.stdin.close();
    } catch {
      // Already gone.
    }
    // A script stuck on a failed step must not hang the test.
    const ended = await Promise.race([
      this.child.status.then(() => true),
      sleep(3000).then(() => false),
    ]);
    if (!ended) this.child.kill("SIGKILL");
    await this.done;
    await this.child.status;
  }
}

Deno.test("ZMTP liveness: PINGs go out at the interval with our TTL in deciseconds and a context", async () => {
  const { router: socket } = router({
    heartbeatIvlMs: 150,
    heartbeatTimeoutMs: 5000,
    heartbeatTtlMs: 1500,
  });
  const peer = await RawPeer.connect(socket);
  try {
    await waitFor(() => peer.named("PING").length >= 3, { what: "three PINGs" });
    const pings = peer.named("PING");
    for (const ping of pings) {
      assert.equal((ping.body[0]! << 8) | ping.body[1]!, 15, "TTL 1500 ms is 15 deciseconds");
      assert.ok(ping.body.length > 2 && ping.body.length <= 18, "a context of 1 to 16 bytes");
    }
    assert.notDeepEqual(pings[0]!.body, pings[1]!.body, "each PING has its own context");
    const gap = pings[2]!.at - pings[1]!.at;
    assert.ok(gap >= 100 && gap < 600, `PINGs ${gap.toFixed(0)} ms apart, 150 asked`);
  } finally {
    peer.close();
    socket.close();
    await socket.drain(() => {});
  }
});

Deno.test("ZMTP liveness: a peer that handshakes then goes silent is closed within the timeout; what it sent before is still delivered", async () => {
  const { router: socket, ends } = router({ heartbeatIvlMs: 100, heartbeatTimeoutMs: 500 });
  const peer = await RawPeer.connect(socket, enc.encode("quiet"));
  try {
    await waitFor(() => socket.peers === 1, { what: "the handshake" });
    // A message nobody drains yet: like libzmq, what arrived before the close is still read.
    await writeAll(peer.conn, Uint8Array.from([0, 5, ...enc.encode("hello")]));
    const start = performance.now();
    // The peer answers nothing from here on (no PONG, no message).
    const ended = await within(peer.ended, 3000);
    assert.ok(ended !== undefined, "closed within 3 s");
    assert.equal(socket.peers, 0);
    assert.equal(ends.length, 1);
    assert.match(ends[0]!.reason, /heartbeat timeout 500 ms/);
    const waited = ended - start;
    assert.ok(waited >= 400 && waited < 1200, `closed after ${waited.toFixed(0)} ms, timeout 500`);
    assert.ok(peer.named("PING").length >= 2, "it was pinged first");
    const got: Frames[] = [];
    const drained = socket.drain((frames) => got.push(frames));
    await waitFor(() => got.length === 1, { what: "the message sent before the silence" });
    assert.deepEqual(got[0]!.map((f) => new TextDecoder().decode(f)), ["quiet", "hello"]);
    assert.equal(socket.trySend([enc.encode("quiet"), enc.encode("x")]), true);
    assert.equal(socket.unroutable, 1, "nothing routes to it any more");
    socket.close();
    await drained;
  } finally {
    peer.close();
    socket.close();
  }
});

Deno.test("ZMTP liveness: a libzmq DEALER stopped with SIGSTOP is closed within the timeout", async () => {
  const { router: socket, ends } = router({ heartbeatIvlMs: 100, heartbeatTimeoutMs: 600 });
  const got: string[] = [];
  const drained = socket.drain((frames) => got.push(dec.decode(frames[1])));
  const python = new Python(
    `
import sys, zmq
d = zmq.Context().socket(zmq.DEALER)
d.connect(sys.argv[1])
d.send(b"up")
print("sent", flush=True)
sys.stdin.read()
`,
    socket.endpoint,
  );
  try {
    await python.line(0);
    await waitFor(() => got.length === 1, { what: "the peer's message" });
    Deno.kill(python.child.pid, "SIGSTOP");
    const stopped = performance.now();
    await waitFor(() => ends.length === 1, { timeoutMs: 3000, what: "the close" });
    const waited = ends[0]!.at - stopped;
    assert.match(ends[0]!.reason, /heartbeat timeout/);
    assert.ok(waited < 1500, `closed ${waited.toFixed(0)} ms after SIGSTOP, timeout 600`);
    assert.equal(socket.peers, 0);
  } finally {
    await python.stop();
    socket.close();
    await drained;
  }
});

Deno.test("ZMTP liveness: a peer's PING TTL is honoured (TTL 1 s, then silence: closed at about 1 s)", async () => {
  // No heartbeats of our own: only the peer's TTL can close it.
  const { router: socket, ends } = router();
  const peer = await RawPeer.connect(socket);
  try {
    await waitFor(() => socket.peers === 1, { what: "the handshake" });
    await writeAll(peer.conn, command("PING", Uint8Array.from([0, 10, 7])));
    const pinged = performance.now();
    await waitFor(() => peer.named("PONG").length === 1, { what: "the PONG" });
    assert.deepEqual([...peer.named("PONG")[0]!.body], [7], "PONG carries the context");
    const ended = await within(peer.ended, 3000);
    assert.ok(ended !== undefined, "closed before 3 s");
    const waited = ended - pinged;
    assert.ok(waited >= 900 && waited < 1600, `closed ${waited.toFixed(0)} ms after the PING`);
    assert.match(ends[0]!.reason, /TTL 1000 ms/);
  } finally {
    peer.close();
    socket.close();
    await socket.drain(() => {});
  }
});

Deno.test("ZMTP liveness: every connection has TCP keepalive on (ss shows the keepalive timer)", async () => {
  const { router: socket } = router();
  const dealer = new ZmtpDealer();
  try {
    dealer.connect(socket.endpoint);
    await waitFor(() => dealer.connected && socket.peers === 1, { what: "the handshake" });
    const port = parseTcpEndpoint(socket.endpoint)!.port;
    const { stdout } = await new Deno.Command("ss", {
      args: ["-tnoH", "state", "established", `( sport = :${port} or dport = :${port} )`],
    }).output();
    const lines = dec.decode(stdout).trim().split("\n").filter((line) => line.length > 0);
    assert.equal(lines.length, 2, `both ends listed:\n${lines.join("\n")}`);
    for (const line of lines) assert.match(line, /timer:\(keepalive,/, line);
  } finally {
    dealer.close();
    socket.close();
    await socket.drain(() => {});
  }
});

Deno.test("ZMTP ROUTER closePeer closes that peer only", async () => {
  const { router: socket } = router();
  const got: string[] = [];
  const drained = socket.drain((frames) =>
    got.push(`${dec.decode(frames[0])}:${dec.decode(frames[1])}`)
  );
  const a = await RawPeer.connect(socket, enc.encode("a"));
  const b = await RawPeer.connect(socket, enc.encode("b"));
  try {
    await waitFor(() => socket.peers === 2, { what: "two peers" });
    assert.equal(socket.closePeer(enc.encode("a")), true);
    assert.ok(await within(a.ended, 3000), "a's connection closed");
    assert.equal(socket.peers, 1);
    assert.equal(socket.closePeer(enc.encode("a")), false, "no such peer any more");
    await writeAll(b.conn, Uint8Array.from([0, 2, ...enc.encode("hi")]));
    await waitFor(() => got.length === 1, { what: "b's message" });
    assert.deepEqual(got, ["b:hi"]);
  } finally {
    a.close();
    b.close();
    socket.close();
    await drained;
  }
});

/**
 * Two libzmq DEALERs with one ZMQ_ROUTING_ID connect to `endpoint`; prints
 * how often the second connected and disconnected over 1.5 s, then (after a
 * line on stdin) closes the first and sends from the second.
 */
const DUPLICATE_SCRIPT = `
import sys, time, zmq
from zmq.utils.monitor import recv_monitor_message
ctx = zmq.Context()
def dealer():
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.ROUTING_ID, b"dup")
    d.setsockopt(zmq.LINGER, 0)
    return d
def count(endpoint):
    a = dealer(); a.connect(endpoint); a.send(b"from a")
    time.sleep(0.2)
    b = dealer(); mon = b.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    b.connect(endpoint); b.send(b"from b")
    connected = disconnected = 0
    end = time.time() + 1.5
    while time.time() < end:
        if mon.poll(50):
            event = recv_monitor_message(mon)["event"]
            if event == zmq.EVENT_CONNECTED: connected += 1
            else: disconnected += 1
    return a, b, connected, disconnected
ref = ctx.socket(zmq.ROUTER); port = ref.bind_to_random_port("tcp://127.0.0.1")
_, _, c, d = count("tcp://127.0.0.1:%d" % port)
print("libzmq", c, d, flush=True)
a, b, c, d = count(sys.argv[1])
print("ours", c, d, flush=True)
sys.stdin.readline()
a.close()
time.sleep(0.2)
b.send(b"b again")
print("sent", flush=True)
sys.stdin.read()
`;

Deno.test("ZMTP ROUTER: a duplicate routing id causes no reconnect storm (as libzmq), and gets the name once free", async () => {
  const { router: socket, ends } = router();
  const got: string[] = [];
  const drained = socket.drain((frames) =>
    got.push(`${dec.decode(frames[0])}:${dec.decode(frames[1])}`)
  );
  const python = new Python(DUPLICATE_SCRIPT, socket.endpoint);
  try {
    const reference = (await python.line(0)).split(" ");
    const ours = (await python.line(1)).split(" ");
    assert.deepEqual(reference, ["libzmq", "1", "0"], "libzmq: one connect, no disconnect");
    assert.deepEqual(ours.slice(1), reference.slice(1), "the same here");
    assert.deepEqual(ends, [], "no connection ended");
    assert.deepEqual(got, ["dup:from a"], "the second peer's message is not delivered");
    assert.equal(socket.duplicateDropped, 1);
    // The holder leaves: the waiting connection takes the name with its next message.
    await python.write("go\n");
    await python.line(2);
    await waitFor(() => got.length === 2, { what: "b's message once the name is free" });
    assert.equal(got[1], "dup:b again");
    assert.equal(socket.peers, 1);
  } finally {
    await python.stop();
    socket.close();
    await drained;
  }
});

Deno.test("ZMTP ROUTER handover: a new peer with a routing id in use takes it, the old connection is detached (as libzmq)", async () => {
  const { router: socket, ends } = router({ handover: true });
  const got: string[] = [];
  const drained = socket.drain((frames) => got.push(dec.decode(frames[1])));
  const old = new ZmtpDealer({ routingId: "worker-1", reconnectMs: 60_000 });
  const restarted = new ZmtpDealer({ routingId: "worker-1", reconnectMs: 60_000 });
  const toRestarted: string[] = [];
  const restartedDrained = restarted.drain((frames) => toRestarted.push(dec.decode(frames[0])));
  try {
    old.connect(socket.endpoint);
    await old.send([enc.encode("old")]);
    await waitFor(() => got.length === 1, { what: "the old peer's message" });
    restarted.connect(socket.endpoint);
    await restarted.send([enc.encode("new")]);
    await waitFor(() => got.length === 2, { what: "the takeover" });
    assert.deepEqual(got, ["old", "new"]);
    assert.equal(socket.peers, 1);
    assert.equal(socket.trySend([enc.encode("worker-1"), enc.encode("reply")]), true);
    await waitFor(() => toRestarted.length === 1, { what: "the reply at the new connection" });
    // The old connection stays open (libzmq: no disconnect, so a live duplicate does not
    // reconnect and take the name back), and what it sends is dropped.
    await old.send([enc.encode("stale")]);
    await waitFor(() => socket.duplicateDropped === 1, { what: "the old peer's message dropped" });
    assert.equal(old.connected, true);
    assert.deepEqual(ends, []);
    assert.deepEqual(got, ["old", "new"]);
  } finally {
    old.close();
    restarted.close();
    socket.close();
    await Promise.all([drained, restartedDrained]);
  }
});

/** Sends `bytes` on a fresh connection; returns the reason the ROUTER gave and how long it took. */
async function refusal(
  bytes: Uint8Array[],
): Promise<{ error: string; ms: number; reason: string }> {
  const { router: socket, ends } = router();
  const peer = await RawPeer.open(socket);
  try {
    const start = performance.now();
    for (const part of bytes) await writeAll(peer.conn, part);
    const ended = await within(peer.ended, 3000);
    assert.ok(ended !== undefined, "closed within 3 s (not at the 10 s handshake timeout)");
    const error = peer.named("ERROR")[0];
    assert.ok(error, "an ERROR command came first");
    await waitFor(() => ends.length === 1, { what: "the end reported" });
    assert.equal(ends[0]!.refused, true);
    return {
      error: dec.decode(error.body.subarray(1, 1 + error.body[0]!)),
      ms: ended - start,
      reason: ends[0]!.reason,
    };
  } finally {
    peer.close();
    socket.close();
    await socket.drain(() => {});
  }
}

const ready = (properties: Record<string, Uint8Array>) =>
  readyCommand({ "Socket-Type": enc.encode("DEALER"), ...properties });

Deno.test("ZMTP strictness: as-server set with NULL is refused at once", async () => {
  const bytes = greeting();
  bytes[32] = 1;
  const result = await refusal([bytes]);
  assert.equal(result.error, "as-server set with the NULL mechanism");
  assert.ok(result.ms < 1000, `${result.ms} ms`);
});

Deno.test("ZMTP strictness: reserved frame flag bits are refused at once", async () => {
  const result = await refusal([greeting(), ready({}), rawFrame(0x08, enc.encode("x"))]);
  assert.equal(result.error, "reserved frame flag bits set");
  assert.ok(result.ms < 1000, `${result.ms} ms`);
});

Deno.test("ZMTP strictness: an Identity over 255 bytes or starting with a zero byte is refused at once", async () => {
  const long = await refusal([greeting(), ready({ Identity: new Uint8Array(300).fill(65) })]);
  assert.equal(long.error, "Identity longer than 255 bytes");
  const zero = await refusal([greeting(), ready({ Identity: Uint8Array.from([0, 1, 2]) })]);
  assert.equal(zero.error, "Identity starting with a zero byte");
  assert.ok(long.ms < 1000 && zero.ms < 1000, `${long.ms} and ${zero.ms} ms`);
});

Deno.test("ZMTP strictness: HELLO (or a PING) where READY is expected is refused at once", async () => {
  const hello = await refusal([greeting(), command("HELLO", new Uint8Array(0))]);
  assert.equal(hello.error, "HELLO where READY was expected");
  assert.ok(hello.ms < 1000, `${hello.ms} ms`);
  const ping = await refusal([greeting(), command("PING", Uint8Array.from([0, 0]))]);
  assert.equal(ping.error, "PING where READY was expected");
});

Deno.test("the broker's ROUTER, ZMTP or libzmq, pings its peers when configured", async () => {
  for (const transport of ["auto", "libzmq"] as const) {
    await withBroker({
      transport,
      wireHeartbeat: { heartbeatIvlMs: 100, heartbeatTimeoutMs: 5000, heartbeatTtlMs: 3000 },
      handover: true,
    }, async (server) => {
      const peer = await RawPeer.connect(server);
      try {
        await waitFor(() => peer.named("PING").length >= 2, { what: `PINGs from ${transport}` });
        const ping = peer.named("PING")[0]!;
        assert.equal((ping.body[0]! << 8) | ping.body[1]!, 30, `${transport}: TTL in deciseconds`);
      } finally {
        peer.close();
      }
    });
  }
});

Deno.test("config: ZMTP heartbeats on by default (5 s, timeout 15 s, TTL 15 s), handover off; bad values name the key", () => {
  const broker = loadConfig(brokerConfig, { args: [], env: {} });
  assert.deepEqual(wireHeartbeat(broker), {
    heartbeatIvlMs: 5000,
    heartbeatTimeoutMs: 15_000,
    heartbeatTtlMs: 15_000,
  });
  assert.equal(broker.router_handover, false, "off, as libzmq (docs/transport.md)");
  const off = loadConfig(echoConfig, {
    args: [],
    env: { PLANTD_MODULE_ECHO_ZMTP_HEARTBEAT_IVL_MS: "0" },
  });
  assert.equal(wireHeartbeat(off).heartbeatIvlMs, undefined, "0 turns PINGs off");
  const same = loadConfig(echoConfig, {
    args: [],
    env: { PLANTD_MODULE_ECHO_ZMTP_HEARTBEAT_TIMEOUT_MS: "0" },
  });
  assert.equal(
    wireHeartbeat(same).heartbeatTimeoutMs,
    5000,
    "timeout 0: the interval, on libzmq too",
  );
  assert.throws(
    () =>
      loadConfig(brokerConfig, {
        args: [],
        env: { PLANTD_BROKER_ZMTP_HEARTBEAT_TTL_MS: "7000000" },
      }),
    (e) => e instanceof ConfigError && e.message.includes("zmtp_heartbeat_ttl_ms"),
  );
});

Deno.test("ZMTP liveness against libzmq with its heartbeats on: our PONGs keep libzmq's connection up, its TTL drops it once stopped", async () => {
  const python = new Python(`
import sys, zmq
from zmq.utils.monitor import recv_monitor_message
r = zmq.Context().socket(zmq.ROUTER)
r.setsockopt(zmq.HEARTBEAT_IVL, 100)
r.setsockopt(zmq.HEARTBEAT_TIMEOUT, 400)
r.setsockopt(zmq.HEARTBEAT_TTL, 500)
mon = r.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_ACCEPTED)
port = r.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
ident, body = r.recv_multipart()
r.send_multipart([ident, body])
# Quiet for 1.5 s (about four of its timeouts): only heartbeats flow.
events = []
while mon.poll(1500):
    events.append(recv_monitor_message(mon)["event"])
    if len(events) > 5: break
print("accepted", events.count(zmq.EVENT_ACCEPTED), "disconnected", events.count(zmq.EVENT_DISCONNECTED), flush=True)
sys.stdin.read()
`);
  // No heartbeats of ours: only our PONGs count as traffic for libzmq, only its TTL can close.
  const dealer = new ZmtpDealer({ reconnectMs: 60_000 });
  const replies: string[] = [];
  const drained = dealer.drain((frames) => replies.push(dec.decode(frames[0])));
  try {
    dealer.connect(`tcp://127.0.0.1:${await python.line(0)}`);
    await dealer.send([enc.encode("hello")]);
    await waitFor(() => replies.length === 1, { what: "the echo" });
    assert.equal(await python.line(1, 5000), "accepted 1 disconnected 0", "libzmq kept us");
    assert.equal(dealer.connected, true, "and we kept libzmq");
    Deno.kill(python.child.pid, "SIGSTOP");
    const stopped = performance.now();
    await waitFor(() => !dealer.connected, {
      timeoutMs: 3000,
      what: "the dealer dropping a stopped peer",
    });
    const waited = performance.now() - stopped;
    assert.ok(waited < 1200, `dropped ${waited.toFixed(0)} ms after SIGSTOP, TTL 500`);
  } finally {
    dealer.close();
    await python.stop();
    await drained;
  }
});

Deno.test("broker with router_handover: a worker restarted with its fixed identity takes over at once, without a DISCONNECT", async () => {
  let joined = 0;
  await withBroker({ handover: true }, async (server, track) => {
    const ready = ["", "MDPW02", "READY", "svc.handover"];
    const old = track(new Peer(server.endpoint, { routingId: "worker-1", name: "old" }));
    await old.send(ready);
    const workers = () =>
      server.broker.services().find((s) => s.name === "svc.handover")?.workers ?? 0;
    await waitFor(() => workers() === 1, { what: "old worker" });
    // Its successor connects with the same identity while the old connection is still open.
    const successor = track(new Peer(server.endpoint, { routingId: "worker-1", name: "new" }));
    await successor.send(ready);
    // The successor registered (its handshake took the name over): only then may a request
    // go out, or it could reach the predecessor before the takeover on a loaded machine.
    await waitFor(() => joined === 2, { what: "the successor's READY", timeoutMs: 20_000 });
    const client = track(new Peer(server.endpoint, { name: "client" }));
    await client.send(["", "MDPC02", "REQUEST", "svc.handover", "ping"]);
    const request = await successor.next({
      skip: (frames) => new TextDecoder().decode(frames[1]) === "HEARTBEAT",
    });
    assert.deepEqual(
      [request[0], request[1], request[4]].map((f) => new TextDecoder().decode(f)),
      ["MDPW02", "REQUEST", "ping"],
      "the request reached the successor, which was not told to DISCONNECT first",
    );
  }, { workerJoined: () => joined++ });
});
