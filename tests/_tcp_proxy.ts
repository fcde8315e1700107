/**
 * A TCP proxy in the test process in front of a shared server (PostgreSQL):
 * stopping it is the server going away for the clients behind it (open
 * connections reset, new ones refused) without stopping a server that other
 * tests use; starting it again on the same port is the server coming back.
 *
 * @module
 */
import { freePort } from "./_helpers.ts";

export class TcpProxy {
  readonly port: number;
  readonly #target: { hostname: string; port: number };
  #listener?: Deno.Listener;
  #accepting?: Promise<void>;
  readonly #conns = new Set<Deno.Conn>();

  constructor(target: { hostname: string; port: number }, port = freePort()) {
    this.#target = target;
    this.port = port;
  }

  get running(): boolean {
    return this.#listener !== undefined;
  }

  /** Listens (again) on its port. */
  start(): void {
    if (this.#listener) return;
    const listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    this.#listener = listener;
    this.#accepting = (async () => {
      try {
        for await (const conn of listener) void this.#serve(conn);
      } catch {
        // closed by stop()
      }
    })();
  }

  async #serve(client: Deno.Conn): Promise<void> {
    this.#conns.add(client);
    let server: Deno.Conn | undefined;
    try {
      server = await Deno.connect(this.#target);
      this.#conns.add(server);
      await Promise.allSettled([
        client.readable.pipeTo(server.writable),
        server.readable.pipeTo(client.writable),
      ]);
    } catch {
      // either side went away
    } finally {
      for (const conn of [client, server]) {
        if (!conn) continue;
        this.#conns.delete(conn);
        try {
          conn.close();
        } catch {
          // closed already
        }
      }
    }
  }

  /** Refuses new connections and resets the open ones. */
  async stop(): Promise<void> {
    const listener = this.#listener;
    if (!listener) return;
    this.#listener = undefined;
    listener.close();
    await this.#accepting;
    for (const conn of [...this.#conns]) {
      this.#conns.delete(conn);
      try {
        conn.close();
      } catch {
        // closed already
      }
    }
  }
}
