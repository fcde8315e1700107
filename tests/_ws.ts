// deno-lint-ignore-file no-explicit-any -- the tests read JSON messages of many shapes
/**
 * The tests' WebSocket client for the gateway's /ws: queues what it
 * receives, waits for messages by shape, and closes cleanly.
 */
import { waitFor } from "./_helpers.ts";

/** A WebSocket client that queues what it receives. */
export class WsClient {
  readonly socket: WebSocket;
  /** Messages not taken by next() yet. */
  readonly received: Array<Record<string, any>> = [];
  /** Every message received, taken or not. */
  readonly all: Array<Record<string, any>> = [];
  /** Frames received (an array frame of batched messages counts once). */
  frames = 0;
  /** Array frames received (subscriptions with `batch_ms`). */
  arrayFrames = 0;
  /** The messages that came inside an array frame. */
  readonly batched = new WeakSet<object>();
  /** The welcome message, once open() has seen it. */
  welcome: Record<string, any> | undefined;
  closed: { code: number; reason: string } | undefined;
  /** Resolves with the close event. */
  readonly whenClosed: Promise<CloseEvent>;
  #opened: Promise<void>;

  /** Connects to `url` (the gateway's http(s) URL); `headers` go with the upgrade. */
  constructor(url: string, headers?: Record<string, string>) {
    this.socket = new WebSocket(url.replace(/^http/, "ws") + "/ws", headers ? { headers } : {});
    this.socket.onmessage = (e) => {
      const data = JSON.parse(e.data);
      this.frames++;
      // A batched subscription's frame may be an array of messages.
      if (Array.isArray(data)) this.arrayFrames++;
      for (const message of Array.isArray(data) ? data : [data]) {
        if (Array.isArray(data)) this.batched.add(message);
        this.received.push(message);
        this.all.push(message);
      }
    };
    this.whenClosed = new Promise((resolve) => {
      this.socket.addEventListener("close", (e) => {
        this.closed = { code: e.code, reason: e.reason };
        resolve(e);
      });
    });
    this.#opened = new Promise((resolve, reject) => {
      this.socket.onopen = () => resolve();
      this.socket.onerror = () => reject(new Error("WebSocket failed to open"));
    });
  }

  /** Waits for the connection and its welcome. */
  async open(): Promise<this> {
    await this.#opened;
    this.welcome = await this.next((m) => m.type === "welcome", "welcome");
    return this;
  }

  send(message: Record<string, unknown>): void {
    this.socket.send(JSON.stringify(message));
  }

  /** Waits for (and removes) the first message matching `match`. */
  async next(
    match: (m: Record<string, any>) => boolean,
    what = "message",
    timeoutMs = 15_000,
  ): Promise<Record<string, any>> {
    let found: Record<string, any> | undefined;
    await waitFor(() => {
      const i = this.received.findIndex(match);
      if (i >= 0) found = this.received.splice(i, 1)[0];
      if (found === undefined && this.closed) {
        throw new Error(`socket closed (${this.closed.code}) before a ${what}`);
      }
      return found !== undefined;
    }, { timeoutMs, what });
    return found!;
  }

  /** The next message of `type` (and `id`, when given). */
  nextOf(type: string, id?: string): Promise<Record<string, any>> {
    return this.next(
      (m) => m.type === type && (id === undefined || m.id === id),
      `'${type}'${id ? ` for ${id}` : ""}`,
    );
  }

  async close(): Promise<void> {
    if (this.socket.readyState === WebSocket.CLOSED) return;
    this.socket.close();
    await this.whenClosed;
  }
}

/** Connects and waits for the welcome. */
export function openWs(url: string, headers?: Record<string, string>): Promise<WsClient> {
  return new WsClient(url, headers).open();
}
