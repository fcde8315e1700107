/**
 * The journal on PostgreSQL (`journal: postgres://…`), through postgres.js:
 * the same rows and operations as on libSQL (journal_libsql.ts), so a broker
 * pair can share one journal. A commit returns once PostgreSQL has it on disk
 * (with the server's default synchronous_commit=on).
 *
 * One broker writes a journal at a time: the store holds a session advisory
 * lock on a connection of its own for as long as it is open, and a second
 * broker's open fails naming it. The lock dies with the holder's session, so
 * a killed broker frees it; a broker of a pair opens the journal when it
 * becomes the active one.
 *
 * @module
 */
import { drizzle } from "drizzle-orm/postgres-js";
import { migrate } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";
import { redactUrl } from "../storage/postgres.ts";
import { deadOf as readDead, requestOf as readRequest } from "./journal_rows.ts";
import {
  type DeadLetter,
  type DeadLetterQuery,
  decodeFrames,
  encodeFrames,
  type JournalChange,
  type JournalCounts,
  type JournalRequest,
  type JournalStore,
  type KeyLookup,
  type StoredReply,
} from "./journal.ts";
import { JournalLockedError } from "./journal_libsql.ts";

const MIGRATIONS = new URL("../migrations/journal-pg", import.meta.url).pathname;
/** The advisory lock of the journal (an arbitrary constant: "plantd journal"). */
const LOCK_KEY = 0x706a6f75726e61;

type Sql = postgres.Sql;
type Row = Record<string, unknown>;

/** A bytea as a plain Uint8Array (postgres.js gives a Buffer, whose slices are Buffers too). */
function bytes(value: unknown): Uint8Array {
  const buffer = value as Uint8Array;
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

function requestRow(r: JournalRequest) {
  return {
    key: r.key,
    service: r.service,
    body: encodeFrames(r.body),
    received_at: r.receivedAt,
    expires_at: r.expiresAt,
    caller_deadline: r.callerDeadline ?? null,
    keyed: r.keyed ? 1 : 0,
    failures: JSON.stringify(r.failures),
  };
}

function deadRow(d: DeadLetter) {
  return {
    key: d.key,
    service: d.service,
    body: encodeFrames(d.body),
    reason: d.reason,
    detail: d.detail,
    attempts: d.attempts,
    received_at: d.receivedAt,
    dead_at: d.deadAt,
    failures: JSON.stringify(d.failures),
    replays: d.replays,
  };
}

/** Its rows read back (journal_rows.ts), blobs as this driver gives them. */
const requestOf = (row: Row) => readRequest(row, bytes);
const deadOf = (row: Row) => readDead(row, bytes);

/** Rows per multi-row statement (a statement takes at most 65535 parameters). */
const ROWS = 1000;

/** The journal on PostgreSQL. */
export class PostgresJournal implements JournalStore {
  readonly description: string;
  #sql: Sql;
  #lock: postgres.ReservedSql;

  private constructor(sql: Sql, lock: postgres.ReservedSql, description: string) {
    this.#sql = sql;
    this.#lock = lock;
    this.description = description;
  }

  /** Connects, takes the journal's lock and migrates; throws JournalLockedError when it is held. */
  static async open(url: string): Promise<PostgresJournal> {
    const sql = postgres(url, {
      max: 4,
      onnotice: () => {},
      connect_timeout: 5,
      connection: { application_name: "plantd-broker-journal" },
    });
    let lock: postgres.ReservedSql | undefined;
    try {
      lock = await sql.reserve();
      const [row] = await lock`select pg_try_advisory_lock(${LOCK_KEY}) as locked`;
      if (!row?.locked) {
        const [holder] = await sql`
          select a.pid, a.client_addr, a.application_name from pg_locks l
          join pg_stat_activity a on a.pid = l.pid
          where l.locktype = 'advisory' and l.objid = ${LOCK_KEY % 2 ** 32} and l.granted`;
        throw new JournalLockedError(
          `broker journal at ${redactUrl(url)} is in use by another broker${
            holder ? ` (server backend pid ${holder.pid}, ${holder.client_addr ?? "local"})` : ""
          }: one broker writes a journal at a time`,
        );
      }
      // A table of its own: Drizzle skips every migration older than the newest in its table,
      // so a journal sharing a database with the metrics store (the default table) or the
      // state store would never get its tables. The journal's lock, held, keeps brokers apart.
      await migrate(drizzle(sql), {
        migrationsFolder: MIGRATIONS,
        migrationsTable: "__drizzle_migrations_journal",
      });
      return new PostgresJournal(
        sql,
        lock,
        `PostgreSQL ${redactUrl(url)} (synchronous_commit as the server's)`,
      );
    } catch (error) {
      lock?.release();
      await sql.end({ timeout: 1 });
      throw error;
    }
  }

  async apply(changes: readonly JournalChange[]): Promise<void> {
    if (changes.length === 0) return;
    await this.#sql.begin(async (tx) => {
      let i = 0;
      while (i < changes.length) {
        const op = changes[i]!.op;
        let end = i + 1;
        while (end < changes.length && end - i < ROWS && changes[end]!.op === op) end++;
        const run = changes.slice(i, end);
        i = end;
        switch (op) {
          case "admit":
          case "replay": {
            const requests = run.map((c) => (c as { request: JournalRequest }).request);
            if (op === "replay") {
              await tx`delete from dead_letters where key in ${tx(requests.map((r) => r.key))}`;
            }
            await tx`insert into journal_requests ${
              tx(requests.map(requestRow))
            } on conflict (key) do nothing`;
            break;
          }
          case "failed":
            for (const c of run as Array<Extract<JournalChange, { op: "failed" }>>) {
              await tx`update journal_requests set failures = ${
                JSON.stringify(c.failures)
              } where key = ${c.key}`;
            }
            break;
          case "reply": {
            const replies = run.map((c) => (c as { reply: StoredReply }).reply);
            await tx`delete from journal_requests where key in ${tx(replies.map((r) => r.key))}`;
            await tx`insert into journal_replies ${
              tx(replies.map((r) => ({
                key: r.key,
                service: r.service,
                body: encodeFrames(r.body),
                stored_at: r.storedAt,
                expires_at: r.expiresAt,
              })))
            } on conflict (key) do update set body = excluded.body,
              stored_at = excluded.stored_at, expires_at = excluded.expires_at`;
            break;
          }
          case "dead": {
            const letters = run.map((c) => (c as { letter: DeadLetter }).letter);
            await tx`delete from journal_requests where key in ${tx(letters.map((d) => d.key))}`;
            await tx`insert into dead_letters ${tx(letters.map(deadRow))}
              on conflict (key) do update set reason = excluded.reason, detail = excluded.detail,
              attempts = excluded.attempts, dead_at = excluded.dead_at,
              failures = excluded.failures, replays = excluded.replays`;
            break;
          }
          case "forget":
            await tx`delete from dead_letters where key in ${
              tx(run.map((c) => (c as { key: string }).key))
            }`;
            break;
          case "expire-replies":
            for (const c of run as Array<Extract<JournalChange, { op: "expire-replies" }>>) {
              await tx`delete from journal_replies where expires_at < ${c.before}`;
            }
            break;
        }
      }
    });
  }

  async pending(): Promise<JournalRequest[]> {
    const rows = await this.#sql`select * from journal_requests order by received_at, key`;
    return rows.map(requestOf);
  }

  async lookup(key: string): Promise<KeyLookup> {
    const [reply] = await this.#sql`select * from journal_replies where key = ${key}`;
    if (reply) {
      return {
        state: "replied",
        reply: {
          key: String(reply.key),
          service: String(reply.service),
          body: decodeFrames(bytes(reply.body)),
          storedAt: Number(reply.stored_at),
          expiresAt: Number(reply.expires_at),
        },
      };
    }
    const [letter] = await this.#sql`select * from dead_letters where key = ${key}`;
    if (letter) return { state: "dead", letter: deadOf(letter) };
    const [request] = await this.#sql`select * from journal_requests where key = ${key}`;
    if (request) return { state: "pending", request: requestOf(request) };
    return { state: "unknown" };
  }

  async deadLetters(query: DeadLetterQuery): Promise<DeadLetter[]> {
    const sql = this.#sql;
    const service = query.service === undefined ? sql`` : sql`and service = ${query.service}`;
    const after = query.after
      ? sql`and (dead_at > ${query.after.deadAt} or (dead_at = ${query.after.deadAt} and key > ${query.after.key}))`
      : sql``;
    const rows = await sql`select * from dead_letters where true ${service} ${after}
      order by dead_at, key limit ${query.limit}`;
    return rows.map(deadOf);
  }

  async counts(): Promise<JournalCounts> {
    const [row] = await this.#sql`select
      (select count(*) from journal_requests) as pending,
      (select count(*) from journal_replies) as replies,
      (select count(*) from dead_letters) as dead`;
    return {
      pending: Number(row!.pending),
      replies: Number(row!.replies),
      dead: Number(row!.dead),
    };
  }

  async close(): Promise<void> {
    this.#lock.release();
    await this.#sql.end({ timeout: 5 });
  }
}
