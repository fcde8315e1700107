/**
 * A libzmq peer in a Python process (Debian's python3-zmq), driven command by
 * command through tests/peers/zmtp_peer.py: the reference side of the ZMTP
 * conformance suite. Without python3-zmq the tests using it fail, they do
 * not skip.
 */
const PYTHON = "/usr/bin/python3";
const PEER = new URL("./peers/zmtp_peer.py", import.meta.url).pathname;

/** A frame to send: bytes, or `size` bytes of `fill` made on the Python side. */
export type FrameSpec = Uint8Array | { size: number; fill?: number };

/** A frame the peer received: its length and digest, and its bytes when small. */
export interface ReceivedFrame {
  len: number;
  sha256: string;
  hex?: string;
}

/** What a command answered. */
interface Reply {
  ok: boolean;
  error?: string;
  [key: string]: unknown;
}

/** One Python process holding (at most) one libzmq socket. */
export class PyZmq {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;
  #stderr: Promise<string>;
  #exited = false;
  readonly status: Promise<Deno.CommandStatus>;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#lines = lines(child.stdout)[Symbol.asyncIterator]();
    this.#stderr = new Response(child.stderr).text();
    this.status = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
  }

  /** Starts a peer with a socket of `type` (libzmq's name: "DEALER", "PUB", ...). */
  static async start(type: string, options: Record<string, unknown> = {}): Promise<PyZmq> {
    const child = new Deno.Command(PYTHON, {
      args: [PEER],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const peer = new PyZmq(child);
    await peer.call({ op: "socket", type, options });
    return peer;
  }

  /** Runs one command; throws with the peer's error (and stderr) when it fails. */
  async call(command: Record<string, unknown>): Promise<Reply> {
    const reply = await this.try(command);
    if (!reply.ok) throw new Error(`pyzmq ${command.op}: ${reply.error}`);
    return reply;
  }

  /** Runs one command; its failure is returned, not thrown. */
  async try(command: Record<string, unknown>): Promise<Reply> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(command) + "\n"));
    const next = await this.#lines.next();
    if (next.done) {
      throw new Error(`pyzmq peer exited during ${command.op}: ${await this.#stderr}`);
    }
    return JSON.parse(next.value) as Reply;
  }

  async bind(endpoint = "tcp://127.0.0.1:0"): Promise<string> {
    return (await this.call({ op: "bind", endpoint })).endpoint as string;
  }

  async connect(endpoint: string): Promise<void> {
    await this.call({ op: "connect", endpoint });
  }

  /** Sends a multipart message; false when the socket could not take it within `timeoutMs`. */
  async send(frames: readonly FrameSpec[], timeoutMs = 5000): Promise<boolean> {
    const reply = await this.try({
      op: "send",
      frames: frames.map((f) => f instanceof Uint8Array ? { hex: encodeHex(f) } : f),
      timeout_ms: timeoutMs,
    });
    if (!reply.ok && reply.error !== "timeout") throw new Error(`pyzmq send: ${reply.error}`);
    return reply.ok;
  }

  /** The next message, or undefined when none came within `timeoutMs`. */
  async receive(timeoutMs = 5000): Promise<ReceivedFrame[] | undefined> {
    const reply = await this.try({ op: "recv", timeout_ms: timeoutMs });
    if (!reply.ok) {
      if (reply.error === "timeout") return undefined;
      throw new Error(`pyzmq recv: ${reply.error}`);
    }
    return reply.frames as ReceivedFrame[];
  }

  /** The next message as text frames; throws when none came within `timeoutMs`. */
  async receiveText(timeoutMs = 5000): Promise<string[]> {
    const frames = await this.receive(timeoutMs);
    if (!frames) throw new Error(`pyzmq peer got no message within ${timeoutMs} ms`);
    return frames.map((f) => {
      if (f.hex === undefined) throw new Error(`a frame of ${f.len} bytes is not text here`);
      return new TextDecoder().decode(hexBytes(f.hex));
    });
  }

  /** Starts recording the socket's monitor events (libzmq's names without EVENT_). */
  async monitor(): Promise<void> {
    await this.call({ op: "monitor" });
  }

  async events(): Promise<string[]> {
    return (await this.call({ op: "events" })).events as string[];
  }

  /** Closes the socket and ends the process. */
  async close(): Promise<void> {
    if (this.#exited) return;
    try {
      await this.call({ op: "close" });
      await this.#writer.close();
    } catch {
      this.kill();
    }
    await this.status;
    await this.#stderr;
  }

  /** SIGKILLs the process: its connections die without a goodbye. */
  kill(): void {
    if (!this.#exited) this.#child.kill("SIGKILL");
  }

  /** Waits for the process to end after {@link kill}. */
  async exited(): Promise<void> {
    await this.status;
    await this.#stderr;
    await this.#writer.close().catch(() => {});
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    let at: number;
    while ((at = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, at).trim();
      pending = pending.slice(at + 1);
      if (line) yield line;
    }
  }
}

/** `bytes` as lower-case hex. */
export function encodeHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The bytes of a hex string. */
export function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The sha256 of `bytes`, hex, to compare with {@link ReceivedFrame.sha256}. */
export async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  return encodeHex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
}
