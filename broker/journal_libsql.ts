/**
 * The journal on libSQL: a local file by default (WAL; `synchronous` full or
 * normal), or a libSQL server URL. A local file is locked for one broker
 * (an OS file lock on `<file>.lock`, dropped when the process ends however it
 * ends): two brokers writing one journal would route each other's requests.
 *
 * Durability of a commit (storage/libsql.ts): with synchronous=full the WAL is
 * synced to disk before a commit returns, so an admitted request survives a
 * crash of the machine; with normal it survives a crash of the broker process
 * (SIGKILL included) but not of the machine or its power.
 *
 * @module
 */
import { lockDatabaseFile } from "../storage/file_lock.ts";
import type { Client, InStatement, InValue, Row } from "@libsql/client";
import { libsqlUrl, localPath, openLibsql } from "../storage/libsql.ts";
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
  mustSync,
  type StoredReply,
} from "./journal.ts";

const MIGRATIONS = new URL("../migrations/journal", import.meta.url).pathname;

/** Raised when another process holds a local journal's lock. */
export class JournalLockedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JournalLockedError";
  }
}

/** Options of {@link LibsqlJournal.open}. */
export interface LibsqlJournalOptions {
  /** A file path, `file:` URL, `:memory:`, or a libSQL server URL. */
  location: string;
  authToken?: string;
  /** "full": commits survive power loss; "normal": they survive a crash of the process. */
  synchronous: "full" | "normal";
  /** Largest size of a local file in bytes (max_page_count); 0: the disk's. */
  maxBytes?: number;
}

/** Rows per multi-row INSERT (a statement takes at most 32766 arguments). */
const ROWS = 400;

const REQUEST_COLUMNS =
  "key, service, body, received_at, expires_at, caller_deadline, keyed, failures";
const DEAD_COLUMNS =
  "key, service, body, reason, detail, attempts, received_at, dead_at, failures, replays";

function marks(rows: number, columns: number): string {
  const row = `(${Array(columns).fill("?").join(", ")})`;
  return Array(rows).fill(row).join(", ");
}

function requestArgs(r: JournalRequest): InValue[] {
  return [
    r.key,
    r.service,
    encodeFrames(r.body),
    r.receivedAt,
    r.expiresAt,
    r.callerDeadline ?? null,
    r.keyed ? 1 : 0,
    JSON.stringify(r.failures),
  ];
}

function deadArgs(d: DeadLetter): InValue[] {
  return [
    d.key,
    d.service,
    encodeFrames(d.body),
    d.reason,
    d.detail,
    d.attempts,
    d.receivedAt,
    d.deadAt,
    JSON.stringify(d.failures),
    d.replays,
  ];
}

function bytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError("journal: a body column is not a blob");
}

/** Its rows read back (journal_rows.ts), blobs as this driver gives them. */
const requestOf = (row: Row) => readRequest(row, bytes);
const deadOf = (row: Row) => readDead(row, bytes);

/**
 * The statements of `changes`, in order. Runs of one kind become multi-row
 * statements: a burst of admissions is a few INSERTs, not one per request.
 */
function statementsOf(changes: readonly JournalChange[]): InStatement[] {
  const out: InStatement[] = [];
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
          out.push({
            sql: `DELETE FROM dead_letters WHERE key IN (${marks(requests.length, 1)})`,
            args: requests.map((r) => r.key),
          });
        }
        out.push({
          sql: `INSERT INTO journal_requests (${REQUEST_COLUMNS}) VALUES ${
            marks(requests.length, 8)
          } ON CONFLICT (key) DO NOTHING`,
          args: requests.flatMap(requestArgs),
        });
        break;
      }
      case "failed":
        for (const c of run as Array<Extract<JournalChange, { op: "failed" }>>) {
          out.push({
            sql: "UPDATE journal_requests SET failures = ? WHERE key = ?",
            args: [JSON.stringify(c.failures), c.key],
          });
        }
        break;
      case "reply": {
        const replies = run.map((c) => (c as { reply: StoredReply }).reply);
        out.push({
          sql: `DELETE FROM journal_requests WHERE key IN (${marks(replies.length, 1)})`,
          args: replies.map((r) => r.key),
        });
        out.push({
          sql:
            `INSERT OR REPLACE INTO journal_replies (key, service, body, stored_at, expires_at) VALUES ${
              marks(replies.length, 5)
            }`,
          args: replies.flatMap((r) => [
            r.key,
            r.service,
            encodeFrames(r.body),
            r.storedAt,
            r.expiresAt,
          ]),
        });
        break;
      }
      case "dead": {
        const letters = run.map((c) => (c as { letter: DeadLetter }).letter);
        out.push({
          sql: `DELETE FROM journal_requests WHERE key IN (${marks(letters.length, 1)})`,
          args: letters.map((d) => d.key),
        });
        out.push({
          sql: `INSERT OR REPLACE INTO dead_letters (${DEAD_COLUMNS}) VALUES ${
            marks(letters.length, 10)
          }`,
          args: letters.flatMap(deadArgs),
        });
        break;
      }
      case "forget":
        out.push({
          sql: `DELETE FROM dead_letters WHERE key IN (${marks(run.length, 1)})`,
          args: run.map((c) => (c as { key: string }).key),
        });
        break;
      case "expire-replies":
        for (const c of run as Array<Extract<JournalChange, { op: "expire-replies" }>>) {
          out.push({ sql: "DELETE FROM journal_replies WHERE expires_at < ?", args: [c.before] });
        }
        break;
    }
  }
  return out;
}

function lockFile(database: string): Promise<{ release(): void }> {
  return lockDatabaseFile(database, (path, pid) =>
    new JournalLockedError(
      `broker journal '${database}' is in use by another broker${
        pid ? ` (pid ${pid})` : ""
      }: its lock '${path}' is held. Give each broker its own journal file`,
    ));
}

/** The journal on libSQL. */
export class LibsqlJournal implements JournalStore {
  readonly description: string;
  #client: Client;
  #release: () => void;
  /** synchronous=full configured on a local file: syncs only the commits that need it. */
  #syncing: boolean;
  /** What the connection's `synchronous` is now. */
  #full: boolean;

  private constructor(
    client: Client,
    description: string,
    release: () => void,
    syncing: boolean,
  ) {
    this.#client = client;
    this.description = description;
    this.#release = release;
    this.#syncing = syncing;
    this.#full = syncing;
  }

  /** Opens (creating and migrating) the journal; throws JournalLockedError when it is in use. */
  static async open(options: LibsqlJournalOptions): Promise<LibsqlJournal> {
    const url = libsqlUrl(options.location);
    const path = localPath(url);
    const lock = path ? await lockFile(path) : undefined;
    try {
      const { client, local } = await openLibsql({
        location: options.location,
        ...(options.authToken ? { authToken: options.authToken } : {}),
        synchronous: options.synchronous,
        migrations: MIGRATIONS,
      });
      if (local && options.maxBytes) {
        const [row] = (await client.execute("PRAGMA page_size")).rows;
        const pages = Math.max(1, Math.floor(options.maxBytes / Number(row?.[0] ?? 4096)));
        if (!Number.isSafeInteger(pages)) throw new RangeError(`max bytes give ${pages} pages`);
        // PRAGMAs take no bound arguments: an integer computed here.
        await client.execute(`PRAGMA max_page_count = ${pages}`);
      }
      const description = local
        ? `libSQL ${path ?? url} (WAL, synchronous=${options.synchronous}${
          options.maxBytes ? `, max ${options.maxBytes} bytes` : ""
        })`
        : `libSQL server ${url.replace(/\/\/[^@/]*@/, "//")}`;
      return new LibsqlJournal(
        client,
        description,
        () => lock?.release(),
        local && options.synchronous === "full",
      );
    } catch (error) {
      lock?.release();
      throw error;
    }
  }

  async apply(changes: readonly JournalChange[]): Promise<void> {
    const statements = statementsOf(changes);
    if (statements.length === 0) return;
    if (this.#syncing) {
      // In WAL mode a synced commit syncs every frame before it: a reply
      // committed unsynced reaches the disk with the next admission at the latest.
      const full = changes.some(mustSync);
      if (full !== this.#full) {
        await this.#client.execute(`PRAGMA synchronous = ${full ? "FULL" : "NORMAL"}`);
        this.#full = full;
      }
    }
    // One batch is one transaction.
    await this.#client.batch(statements, "write");
  }

  async pending(): Promise<JournalRequest[]> {
    const result = await this.#client.execute(
      `SELECT ${REQUEST_COLUMNS} FROM journal_requests ORDER BY received_at, key`,
    );
    return result.rows.map(requestOf);
  }

  async lookup(key: string): Promise<KeyLookup> {
    const [replies, dead, pending] = await this.#client.batch([
      {
        sql: "SELECT key, service, body, stored_at, expires_at FROM journal_replies WHERE key = ?",
        args: [key],
      },
      { sql: `SELECT ${DEAD_COLUMNS} FROM dead_letters WHERE key = ?`, args: [key] },
      { sql: `SELECT ${REQUEST_COLUMNS} FROM journal_requests WHERE key = ?`, args: [key] },
    ], "read");
    const reply = replies?.rows[0];
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
    const letter = dead?.rows[0];
    if (letter) return { state: "dead", letter: deadOf(letter) };
    const request = pending?.rows[0];
    if (request) return { state: "pending", request: requestOf(request) };
    return { state: "unknown" };
  }

  async deadLetters(query: DeadLetterQuery): Promise<DeadLetter[]> {
    const where: string[] = [];
    const args: InValue[] = [];
    if (query.service !== undefined) {
      where.push("service = ?");
      args.push(query.service);
    }
    if (query.after) {
      where.push("(dead_at > ? OR (dead_at = ? AND key > ?))");
      args.push(query.after.deadAt, query.after.deadAt, query.after.key);
    }
    args.push(query.limit);
    const result = await this.#client.execute({
      sql: `SELECT ${DEAD_COLUMNS} FROM dead_letters ${
        where.length ? `WHERE ${where.join(" AND ")}` : ""
      } ORDER BY dead_at, key LIMIT ?`,
      args,
    });
    return result.rows.map(deadOf);
  }

  async counts(): Promise<JournalCounts> {
    const result = await this.#client.execute(
      "SELECT (SELECT count(*) FROM journal_requests) AS pending, " +
        "(SELECT count(*) FROM journal_replies) AS replies, " +
        "(SELECT count(*) FROM dead_letters) AS dead",
    );
    const row = result.rows[0]!;
    return { pending: Number(row.pending), replies: Number(row.replies), dead: Number(row.dead) };
  }

  close(): Promise<void> {
    this.#client.close();
    this.#release();
    return Promise.resolve();
  }
}
