/**
 * Session store for the dashboard's logins.
 *
 * - {@link memorySessions}: this process only (the fallback).
 * - {@link redisSessions}: in Redis, shared by every gateway replica: the
 *   record as JSON under `<prefix>session:<id>`, expiring at `expiresAt`
 *   (`SET … PXAT`), and a set of a user's session ids under
 *   `<prefix>user-sessions:<userId>` for {@link SessionStore.deleteUser}.
 *   Its calls reject when Redis fails.
 * - {@link sharedSessions}: Redis while the {@link RedisLink} is up, memory
 *   while it is down. A session created during an outage lives in the
 *   replica that created it (other replicas do not know it) and is still
 *   found there after Redis returns. Deletions made during an outage are
 *   applied locally at once and replayed to Redis when it returns, so a
 *   logout or revocation is never undone by the recovery.
 *
 * @module
 */
import type { RedisLink } from "./redis.ts";

export interface SessionRecord {
  userId: string;
  username: string;
  createdAt: number;
  expiresAt: number;
}

export interface SessionStore {
  put(id: string, record: SessionRecord): Promise<void>; // expires at record.expiresAt
  get(id: string): Promise<SessionRecord | undefined>; // undefined when missing or expired
  delete(id: string): Promise<void>;
  deleteUser(userId: string): Promise<number>; // revoke all of a user's sessions
  close(): Promise<void>;
}

/** Sessions in this process; `now` is for tests. */
export function memorySessions(now: () => number = Date.now): SessionStore {
  const sessions = new Map<string, SessionRecord>();
  let nextSweep = 0;
  const sweep = () => {
    const t = now();
    if (t < nextSweep) return;
    nextSweep = t + 60_000;
    for (const [id, r] of sessions) if (r.expiresAt <= t) sessions.delete(id);
  };
  return {
    put(id, record) {
      sweep();
      if (record.expiresAt > now()) sessions.set(id, { ...record });
      else sessions.delete(id);
      return Promise.resolve();
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
      return Promise.resolve();
    },
    deleteUser(userId) {
      const t = now();
      let n = 0;
      for (const [id, r] of sessions) {
        if (r.userId !== userId) continue;
        sessions.delete(id);
        if (r.expiresAt > t) n++;
      }
      return Promise.resolve(n);
    },
    close() {
      sessions.clear();
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
      typeof r.createdAt === "number" && typeof r.expiresAt === "number"
    ) {
      return {
        userId: r.userId,
        username: r.username,
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

/** Sessions in Redis only: rejects when Redis fails (see {@link sharedSessions}). */
export function redisSessions(link: RedisLink, now: () => number = Date.now): SessionStore {
  const sessionKey = (id: string) => link.key("session", id);
  const userKey = (userId: string) => link.key("user-sessions", userId);
  return {
    async put(id, record) {
      const key = sessionKey(id);
      if (record.expiresAt <= now()) {
        await link.redis.del(key);
        return;
      }
      const expiresAt = String(Math.ceil(record.expiresAt));
      const user = userKey(record.userId);
      // The user's set lives as long as its longest session (GT: never shortened).
      await link.redis.multi()
        .set(key, JSON.stringify(record), "PXAT", expiresAt)
        .sadd(user, key)
        .pexpireat(user, expiresAt, "GT")
        .pexpireat(user, expiresAt, "NX")
        .exec().then((results) => {
          const failed = results?.find(([error]) => error);
          if (failed) throw failed[0];
        });
    },
    async get(id) {
      const record = parse(await link.redis.get(sessionKey(id)));
      return record && record.expiresAt > now() ? record : undefined;
    },
    async delete(id) {
      const key = sessionKey(id);
      const record = parse(await link.redis.get(key));
      await link.redis.del(key);
      if (record) await link.redis.srem(userKey(record.userId), key);
    },
    async deleteUser(userId) {
      return Number(await link.redis.eval(DELETE_USER_SCRIPT, 1, userKey(userId)));
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
  };
  /** Replays missed deletions first whenever Redis is up again. */
  const settle = (): Promise<void> | undefined => {
    if (!link.up || (pendingIds.size === 0 && pendingUsers.size === 0)) return replaying;
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
      if (found && pendingUsers.has(found.userId)) return undefined;
      return found ?? await local.get(id);
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
