/**
 * Session store for the dashboard's logins.
 *
 * A session is one refresh token (kept by its SHA-256). Each belongs to a
 * family: the login it descends from through rotations. Refreshing
 * {@link SessionStore.claim}s the token, which marks it rotated rather than
 * deleting it, so a rotated token presented again is recognised as reuse
 * and its whole family can be revoked ({@link SessionStore.deleteFamily}).
 *
 * - {@link memorySessions}: this process only (the fallback).
 * - {@link redisSessions}: in Redis, shared by every gateway replica: the
 *   record as JSON under `<prefix>session:<id>`, expiring at `expiresAt`
 *   (`SET … PXAT`), and a set of a user's session ids under
 *   `<prefix>user-sessions:<userId>` for {@link SessionStore.deleteUser},
 *   one of a family's under `<prefix>family-sessions:<family>`, and a
 *   rotated token's mark under `<prefix>rotated:<id>` (set with NX, so
 *   of two refreshes racing with one token only the first wins).
 *   Its calls reject when Redis fails.
 * - {@link sharedSessions}: Redis while the {@link RedisLink} is up, memory
 *   while it is down. A session created during an outage lives in the
 *   replica that created it (other replicas do not know it) and is still
 *   found there after Redis returns. Deletions made during an outage are
 *   applied locally at once and replayed to Redis when it returns, so a
 *   logout or revocation is never undone by the recovery.
 * - the auth database (./auth_db_sessions.ts), the default when it is
 *   PostgreSQL.
 *
 * @module
 */
import type { RedisLink } from "./redis.ts";

export interface SessionRecord {
  userId: string;
  username: string;
  /** The login this session descends from (also the `sid` of its access tokens). */
  family: string;
  createdAt: number;
  expiresAt: number;
}

/**
 * A session taken for rotation; `reused`: it had been rotated already, at
 * `rotatedAt` (ms since the epoch; the refresh route forgives a reuse
 * within its grace, two tabs refreshing with one cookie).
 */
export interface Claimed {
  record: SessionRecord;
  reused: boolean;
  rotatedAt?: number;
}

export interface SessionStore {
  put(id: string, record: SessionRecord): Promise<void>; // expires at record.expiresAt
  get(id: string): Promise<SessionRecord | undefined>; // undefined when missing or expired (rotated ones are found)
  /** Marks a session rotated; undefined when missing or expired. */
  claim(id: string): Promise<Claimed | undefined>;
  delete(id: string): Promise<void>;
  deleteUser(userId: string): Promise<number>; // revoke all of a user's sessions
  deleteFamily(family: string): Promise<number>; // revoke every session of a login
  close(): Promise<void>;
}

/** Sessions in this process; `now` is for tests. */
export function memorySessions(now: () => number = Date.now): SessionStore {
  const sessions = new Map<string, SessionRecord>();
  /** Rotated sessions, with when. */
  const rotated = new Map<string, number>();
  let nextSweep = 0;
  const sweep = () => {
    const t = now();
    if (t < nextSweep) return;
    nextSweep = t + 60_000;
    for (const [id, r] of sessions) {
      if (r.expiresAt > t) continue;
      sessions.delete(id);
      rotated.delete(id);
    }
  };
  const deleteWhere = (match: (r: SessionRecord) => boolean) => {
    const t = now();
    let n = 0;
    for (const [id, r] of sessions) {
      if (!match(r)) continue;
      sessions.delete(id);
      rotated.delete(id);
      if (r.expiresAt > t) n++;
    }
    return Promise.resolve(n);
  };
  return {
    put(id, record) {
      sweep();
      rotated.delete(id);
      if (record.expiresAt > now()) sessions.set(id, { ...record });
      else sessions.delete(id);
      return Promise.resolve();
    },
    claim(id) {
      const record = sessions.get(id);
      if (!record || record.expiresAt <= now()) return Promise.resolve(undefined);
      const rotatedAt = rotated.get(id);
      if (rotatedAt !== undefined) {
        return Promise.resolve({ record: { ...record }, reused: true, rotatedAt });
      }
      rotated.set(id, now());
      return Promise.resolve({ record: { ...record }, reused: false });
    },
    get(id) {
      const record = sessions.get(id);
      if (!record) return Promise.resolve(undefined);
      if (record.expiresAt <= now()) {
        sessions.delete(id);
        return Promise.resolve(undefined);
      }
      return Promise.resolve({ ...record });
    },
    delete(id) {
      sessions.delete(id);
      rotated.delete(id);
      return Promise.resolve();
    },
    deleteUser: (userId) => deleteWhere((r) => r.userId === userId),
    deleteFamily: (family) => deleteWhere((r) => r.family === family),
    close() {
      sessions.clear();
      rotated.clear();
      return Promise.resolve();
    },
  };
}

function parse(json: string | null): SessionRecord | undefined {
  if (json === null) return undefined;
  try {
    const r = JSON.parse(json);
    if (
      typeof r?.userId === "string" && typeof r.username === "string" &&
      typeof r.family === "string" && typeof r.createdAt === "number" &&
      typeof r.expiresAt === "number"
    ) {
      return {
        userId: r.userId,
        username: r.username,
        family: r.family,
        createdAt: r.createdAt,
        expiresAt: r.expiresAt,
      };
    }
  } catch {
    // not ours
  }
  return undefined;
}

/** KEYS[1] = user set. Deletes every session in it; returns how many existed. */
const DELETE_USER_SCRIPT = `
local ids = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, key in ipairs(ids) do
  n = n + redis.call('DEL', key)
end
redis.call('DEL', KEYS[1])
return n
`;

/**
 * KEYS[1] = session, KEYS[2] = its rotated mark, ARGV[1] = now (ms). The
 * session as stored, and 1 when this call marked it (0: it was rotated
 * before, then with the time of that rotation, the mark's value); nil when
 * missing.
 */
const CLAIM_SCRIPT = `
local record = redis.call('GET', KEYS[1])
if not record then return nil end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1 then ttl = 1 end
local first = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ttl)
if first then return {record, 1} end
return {record, 0, redis.call('GET', KEYS[2])}
`;

/** Sessions in Redis only: rejects when Redis fails (see {@link sharedSessions}). */
export function redisSessions(link: RedisLink, now: () => number = Date.now): SessionStore {
  const sessionKey = (id: string) => link.key("session", id);
  const userKey = (userId: string) => link.key("user-sessions", userId);
  const familyKey = (family: string) => link.key("family-sessions", family);
  const rotatedKey = (id: string) => link.key("rotated", id);
  return {
    async put(id, record) {
      const key = sessionKey(id);
      if (record.expiresAt <= now()) {
        await link.redis.del(key);
        return;
      }
      const expiresAt = String(Math.ceil(record.expiresAt));
      const user = userKey(record.userId);
      const family = familyKey(record.family);
      // The sets live as long as their longest session (GT: never shortened).
      await link.redis.multi()
        .set(key, JSON.stringify(record), "PXAT", expiresAt)
        .del(rotatedKey(id))
        .sadd(user, key)
        .pexpireat(user, expiresAt, "GT")
        .pexpireat(user, expiresAt, "NX")
        .sadd(family, key)
        .pexpireat(family, expiresAt, "GT")
        .pexpireat(family, expiresAt, "NX")
        .exec().then((results) => {
          const failed = results?.find(([error]) => error);
          if (failed) throw failed[0];
        });
    },
    async get(id) {
      const record = parse(await link.redis.get(sessionKey(id)));
      return record && record.expiresAt > now() ? record : undefined;
    },
    async claim(id) {
      const reply = await link.redis.eval(
        CLAIM_SCRIPT,
        2,
        sessionKey(id),
        rotatedKey(id),
        String(now()),
      ) as [string, number, string?] | null;
      const record = reply ? parse(reply[0]) : undefined;
      if (!record || record.expiresAt <= now()) return undefined;
      if (Number(reply![1]) === 1) return { record, reused: false };
      // A mark of an older gateway holds "1": a time long past, no grace.
      return { record, reused: true, rotatedAt: Number(reply![2] ?? 0) };
    },
    async delete(id) {
      const key = sessionKey(id);
      const record = parse(await link.redis.get(key));
      await link.redis.del(key);
      if (record) {
        await link.redis.srem(userKey(record.userId), key);
        await link.redis.srem(familyKey(record.family), key);
      }
    },
    async deleteUser(userId) {
      return Number(await link.redis.eval(DELETE_USER_SCRIPT, 1, userKey(userId)));
    },
    async deleteFamily(family) {
      return Number(await link.redis.eval(DELETE_USER_SCRIPT, 1, familyKey(family)));
    },
    close: () => Promise.resolve(),
  };
}

/**
 * Redis sessions shared by replicas, falling back to this process's while
 * Redis is down (see the module doc for what an outage means).
 */
export function sharedSessions(link: RedisLink): SessionStore {
  const shared = redisSessions(link);
  const local = memorySessions();
  // Deletions Redis missed, replayed when it returns.
  const pendingIds = new Set<string>();
  const pendingUsers = new Set<string>();
  const pendingFamilies = new Set<string>();
  let replaying: Promise<void> | undefined;
  const replay = async () => {
    for (const id of [...pendingIds]) {
      await shared.delete(id);
      pendingIds.delete(id);
    }
    for (const userId of [...pendingUsers]) {
      await shared.deleteUser(userId);
      pendingUsers.delete(userId);
    }
    for (const family of [...pendingFamilies]) {
      await shared.deleteFamily(family);
      pendingFamilies.delete(family);
    }
  };
  const pending = () => pendingIds.size + pendingUsers.size + pendingFamilies.size;
  const revoked = (r: SessionRecord) => pendingUsers.has(r.userId) || pendingFamilies.has(r.family);
  /** Replays missed deletions first whenever Redis is up again. */
  const settle = (): Promise<void> | undefined => {
    if (!link.up || pending() === 0) return replaying;
    return replaying ??= replay().catch(() => {}).finally(() => replaying = undefined);
  };
  const stopWatching = link.watch((up) => void (up && settle()));
  return {
    async put(id, record) {
      await settle();
      pendingIds.delete(id);
      await link.attempt(async () => {
        await shared.put(id, record);
        await local.delete(id);
      }, () => local.put(id, record));
    },
    async get(id) {
      await settle();
      if (pendingIds.has(id)) return undefined;
      const found = await link.attempt(() => shared.get(id), () => undefined);
      if (found && revoked(found)) return undefined;
      return found ?? await local.get(id);
    },
    async claim(id) {
      await settle();
      if (pendingIds.has(id)) return undefined;
      const found = await link.attempt(() => shared.claim(id), () => undefined);
      if (found && revoked(found.record)) return undefined;
      return found ?? await local.claim(id);
    },
    async delete(id) {
      await local.delete(id);
      await link.attempt(() => shared.delete(id), () => void pendingIds.add(id));
    },
    async deleteUser(userId) {
      const here = await local.deleteUser(userId);
      const there = await link.attempt(() => shared.deleteUser(userId), () => {
        pendingUsers.add(userId);
        return 0;
      });
      return here + there;
    },
    async deleteFamily(family) {
      const here = await local.deleteFamily(family);
      const there = await link.attempt(() => shared.deleteFamily(family), () => {
        pendingFamilies.add(family);
        return 0;
      });
      return here + there;
    },
    async close() {
      stopWatching();
      await replaying;
      await local.close();
    },
  };
}

/** {@link sharedSessions} when a link is given, else {@link memorySessions}. */
export function createSessions(link?: RedisLink): SessionStore {
  return link ? sharedSessions(link) : memorySessions();
}
