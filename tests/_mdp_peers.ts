/**
 * Majordomo peers outside TypeScript, on Debian's python3-zmq: clients and
 * workers of every dialect (tests/peers/mdp_peer.py) and strict RFC 7 and
 * RFC 18 brokers (tests/peers/mdp_broker.py). Each prints one JSON object per
 * line; these helpers run them and collect what they print.
 *
 * python3-zmq is required: without it the tests using these fail, they do not skip.
 */
import assert from "node:assert/strict";
import type { Dialect } from "../mdp/protocol.ts";
import { waitFor } from "./_helpers.ts";

export const PYTHON = "/usr/bin/python3";
const PEER = new URL("./peers/mdp_peer.py", import.meta.url).pathname;
const BROKER = new URL("./peers/mdp_broker.py", import.meta.url).pathname;
export const DIALECTS: readonly Dialect[] = ["plantd", "mdp01", "mdp02"];
export const NAME: Record<Dialect, string> = {
  plantd: "plantd",
  mdp01: "RFC 7 (MDP/0.1)",
  mdp02: "RFC 18 (MDP/0.2)",
};

/** One JSON line a Python peer printed. */
export interface PeerEvent {
  event: string;
  [key: string]: unknown;
}

export function hex(bytes: Uint8Array | string): string {
  const b = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

let pythonChecked: Promise<void> | undefined;

/** Fails (never skips) when /usr/bin/python3 cannot import zmq. */
export function requirePythonZmq(): Promise<void> {
  pythonChecked ??= (async () => {
    let output: Deno.CommandOutput;
    try {
      output = await new Deno.Command(PYTHON, {
        args: ["-c", "import zmq; print(zmq.zmq_version())"],
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (error) {
      throw new Error(`${PYTHON} cannot be run (${error}); install python3 and python3-zmq`);
    }
    if (!output.success) {
      throw new Error(
        `${PYTHON} cannot import zmq: install it with 'apt-get update && apt-get install -y python3-zmq'\n` +
          new TextDecoder().decode(output.stderr),
      );
    }
  })();
  return pythonChecked;
}

/** What a Python client printed, and how it exited (0 reply, 3 timeout, 4 protocol error). */
export interface ClientRun {
  code: number;
  events: PeerEvent[];
  stderr: string;
}

/** Runs a Python client to completion, whatever its outcome. */
export async function runPythonClientRaw(
  endpoint: string,
  dialect: Dialect,
  service: string,
  body: string[],
  timeoutMs = 5000,
): Promise<ClientRun> {
  await requirePythonZmq();
  const abort = new AbortController();
  const guard = setTimeout(() => abort.abort(), timeoutMs + 15_000);
  try {
    const output = await new Deno.Command(PYTHON, {
      args: [
        PEER,
        "client",
        "--endpoint",
        endpoint,
        "--dialect",
        dialect,
        "--service",
        service,
        "--timeout-ms",
        String(timeoutMs),
        "--",
        ...body,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: abort.signal,
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const events = stdout.split("\n").filter((l) => l.trim() !== "").map((l) =>
      JSON.parse(l) as PeerEvent
    );
    return { code: output.code, events, stderr: new TextDecoder().decode(output.stderr) };
  } finally {
    clearTimeout(guard);
  }
}

/** Runs a Python client to completion and returns its events; it must have got its reply. */
export async function runPythonClient(
  endpoint: string,
  dialect: Dialect,
  service: string,
  body: string[],
): Promise<PeerEvent[]> {
  const run = await runPythonClientRaw(endpoint, dialect, service, body);
  assert.equal(
    run.code,
    0,
    `python ${dialect} client failed: ${JSON.stringify(run.events)}${run.stderr}`,
  );
  return run.events;
}

/** A long-running Python process printing JSON lines. */
class PythonProcess {
  readonly events: PeerEvent[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #stdout: Promise<void>;
  readonly #stderr: Promise<string>;
  #status: Deno.CommandStatus | undefined;

  protected constructor(args: string[]) {
    const child = new Deno.Command(PYTHON, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#stdout = (async () => {
      let pending = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        pending += chunk;
        let at: number;
        while ((at = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, at).trim();
          pending = pending.slice(at + 1);
          if (line) this.events.push(JSON.parse(line));
        }
      }
    })();
    this.#stderr = new Response(child.stderr).text();
    child.status.then((s) => this.#status ??= s);
  }

  /** Whether the process is still running. */
  get running(): boolean {
    return this.#status === undefined;
  }

  /** SIGKILL: the process dies without a word, its connections close; idempotent. */
  async kill(): Promise<void> {
    if (this.#status) return;
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // already gone
    }
    this.#status = await this.#child.status;
  }

  /** Stops the process (SIGTERM: it says goodbye) and waits for it; idempotent. */
  async stop(): Promise<{ status: Deno.CommandStatus; stderr: string }> {
    if (!this.#status) {
      try {
        this.#child.kill("SIGTERM");
      } catch {
        // already gone
      }
      const killer = setTimeout(() => {
        try {
          this.#child.kill("SIGKILL");
        } catch {
          // already gone
        }
      }, 5000);
      try {
        this.#status = await this.#child.status;
      } finally {
        clearTimeout(killer);
      }
    }
    await this.#stdout;
    return { status: this.#status, stderr: await this.#stderr };
  }

  close(): Promise<unknown> {
    return this.stop();
  }
}

/** A long-running Python worker (tests/peers/mdp_peer.py worker). */
export class PythonWorker extends PythonProcess {
  static async start(
    endpoint: string,
    dialect: Dialect,
    service: string,
    extra: string[] = [],
  ): Promise<PythonWorker> {
    await requirePythonZmq();
    return new PythonWorker([
      PEER,
      "worker",
      "--endpoint",
      endpoint,
      "--dialect",
      dialect,
      "--service",
      service,
      ...extra,
    ]);
  }

  /** Events that report a broken contract. */
  errors(): PeerEvent[] {
    return this.events.filter((e) => e.event === "error");
  }
}

/** Which strict broker: the RFC, and whether it answers mmi.* (RFC 8). */
export interface StrictBrokerKind {
  rfc: "7" | "18";
  mmi: boolean;
}

/** A strict RFC 7 or RFC 18 broker (tests/peers/mdp_broker.py). */
export class PythonBroker extends PythonProcess {
  endpoint = "";

  static async start(
    kind: StrictBrokerKind,
    extra: string[] = [],
  ): Promise<PythonBroker> {
    await requirePythonZmq();
    const broker = new PythonBroker([
      BROKER,
      "--rfc",
      kind.rfc,
      ...(kind.mmi ? ["--mmi"] : []),
      ...extra,
    ]);
    await waitFor(() => broker.events.some((e) => e.event === "listening") || !broker.running, {
      what: "the python broker to listen",
    });
    const listening = broker.events.find((e) => e.event === "listening");
    if (!listening) throw new Error(`python broker failed: ${(await broker.stop()).stderr}`);
    broker.endpoint = String(listening.endpoint);
    return broker;
  }

  /** Invalid messages it dropped (and their peers' later ones): what our peers must never send. */
  violations(): PeerEvent[] {
    return this.events.filter((e) => e.event === "invalid" || e.event === "ignored");
  }

  /** Workers registered for `service` (READY seen, not yet gone). */
  readyCount(service: string): number {
    return this.events.filter((e) => e.event === "ready" && e.service === service).length;
  }

  /** Stops it and checks it ran to a clean exit: nothing our peers sent harmed it. */
  async stopCleanly(): Promise<PeerEvent> {
    const { status, stderr } = await this.stop();
    assert.equal(status.code, 0, `the python broker exited with ${status.code}: ${stderr}`);
    assert.equal(stderr, "", "the python broker wrote nothing to stderr");
    const stopped = this.events.find((e) => e.event === "stopped");
    assert.ok(stopped, "the python broker reported its counts");
    return stopped;
  }
}
