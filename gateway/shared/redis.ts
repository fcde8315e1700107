/**
 * The gateway's one connection to Redis, with an up/down state.
 *
 * Everything the gateway keeps in Redis (rate-limit counters, sessions, topic
 * history, the state read cache) goes through a {@link RedisLink} and has an
 * in-process fallback: {@link RedisLink.attempt} runs a command while Redis is
 * up and the fallback while it is down or when the command fails, so Redis
 * going away never throws into a caller. ioredis reconnects on its own
 * (backoff up to `retryMaxMs`); commands are not queued while it is away
 * (`enableOfflineQueue: false`) and time out after `commandTimeoutMs`. A
 * PING every `pingIntervalMs` finds a server that stopped answering without
 * closing the connection (a hung or paused process): the link then drops the
 * connection, so it is down until a new one is ready.
 *
 * Keys are built with {@link RedisLink.key}: every key of one deployment
 * starts with its `keyPrefix` (config `redis_key_prefix`, default `plantd:`),
 * so several deployments, or tests, can share one Redis.
 *
 * @module
 */
import { Redis } from "ioredis";

/** Options of {@link RedisLink}. */
export interface RedisLinkOptions {
  /** `redis://[user:password@]host:port[/db]` (or `rediss://`). */
  url: string;
  /** Prepended to every key. @default "plantd:" */
  keyPrefix?: string;
  /** A command not answered within this is failed (and the caller falls back). @default 1000 */
  commandTimeoutMs?: number;
  /** Longest wait between reconnection attempts. @default 2000 */
  retryMaxMs?: number;
  /** Connection name shown by CLIENT LIST. @default "plantd-gateway" */
  connectionName?: string;
  /** How often the link checks that Redis answers. @default 1000 */
  pingIntervalMs?: number;
}

/** What a {@link RedisLink} tells its watchers. */
export type LinkListener = (up: boolean) => void;

/** One Redis connection with an up/down state that callers fall back on. */
export class RedisLink {
  readonly url: string;
  readonly keyPrefix: string;
  #redis: Redis;
  #up = false;
  #closed = false;
  #lastError = "not connected yet";
  #listeners = new Set<LinkListener>();
  #blocking = new Set<Redis>();
  #options: Required<Omit<RedisLinkOptions, "url" | "keyPrefix">>;
  #pingTimer: ReturnType<typeof setInterval>;
  #pinging = false;

  constructor(options: RedisLinkOptions) {
    this.url = options.url;
    this.keyPrefix = options.keyPrefix ?? "plantd:";
    this.#options = {
      commandTimeoutMs: options.commandTimeoutMs ?? 1000,
      retryMaxMs: options.retryMaxMs ?? 2000,
      connectionName: options.connectionName ?? "plantd-gateway",
      pingIntervalMs: options.pingIntervalMs ?? 1000,
    };
    this.#redis = this.#connect(this.#options.connectionName, true);
    this.#redis.on("ready", () => this.#set(true));
    this.#redis.on("close", () => this.#set(false));
    this.#redis.on("end", () => this.#set(false));
    this.#redis.on("error", (error: Error) => {
      this.#lastError = error.message || String(error);
    });
    this.#redis.connect().catch(() => {
      // the first attempt failed: ioredis keeps retrying, the link stays down
    });
    this.#pingTimer = setInterval(() => void this.#ping(), this.#options.pingIntervalMs);
  }

  async #ping(): Promise<void> {
    if (!this.#up || this.#pinging) return;
    this.#pinging = true;
    try {
      await this.#redis.ping();
    } catch (error) {
      if (this.#closed || !this.#up) return;
      this.#lastError = `no answer to PING: ${(error as Error)?.message ?? error}`;
      this.#redis.disconnect(true); // down now; ioredis reconnects
    } finally {
      this.#pinging = false;
    }
  }

  #connect(name: string, lazy: boolean, timeout = true): Redis {
    return new Redis(this.url, {
      lazyConnect: lazy,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 2000,
      ...(timeout ? { commandTimeout: this.#options.commandTimeoutMs } : {}),
      connectionName: name,
      retryStrategy: (times: number) =>
        this.#closed ? null : Math.min(50 * 2 ** Math.min(times, 10), this.#options.retryMaxMs),
    });
  }

  #set(up: boolean): void {
    if (this.#closed) up = false;
    if (up === this.#up) return;
    this.#up = up;
    if (up) this.#lastError = "";
    else {
      this.#lastError ||= "connection closed";
      // A blocked XREAD on a server that hangs would wait forever: start over.
      for (const redis of this.#blocking) redis.disconnect(!this.#closed);
    }
    for (const listener of [...this.#listeners]) {
      try {
        listener(up);
      } catch {
        // a watcher's failure is its own
      }
    }
  }

  /** True while the connection is ready. */
  get up(): boolean {
    return this.#up;
  }

  /** Why the link is down (the last connection error), "" while up. */
  get lastError(): string {
    return this.#up ? "" : this.#lastError;
  }

  /** The ioredis client; check {@link up} first, or use {@link attempt}. */
  get redis(): Redis {
    return this.#redis;
  }

  /** A key of this deployment: the prefix then the parts joined with ":". */
  key(...parts: string[]): string {
    return this.keyPrefix + parts.join(":");
  }

  /** Calls `listener` on every change between up and down; returns the function that stops it. */
  watch(listener: LinkListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Runs `command` against Redis while the link is up, `fallback` while it is
   * down or when the command fails. Never throws because of Redis (a
   * fallback's own error is the caller's).
   */
  async attempt<T>(
    command: (redis: Redis) => Promise<T>,
    fallback: () => T | Promise<T>,
  ): Promise<T> {
    if (!this.#up) return await fallback();
    let value: T;
    try {
      value = await command(this.#redis);
    } catch (error) {
      this.#lastError = (error as Error)?.message ?? String(error);
      return await fallback();
    }
    return value;
  }

  /**
   * A second connection for blocking commands (XREAD BLOCK), which would
   * hold up everything else on the shared one. It has no command timeout;
   * it is closed with the link.
   */
  blockingConnection(name = `${this.#options.connectionName}-blocking`): Redis {
    const redis = this.#connect(name, false, false);
    redis.on("error", () => {}); // the main connection reports the state
    this.#blocking.add(redis);
    redis.on("end", () => this.#blocking.delete(redis));
    return redis;
  }

  /** Disconnects (no QUIT round trip: Redis may be gone). */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    clearInterval(this.#pingTimer);
    this.#set(false);
    this.#listeners.clear();
    for (const redis of this.#blocking) redis.disconnect(false);
    this.#blocking.clear();
    this.#redis.disconnect(false);
    return Promise.resolve();
  }
}
