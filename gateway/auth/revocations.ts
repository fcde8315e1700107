/**
 * Revocation that takes effect at once on every gateway.
 *
 * The gateway's access tokens carry the user's session epoch (`sep`) and
 * the login session's id (`sid`, its refresh-token family). A token is void
 * when the user is gone or disabled, when its epoch is no longer the user's
 * (disable, role or password change bump it: auth/store.ts), or when its
 * sid was revoked (logout, refresh-token reuse). API keys are void while the
 * user who created them is disabled or deleted.
 *
 * Each gateway keeps user states and revoked sids in memory, so the check of
 * a known principal is a map lookup without a promise (the hot path of a
 * cached read). It learns of changes from the auth database's `revocations`
 * log, read past the last id it saw: at once after a change it made itself,
 * at once when another gateway says so on Redis (`<prefix>revocations`
 * channel, when `redis_url` is set), and otherwise at the next poll (every
 * `revocation_poll_ms`, 1 s by default). So without Redis, a second
 * gateway sharing the auth database (PostgreSQL, or a libSQL server)
 * honours a revocation within one poll interval plus a database read.
 *
 * @module
 */
import type { Redis } from "ioredis";
import type { AuthStore, SessionState } from "../../auth/store.ts";
import type { Principal } from "../../auth/tokens.ts";
import { logger } from "../../telemetry/log.ts";
import type { RedisLink } from "../shared/redis.ts";

/** What {@link Revocations} needs. */
export interface RevocationsOptions {
  store: AuthStore;
  /** Redis shared with other gateways: changes are announced there. */
  link?: RedisLink;
  /** How often the revocation log is read. @default 1000 */
  pollMs?: number;
}

/** Polls between deletions of expired log rows. */
const PRUNE_EVERY = 600;

/** Users' session states and revoked login sessions, kept current from the auth database. */
export class Revocations {
  readonly #store: AuthStore;
  readonly #link?: RedisLink;
  /** Username to its state; null: no such user (deleted). */
  readonly #users = new Map<string, SessionState | null>();
  readonly #loading = new Map<string, Promise<void>>();
  /** Revoked sid to when its tokens have all expired. */
  readonly #sids = new Map<string, number>();
  readonly #listeners = new Set<() => void>();
  readonly #log = logger("gateway", "auth");
  #last = 0;
  #queue: Promise<void> = Promise.resolve();
  #queued = 0;
  #polls = 0;
  #timer?: ReturnType<typeof setInterval>;
  #subscriber?: Redis;
  #stopWatching?: () => void;
  #closed = false;
  #failing = false;

  private constructor(options: RevocationsOptions) {
    this.#store = options.store;
    this.#link = options.link;
  }

  /**
   * Reads the revocations in force, then keeps up with new ones. An auth
   * database that cannot be read yet is read at the next poll: until then
   * every user's state is read on first use, and fails (503) with it.
   */
  static async start(options: RevocationsOptions): Promise<Revocations> {
    const revocations = new Revocations(options);
    await revocations.poll();
    revocations.#timer = setInterval(() => {
      if (revocations.#queued === 0) void revocations.poll();
    }, options.pollMs ?? 1000);
    const link = options.link;
    if (link) {
      const channel = link.key("revocations");
      const subscriber = link.blockingConnection(`${link.keyPrefix}revocations`);
      revocations.#subscriber = subscriber;
      subscriber.on("message", () => void revocations.poll());
      // Commands are not queued while connecting: subscribe once ready (again after a reconnection).
      subscriber.on("ready", () => {
        subscriber.subscribe(channel).catch(() => {
          // the next connection tries again; polling covers the gap
        });
      });
      // Announcements sent while the link was down were missed: read the log.
      revocations.#stopWatching = link.watch((up) => void (up && revocations.poll()));
    }
    return revocations;
  }

  /**
   * Whether `principal` may still act: a boolean when this gateway knows,
   * a promise when the user's state has to be read first.
   */
  check(principal: Principal): boolean | Promise<boolean> {
    const user = principal.session?.user ?? principal.owner;
    if (user === undefined) return true;
    const state = this.#users.get(user);
    if (state !== undefined) return this.#valid(principal, state);
    return this.#load([user]).then(() => this.#valid(principal, this.#users.get(user) ?? null));
  }

  /** {@link check} from memory only: true when the user's state is not known here. */
  valid(principal: Principal): boolean {
    const user = principal.session?.user ?? principal.owner;
    if (user === undefined) return true;
    const state = this.#users.get(user);
    return state === undefined || this.#valid(principal, state);
  }

  #valid(principal: Principal, state: SessionState | null): boolean {
    if (!state?.active) return false;
    const session = principal.session;
    if (!session) return true; // an API key: its owner is active
    if (session.epoch !== state.epoch) return false;
    const sid = session.sid;
    if (sid === undefined) return true;
    const until = this.#sids.get(sid);
    return until === undefined || until <= Date.now();
  }

  /** Calls `listener` after revocations were applied; returns the function that stops it. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * After a change recorded in the auth database: applies it here before
   * returning and tells the other gateways.
   */
  async changed(): Promise<void> {
    await this.poll();
    await this.#link?.attempt(
      (redis) => redis.publish(this.#link!.key("revocations"), "1"),
      () => 0, // the others find it at their next poll
    );
  }

  /** Voids the access tokens of login session `sid` (until `expiresAt`), everywhere. */
  async revokeSession(sid: string, expiresAt: number): Promise<void> {
    this.#sids.set(sid, expiresAt); // here at once, even if the database write fails
    await this.#store.revokeSession(sid, expiresAt);
    await this.changed();
  }

  /** Reads new rows of the revocation log (queued behind a read under way). */
  poll(): Promise<void> {
    this.#queued++;
    this.#queue = this.#queue.then(() => this.#pollOnce()).then(() => {
      if (this.#failing) this.#log.info("reading revocations again");
      this.#failing = false;
    }, (error) => {
      // Once per outage, not at every poll.
      if (!this.#failing) {
        this.#log.warn("reading revocations failed: {error}", { error: String(error) });
      }
      this.#failing = true;
    }).finally(() => this.#queued--);
    return this.#queue;
  }

  async #pollOnce(): Promise<void> {
    if (this.#closed) return;
    const rows = await this.#store.revocationsAfter(this.#last);
    const users = new Set<string>();
    for (const row of rows) {
      if (row.kind === "session") this.#sids.set(row.subject, row.expiresAt);
      else users.add(row.subject);
      if (row.id > this.#last) this.#last = row.id;
    }
    const now = Date.now();
    for (const [sid, until] of this.#sids) if (until <= now) this.#sids.delete(sid);
    // Only users someone here presented matter; the others load when they do.
    const known = [...users].filter((user) => this.#users.has(user));
    for (const user of users) if (!known.includes(user)) this.#users.delete(user);
    if (known.length > 0) await this.#load(known, true);
    if (++this.#polls % PRUNE_EVERY === 0) await this.#store.pruneRevocations();
    if (rows.length > 0) {
      for (const listener of [...this.#listeners]) {
        try {
          listener();
        } catch (error) {
          this.#log.error("revocation listener failed: {error}", { error: String(error) });
        }
      }
    }
  }

  /** Reads users' states (once at a time per user unless `fresh`). */
  #load(users: string[], fresh = false): Promise<void> {
    const wanted = fresh ? users : users.filter((user) => !this.#loading.has(user));
    const waiting = fresh ? [] : users.map((user) => this.#loading.get(user)).filter((p) => p);
    if (wanted.length === 0) return Promise.all(waiting).then(() => {});
    const loading = this.#store.sessionStates(wanted).then((states) => {
      for (const user of wanted) this.#users.set(user, states.get(user) ?? null);
    }).finally(() => {
      for (const user of wanted) {
        if (this.#loading.get(user) === loading) this.#loading.delete(user);
      }
    });
    for (const user of wanted) this.#loading.set(user, loading);
    return Promise.all([loading, ...waiting]).then(() => {});
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#stopWatching?.();
    this.#listeners.clear();
    this.#subscriber?.disconnect(false);
    await this.#queue;
    await Promise.allSettled(this.#loading.values());
  }
}
