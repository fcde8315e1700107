// The page's one WebSocket (docs/websocket.md).
import { setStatus } from "./lib.js";
import { refreshSession, showLogin } from "./session.js";

/**
 * One WebSocket for the page. It reconnects by itself with backoff and
 * re-sends every subscription it holds, so panels need not care.
 */
export class Live {
  #socket;
  #wanted = new Map(); // id -> subscribe/watch message
  #handlers = new Map(); // id -> (message) => void
  #offsets = new Map(); // id -> last offset received (buses with history)
  #backoff = 250;
  buses = [];
  onBuses = () => {};

  constructor() {
    this.#connect();
  }

  #connect() {
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    this.#socket = socket;
    socket.onopen = () => {
      this.#backoff = 250;
      setStatus("ws-status", "open", "WebSocket: live");
      // Resubscribe where each subscription stopped: the gateway replays what was missed.
      for (const [id, message] of this.#wanted) {
        const from = this.#offsets.get(id);
        socket.send(JSON.stringify(from ? { ...message, from } : message));
      }
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "welcome") {
        this.buses = message.buses;
        this.onBuses(message.buses);
        return;
      }
      if (message.type === "message" && message.offset) {
        this.#offsets.set(message.id, message.offset);
      }
      if (message.id) this.#handlers.get(message.id)?.(message);
    };
    socket.onclose = async (event) => {
      // 4001: the access token expired; a refreshed cookie lets the next socket in.
      if (event.code === 4001 && !(await refreshSession())) return showLogin();
      setStatus("ws-status", "closed", `WebSocket: reconnecting (${event.code})`);
      setTimeout(() => this.#connect(), this.#backoff);
      this.#backoff = Math.min(this.#backoff * 2, 5000);
    };
  }

  /** Subscribes (or watches) under `id`, replacing what `id` had. */
  hold(id, message, handler) {
    this.release(id);
    const full = { ...message, id };
    this.#wanted.set(id, full);
    this.#handlers.set(id, handler);
    if (this.#socket.readyState === WebSocket.OPEN) this.#socket.send(JSON.stringify(full));
  }

  release(id) {
    if (!this.#wanted.delete(id)) return;
    this.#handlers.delete(id);
    this.#offsets.delete(id);
    if (this.#socket.readyState === WebSocket.OPEN) {
      this.#socket.send(JSON.stringify({ type: "unsubscribe", id }));
    }
  }
}
