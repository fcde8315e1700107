/**
 * Topic history: the recent messages of each history bus, with an offset per
 * message, so a WebSocket client that reconnects with its last offset gets
 * exactly what it missed (docs/websocket.md, "Offsets and resuming").
 *
 * ## Without Redis (and while Redis is down): a ring per bus
 *
 * Each gateway keeps the last `maxMessages` messages of a bus younger than
 * `maxAgeMs` in a ring. Offsets are `<epoch>:<sequence>`: the epoch is random
 * per gateway run (and renewed whenever the ring stops being continuous), so
 * an offset from another gateway, an earlier run or before an outage is
 * never mistaken for one of this ring's. The ring knows exactly what it
 * dropped: a resume is exact or NOT_RECOVERABLE.
 *
 * ## With Redis: one stream per bus, one writer for all gateways
 *
 * Stream `<prefix>history:<bus>` holds the bus's messages; the offset is the
 * stream entry id (`1718000000000-0`), the same on every gateway. If every
 * gateway appended what it received, each message would be stored once per
 * gateway under different ids, so exactly one gateway writes: the holder of
 * the lock `<prefix>history:writer` (taken when free, with a `writerTtlMs`
 * expiry, refreshed every third of it). Its appends run in a Lua script that first
 * checks it still holds the lock, so two writers never append even while a
 * lock changes hands. Every gateway, the writer included, delivers live
 * messages by reading the streams back (XREAD BLOCK on a second connection),
 * so a message carries the same offset on every gateway and replay and live
 * delivery come from one ordered sequence: a resume reads the entries after
 * the offset (XRANGE), holds live entries meanwhile and drops those the
 * replay already covered.
 *
 * Each entry records the id of the entry before it (`r`): trimming (`MAXLEN`
 * by count, exact, and `MINID` by age, on each append) only removes the
 * oldest entries, so the messages after offset `o` are all still there if
 * and only if `o` is at or after the first entry, or the first entry's `r`
 * is `o`. Otherwise the resume is NOT_RECOVERABLE.
 *
 * A writer that starts writing (new lock holder, or after a failed append)
 * first appends a gap marker: messages published while nobody could write
 * are missing, and a replay across a marker, or a live reader passing one,
 * reports a gap rather than pretend continuity.
 *
 * Limits: a message published while no gateway holds the lock (up to
 * `writerTtlMs` after a writer dies) is lost for every gateway (and reported
 * as a gap); live delivery costs a round trip through Redis; the writer
 * receives every message of the history buses, whoever listens; messages the
 * writer's own bus subscription dropped (ZeroMQ high-water mark) are missing
 * without a marker, as they are for any bus subscriber. While Redis is
 * unreachable each gateway falls back to its ring and tells its listeners so
 * (a gap), and goes back to the streams, with another gap, when Redis returns.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { BusMessage } from "../../bus/envelope.ts";
import type { HistorySink, HubHistory, Replay } from "../bus_hub.ts";
import type { RedisLink } from "./redis.ts";
import {
  ACQUIRE_SCRIPT,
  APPEND_SCRIPT,
  REFRESH_SCRIPT,
  RELEASE_SCRIPT,
} from "./history_scripts.ts";
import { compareStreamIds, gap, REDIS_OFFSET, Ring, RING_OFFSET } from "./history_ring.ts";

/** Options of {@link TopicHistory}. */
export interface HistoryOptions {
  /** Buses to keep history for. */
  buses: Iterable<string>;
  /** Messages kept per bus. */
  maxMessages: number;
  /** Oldest message kept, in ms; 0: no age limit. */
  maxAgeMs: number;
  /** Shared history in Redis; without it, the in-process ring only. */
  link?: RedisLink;
  /** Expiry of the writer lock. @default 3000 */
  writerTtlMs?: number;
  /** Messages waiting for the writer's append before newer ones are dropped (and a gap recorded). @default 100000 */
  maxPending?: number;
  now?: () => number;
}
interface Pending {
  bus: number;
  kind: "f" | "s";
  topic: string;
  payload: Buffer;
}

interface StreamInfo {
  lastGenerated: string;
  first?: { id: string; previous?: string };
}

const encoder = new TextEncoder();
const MARKER_TEXT = "history interrupted: messages may be missing here";

/** Field list [k1, v1, k2, v2…] as a map of text keys. */
function fieldsOf(list: (Buffer | string)[]): Map<string, Buffer | string> {
  const fields = new Map<string, Buffer | string>();
  for (let i = 0; i + 1 < list.length; i += 2) fields.set(String(list[i]), list[i + 1]!);
  return fields;
}

/** The history of the hub's buses: in-process ring, or Redis streams while Redis is up. */
export class TopicHistory implements HubHistory {
  readonly buses: ReadonlySet<string>;
  #busList: string[];
  #rings = new Map<string, Ring>();
  #link: RedisLink | undefined;
  #sink: HistorySink | undefined;
  #options: Required<Omit<HistoryOptions, "link" | "buses">>;
  /** "stream": live messages come from Redis; "ring": from the bus, with ring offsets. */
  #mode: "ring" | "stream" = "ring";
  #closed = false;
  #abort = new AbortController();
  #reader: Promise<void> | undefined;
  #connection: { disconnect(reconnect?: boolean): void } | undefined;
  #lockTimer: ReturnType<typeof setInterval> | undefined;
  #ticking: Promise<void> | undefined;
  #owner = crypto.randomUUID();
  #writer = false;
  #needMarker = new Set<number>();
  #pending: Pending[] = [];
  #flushing: Promise<void> | undefined;
  /** Writes appended, gaps recorded, for tests and metrics. */
  readonly stats = { appended: 0, dropped: 0, markers: 0, writerTerms: 0 };

  constructor(options: HistoryOptions) {
    this.#busList = [...new Set(options.buses)];
    this.buses = new Set(this.#busList);
    this.#link = options.link;
    this.#options = {
      maxMessages: options.maxMessages,
      maxAgeMs: options.maxAgeMs,
      writerTtlMs: options.writerTtlMs ?? 3000,
      maxPending: options.maxPending ?? 100_000,
      now: options.now ?? Date.now,
    };
    for (const bus of this.#busList) {
      this.#rings.set(bus, new Ring(options.maxMessages, options.maxAgeMs, this.#options.now));
    }
  }

  /** Where live messages come from now. */
  get mode(): "ring" | "stream" {
    return this.#mode;
  }

  /** Whether this gateway is the one appending to the shared streams. */
  get writer(): boolean {
    return this.#writer;
  }

  attach(sink: HistorySink): void {
    this.#sink = sink;
    if (this.#link && !this.#reader) {
      this.#reader = this.#readLoop(this.#link);
      const every = Math.max(50, Math.floor(this.#options.writerTtlMs / 3));
      this.#lockTimer = setInterval(() => void this.#tick(), every);
    }
  }

  #streamKey(bus: string): string {
    return this.#link!.key("history", bus);
  }

  #lockKey(): string {
    return this.#link!.key("history", "writer");
  }

  received(bus: string, message: BusMessage): string | null {
    if (this.#mode === "ring") return this.#rings.get(bus)!.record(message);
    if (this.#writer) this.#enqueue(bus, message);
    return null;
  }

  replay(
    bus: string,
    from: string,
    matches: (message: BusMessage) => boolean,
  ): Replay | Promise<Replay> {
    if (this.#mode === "ring") return this.#rings.get(bus)!.replay(from, matches);
    if (!REDIS_OFFSET.test(from)) {
      return gap(
        RING_OFFSET.test(from)
          ? "Offset from a gateway's own history (kept while Redis was unavailable)"
          : "Not an offset of this history",
        from,
      );
    }
    return this.#replayStream(bus, from, matches);
  }

  compare(a: string, b: string): number | undefined {
    if (REDIS_OFFSET.test(a)) return compareStreamIds(a, b);
    const x = RING_OFFSET.exec(a);
    const y = RING_OFFSET.exec(b);
    if (!x || !y || x[1] !== y[1]) return undefined;
    return Math.sign(Number(x[2]) - Number(y[2]));
  }

  // --- Redis: reading -------------------------------------------------------

  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.#abort.signal.aborted) return resolve();
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#abort.signal.addEventListener("abort", done, { once: true });
    });
  }

  async #readLoop(link: RedisLink): Promise<void> {
    const connection = link.blockingConnection("plantd-gateway-history");
    this.#connection = connection;
    const keys = this.#busList.map((bus) => this.#streamKey(bus));
    try {
      while (!this.#closed) {
        if (!link.up || connection.status !== "ready") {
          await this.#pause(50);
          continue;
        }
        let ids: string[];
        try {
          ids = await Promise.all(keys.map(async (key) => {
            const [top] = await link.redis.xrevrange(key, "+", "-", "COUNT", 1);
            return top ? top[0] : "0-0";
          }));
        } catch {
          await this.#pause(50);
          continue;
        }
        if (this.#closed) break;
        this.#enter("stream", "history is shared through Redis from here");
        try {
          while (!this.#closed) {
            const reply = await connection.xreadBuffer(
              "COUNT",
              1000,
              "BLOCK",
              1000,
              "STREAMS",
              ...keys,
              ...ids,
            );
            if (!reply) continue;
            for (const [key, entries] of reply) {
              const index = keys.indexOf(String(key));
              if (index < 0) continue;
              const bus = this.#busList[index]!;
              for (const [id, list] of entries) {
                ids[index] = String(id);
                this.#deliver(bus, String(id), fieldsOf(list));
              }
            }
          }
        } catch {
          if (this.#closed) break;
          this.#enter("ring", "Redis is unavailable: history is this gateway's own from here");
          await this.#pause(50);
        }
      }
    } finally {
      connection.disconnect(false);
    }
  }

  #enter(mode: "ring" | "stream", why: string): void {
    if (this.#mode === mode) return;
    this.#mode = mode;
    if (mode === "ring") {
      // The ring missed what the stream carried: its old offsets must not resume.
      for (const ring of this.#rings.values()) ring.reset();
      this.#writer = false;
      this.#pending.length = 0;
    } else void this.#tick();
    for (const bus of this.#busList) this.#sink?.gap(bus, why);
  }

  #message(bus: string, fields: Map<string, Buffer | string>): BusMessage | undefined {
    const payload = fields.get("p");
    if (payload === undefined) return undefined;
    const bytes = typeof payload === "string" ? encoder.encode(payload) : new Uint8Array(payload);
    if (String(fields.get("f")) === "f") {
      return { bus, topic: String(fields.get("t") ?? ""), payload: bytes, form: "frames" };
    }
    return this.#sink!.split(bus, bytes);
  }

  #deliver(bus: string, id: string, fields: Map<string, Buffer | string>): void {
    if (fields.has("g")) return this.#sink?.gap(bus, MARKER_TEXT);
    const message = this.#message(bus, fields);
    if (message) this.#sink?.deliver(bus, message, id);
  }

  async #info(key: string): Promise<StreamInfo | undefined> {
    let reply: unknown[];
    try {
      reply = await this.#link!.redis.xinfo("STREAM", key) as unknown[];
    } catch (error) {
      if (/no such key/i.test((error as Error).message)) return undefined;
      throw error;
    }
    const info = new Map<string, unknown>();
    for (let i = 0; i + 1 < reply.length; i += 2) info.set(String(reply[i]), reply[i + 1]);
    const first = info.get("first-entry") as [string, string[]] | null | undefined;
    return {
      lastGenerated: String(info.get("last-generated-id") ?? "0-0"),
      ...(first
        ? { first: { id: String(first[0]), previous: fieldsOf(first[1]).get("r") as string } }
        : {}),
    };
  }

  /** Whether every entry after `from` is still in the stream. */
  #complete(info: StreamInfo, from: string): boolean {
    if (!info.first) return compareStreamIds(from, info.lastGenerated)! >= 0;
    return compareStreamIds(from, info.first.id)! >= 0 || info.first.previous === from;
  }

  async #replayStream(
    bus: string,
    from: string,
    matches: (message: BusMessage) => boolean,
  ): Promise<Replay> {
    const link = this.#link!;
    const key = this.#streamKey(bus);
    const before = await this.#info(key);
    if (!before) return gap("No history of this bus in Redis", from);
    if (compareStreamIds(from, before.lastGenerated)! > 0) {
      return gap("Offset not reached yet by this history", from);
    }
    if (!this.#complete(before, from)) {
      return gap("The messages after this offset are no longer held", from);
    }
    const messages: { offset: string; message: BusMessage }[] = [];
    let until = from;
    const PAGE = 1000;
    while (true) {
      const entries = await link.redis.xrangeBuffer(key, `(${until}`, "+", "COUNT", PAGE);
      for (const [rawId, list] of entries) {
        const id = String(rawId);
        until = id;
        const fields = fieldsOf(list);
        if (fields.has("g")) return gap(`${MARKER_TEXT} (after ${from})`, from);
        const message = this.#message(bus, fields);
        if (message && matches(message)) messages.push({ offset: id, message });
      }
      if (entries.length < PAGE) break;
    }
    // Trimming only removes the oldest entries: if nothing after `from` is gone
    // now, nothing was gone while the pages were read.
    const after = await this.#info(key);
    if (!after || !this.#complete(after, from)) {
      return gap("The messages after this offset are no longer held", from);
    }
    return { messages, until };
  }

  // --- Redis: writing -------------------------------------------------------

  /** Takes or keeps the writer lock while streaming; lets it go otherwise. */
  #tick(): Promise<void> {
    return this.#ticking ??= this.#tickOnce().finally(() => this.#ticking = undefined);
  }

  async #tickOnce(): Promise<void> {
    const link = this.#link;
    if (!link || this.#closed || !link.up) {
      this.#writer = false;
      return;
    }
    const ttl = String(this.#options.writerTtlMs);
    try {
      if (this.#mode !== "stream") {
        if (this.#writer) {
          this.#writer = false;
          await link.redis.eval(RELEASE_SCRIPT, 1, this.#lockKey(), this.#owner);
        }
        return;
      }
      if (this.#writer) {
        const kept = await link.redis.eval(REFRESH_SCRIPT, 1, this.#lockKey(), this.#owner, ttl);
        if (Number(kept) !== 1) this.#loseWriter();
        return;
      }
      const taken = await link.redis.eval(ACQUIRE_SCRIPT, 1, this.#lockKey(), this.#owner, ttl);
      if (Number(taken) === 1 && this.#mode === "stream" && !this.#closed) {
        this.#writer = true;
        this.stats.writerTerms++;
        // Nobody can tell what was published while no gateway wrote.
        for (let i = 0; i < this.#busList.length; i++) this.#needMarker.add(i);
        this.#scheduleFlush();
      }
    } catch {
      // Redis failed: the link's state says so; the next tick tries again.
    }
  }

  #loseWriter(): void {
    this.#writer = false;
    this.#pending.length = 0;
  }

  #enqueue(bus: string, message: BusMessage): void {
    const index = this.#busList.indexOf(bus);
    if (this.#pending.length >= this.#options.maxPending) {
      this.stats.dropped++;
      this.#needMarker.add(index);
      return;
    }
    let payload: Buffer;
    if (message.form === "single") {
      const topic = encoder.encode(message.topic);
      payload = Buffer.alloc(topic.length + message.payload.length);
      payload.set(topic, 0);
      payload.set(message.payload, topic.length);
    } else payload = Buffer.from(message.payload);
    this.#pending.push({
      bus: index,
      kind: message.form === "single" ? "s" : "f",
      topic: message.topic,
      payload,
    });
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    this.#flushing ??= this.#flush().finally(() => this.#flushing = undefined);
  }

  async #flush(): Promise<void> {
    const link = this.#link!;
    const BATCH = 500;
    const keys = [this.#lockKey(), ...this.#busList.map((bus) => this.#streamKey(bus))];
    while (
      this.#writer && !this.#closed && (this.#pending.length > 0 || this.#needMarker.size > 0)
    ) {
      const markers = [...this.#needMarker];
      const batch = this.#pending.splice(0, BATCH);
      const args: (string | Buffer)[] = [
        this.#owner,
        String(this.#options.maxMessages),
        String(this.#options.maxAgeMs),
      ];
      for (const bus of markers) args.push(String(bus + 2), "g", MARKER_TEXT, "");
      for (const entry of batch) {
        args.push(String(entry.bus + 2), entry.kind, entry.topic, entry.payload);
      }
      try {
        const result = Number(await link.redis.eval(APPEND_SCRIPT, keys.length, ...keys, ...args));
        if (result < 0) {
          this.#loseWriter();
          return;
        }
        for (const bus of markers) this.#needMarker.delete(bus);
        this.stats.markers += markers.length;
        this.stats.appended += batch.length;
      } catch {
        // Lost. Stop writing (retrying at once could spin on a dead
        // connection); the next tick takes the lock again and writes a
        // marker first.
        this.stats.dropped += batch.length + this.#pending.length;
        this.#loseWriter();
        return;
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    clearInterval(this.#lockTimer);
    this.#connection?.disconnect(false); // ends a blocked XREAD now
    await this.#flushing;
    await this.#ticking;
    if (this.#writer && this.#link?.up) {
      this.#writer = false;
      await this.#link.redis.eval(RELEASE_SCRIPT, 1, this.#lockKey(), this.#owner).catch(() => {});
    }
    await this.#reader;
  }
}
