/**
 * Test fixtures for the shared state: a {@link RedisLink} on the machine's
 * Redis under a random key prefix (its keys deleted afterwards), and a
 * private redis-server child process that a test can kill and restart.
 *
 * @module
 */
import { Redis } from "ioredis";
import { freePort, waitFor } from "./_helpers.ts";
import { RedisLink, type RedisLinkOptions } from "../gateway/shared/redis.ts";

/** The machine's Redis (the CI starts it). */
export const TEST_REDIS_URL = Deno.env.get("PLANTD_TEST_REDIS_URL") ?? "redis://127.0.0.1:6379";

/** A fresh key prefix, so tests sharing one Redis never see each other's keys. */
export function randomPrefix(): string {
  return `plantd-test:${crypto.randomUUID().slice(0, 12)}:`;
}

/** Deletes every key under `prefix`. */
export async function deleteKeys(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  redis.on("error", () => {});
  try {
    await redis.connect();
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== "0");
  } finally {
    redis.disconnect(false);
  }
}

/** Runs `body` with a connected link under a random prefix; cleans up whatever happens. */
export async function withLink(
  body: (link: RedisLink) => Promise<void>,
  options: Partial<RedisLinkOptions> = {},
): Promise<void> {
  const prefix = options.keyPrefix ?? randomPrefix();
  const link = new RedisLink({ url: TEST_REDIS_URL, ...options, keyPrefix: prefix });
  try {
    await waitFor(() => link.up, { what: "Redis link up", timeoutMs: 10_000 });
    await body(link);
  } finally {
    await link.close();
    await deleteKeys(TEST_REDIS_URL, prefix);
  }
}

/**
 * A redis-server child process on a random port. Without persistence by
 * default; `persistent` keeps an append-only file (fsync always) in a temp
 * directory, so a killed and restarted server has its keys back.
 */
export class RedisServer {
  readonly port: number;
  readonly persistent: boolean;
  #child: Deno.ChildProcess | undefined;
  #dir: string | undefined;

  constructor(options: { port?: number; persistent?: boolean } = {}) {
    this.port = options.port ?? freePort();
    this.persistent = options.persistent ?? false;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Starts it and waits until it answers PING. */
  async start(): Promise<void> {
    if (this.#child) return;
    if (this.persistent) this.#dir ??= await Deno.makeTempDir({ prefix: "plantd-redis-" });
    const persistence = this.persistent
      ? ["--dir", this.#dir!, "--appendonly", "yes", "--appendfsync", "always"]
      : ["--appendonly", "no"];
    this.#child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        ...persistence,
        "--daemonize",
        "no",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const probe = new Redis(this.url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on("error", () => {});
    try {
      await waitFor(async () => {
        try {
          if (probe.status !== "ready") await probe.connect();
          return (await probe.ping()) === "PONG";
        } catch {
          return false;
        }
      }, { what: `redis-server on ${this.port}`, timeoutMs: 10_000, intervalMs: 50 });
    } finally {
      probe.disconnect(false);
    }
  }

  /** Stops (SIGSTOP) or continues (SIGCONT) it: a server that hangs with its connections open. */
  signal(signal: "SIGSTOP" | "SIGCONT"): void {
    if (!this.#child) throw new Error("redis-server is not running");
    Deno.kill(this.#child.pid, signal);
  }

  /** Kills it (SIGKILL: an outage, not a shutdown) and waits for it to exit. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    try {
      Deno.kill(child.pid, "SIGCONT");
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
  }

  /** Kills it and removes its files. */
  async dispose(): Promise<void> {
    await this.stop();
    if (this.#dir) await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
    this.#dir = undefined;
  }
}
