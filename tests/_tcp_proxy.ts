/**
 * A TCP forwarder a test can cut: a server "goes away" for whoever connects
 * through it (connections reset, new ones refused) and comes back on the same
 * port, while the real server keeps running for everyone else.
 *
 * @module
 */
import { freePort } from "./_helpers.ts";

/** A running forwarder from `port` on loopback to `target`. */
export class TcpProxy {
  readonly port: number;
  readonly #target: Deno.ConnectOptions;
  #listener: Deno.Listener | undefined;
  #pairs = new Set<[Deno.Conn, Deno.Conn]>();
  #accepting: Promise<void> | undefined;

  /** `listening`: false for a server that is away from the start (call {@link resume}). */
  constructor(target: Deno.ConnectOptions, port = freePort(), listening = true) {
    this.#target = target;
    this.port = port;
    if (listening) this.resume();
  }

  /** Whether it forwards now. */
  get up(): boolean {
    return this.#listener !== undefined;
  }

  /** Refuses new connections and cuts the open ones. */
  async pause(): Promise<void> {
    const listener = this.#listener;
    this.#listener = undefined;
    listener?.close();
    await this.#accepting;
    for (const [a, b] of this.#pairs) {
      for (const conn of [a, b]) {
        try {
          conn.close();
        } catch {
          // closed already
        }
      }
    }
    this.#pairs.clear();
  }

  /** Listens (again) on the same port. */
  resume(): void {
    if (this.#listener) return;
    const listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    this.#listener = listener;
    this.#accepting = this.#accept(listener);
  }

  async #accept(listener: Deno.Listener): Promise<void> {
    try {
      for await (const client of listener) {
        let server: Deno.Conn;
        try {
          server = await Deno.connect(this.#target);
        } catch {
          client.close();
          continue;
        }
        const pair: [Deno.Conn, Deno.Conn] = [client, server];
        this.#pairs.add(pair);
        const end = () => {
          if (!this.#pairs.delete(pair)) return;
          for (const conn of pair) {
            try {
              conn.close();
            } catch {
              // closed already
            }
          }
        };
        client.readable.pipeTo(server.writable, { preventClose: true }).catch(() => {}).finally(
          end,
        );
        server.readable.pipeTo(client.writable, { preventClose: true }).catch(() => {}).finally(
          end,
        );
      }
    } catch {
      // the listener was closed
    }
  }

  async close(): Promise<void> {
    await this.pause();
  }
}
